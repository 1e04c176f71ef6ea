"""A known-signal dataset for paper 2's models (imported by the paper 2 tests): images of a
few topics whose features, groups and tags all carry the topic, and users with tagging habits.

* topic z has 4 tags; each user uses only 2 of each topic's 4 tags (a personal habit);
* the visual code is the topic's centre plus noise (``signal`` sets how much);
* each image is in its topic's group with probability ``group_purity``, plus a random group.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from tagrec_models.data import UNKNOWN_USER, Posts, SideInfo, TrainingData

N_TOPICS, TAGS_PER_TOPIC, N_USERS, N_GROUPS, DIM = 5, 4, 12, 7, 32
N_TAGS = N_TOPICS * TAGS_PER_TOPIC


def known_signal(
    seed: int = 0,
    n_images: int = 360,
    signal: float = 1.0,
    group_purity: float = 0.9,
    n_test: int = 60,
    n_val: int = 40,
) -> tuple[TrainingData, Posts, SideInfo]:
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, N_TOPICS, n_images)
    user = rng.integers(0, N_USERS, n_images)
    habit = np.array([[(u + z) % TAGS_PER_TOPIC, (u + z + 1) % TAGS_PER_TOPIC] for u in range(N_USERS) for z in range(N_TOPICS)])
    habit = habit.reshape(N_USERS, N_TOPICS, 2)
    rows, cols = [], []
    for i in range(n_images):
        chosen = set(habit[user[i], topic[i]])
        if rng.random() < 0.3:  # now and then one more tag of the topic
            chosen.add(int(rng.integers(0, TAGS_PER_TOPIC)))
        for t in sorted(chosen):
            rows.append(i)
            cols.append(topic[i] * TAGS_PER_TOPIC + t)
    tags = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_images, N_TAGS))

    centres = rng.normal(size=(N_TOPICS, DIM))
    codes = signal * centres[topic] + rng.normal(size=(n_images, DIM))
    codes /= np.linalg.norm(codes, axis=1, keepdims=True)  # VLAD codes are L2-normalised
    pure = rng.random(n_images) < group_purity
    main_group = np.where(pure, topic, rng.integers(0, N_GROUPS, n_images))
    g_rows = list(range(n_images)) + list(np.flatnonzero(rng.random(n_images) < 0.3))
    g_cols = list(main_group) + list(rng.integers(0, N_GROUPS, len(g_rows) - n_images))
    groups = sparse.csr_matrix((np.ones(len(g_rows), dtype=np.float32), (g_rows, g_cols)), shape=(n_images, N_GROUPS))
    groups.data[:] = 1.0
    side = SideInfo(features={"vlad": codes.astype(np.float32), "noise": rng.normal(size=(n_images, DIM)).astype(np.float32)},
                    image_groups=groups)

    order = rng.permutation(n_images)
    test_idx, val_idx, train_idx = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]

    def posts(idx: np.ndarray) -> Posts:
        idx = np.sort(idx)
        return Posts(user=user[idx].astype(np.int64), image=idx.astype(np.int64), tags=tags[idx],
                     n_users=N_USERS, n_images=n_images)

    test = posts(test_idx)
    return TrainingData(train=posts(train_idx), side=side, val=posts(val_idx)), test, side


def with_cold_user(posts: Posts, row: int = 0) -> Posts:
    users = posts.user.copy()
    users[row] = UNKNOWN_USER
    return Posts(user=users, image=posts.image, tags=posts.tags, n_users=posts.n_users, n_images=posts.n_images)

"""Guards the personal hybrid (``recommenders/personal_hybrid.py``): the blend is learned on an
inner hold-out of the posts fit receives (never the validation posts), users with no history
and images with no groups fall back as its docstring says, and the rank helper's values."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from tagrec_models.data import UNKNOWN_USER, Posts, SideInfo, TrainingData
from tagrec_models.recommenders.personal_hybrid import (
    FEATURE_NAMES,
    PersonalHybrid,
    PersonalHybridConfig,
    _rank,
)

N_TOPICS, TAGS_PER_TOPIC, N_USERS = 4, 3, 12
N_TAGS = N_TOPICS * TAGS_PER_TOPIC
# Small enough for a fast test, with the booster still able to split.
SMALL = {"k_visual": 5, "k_group": 5, "n_candidates": 6, "max_iter": 30, "min_samples_leaf": 3}


def world(n_images: int = 120, seed: int = 0):
    """Images of 4 topics (features and groups follow the topic; each topic has 3 tags, the
    first always on the post); each user posts mostly one topic and always adds their own
    'signature' tag (the third tag of their favourite topic), which only history can tell."""
    rng = np.random.default_rng(seed)
    topic = np.arange(n_images) % N_TOPICS
    centres = rng.normal(size=(N_TOPICS, 32))
    features = (centres[topic] + 0.3 * rng.normal(size=(n_images, 32))).astype(np.float32)
    groups = sparse.csr_matrix((np.ones(n_images), (np.arange(n_images), topic)), shape=(n_images, N_TOPICS))
    side = SideInfo(features={"cnn": features, "vlad": np.abs(features)}, image_groups=groups)
    users = rng.integers(0, N_USERS, n_images)
    rows, cols = [], []
    for image in range(n_images):
        base = TAGS_PER_TOPIC * topic[image]
        tags = {base, base + (1 if rng.random() < 0.5 else 2)}
        if users[image] % N_TOPICS == topic[image]:
            tags.add(base + 2)  # the user's signature tag on their favourite topic
        rows += [image] * len(tags)
        cols += sorted(tags)
    tags = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_images, N_TAGS))

    def posts(idx, user=None):
        idx = np.asarray(idx)
        return Posts(user=users[idx] if user is None else user, image=idx, tags=tags[idx],
                     n_users=N_USERS, n_images=n_images)

    return side, posts, topic


def fitted(**overrides):
    side, posts, topic = world()
    model = PersonalHybrid(PersonalHybridConfig(**{**SMALL, **overrides}))
    model.fit(TrainingData(train=posts(np.arange(100)), side=side))
    return model, side, posts, topic


def test_rank_orders_each_row_and_puts_tags_without_evidence_last():
    scores = np.array([[0.2, 0.0, 0.5, 0.1], [0.0, 0.0, 0.0, 3.0]])
    # Row 0: 0.5 first (0), 0.2 second (1), 0.1 third (2); the zero tag ranks 4 (row length).
    np.testing.assert_array_equal(_rank(scores), [[1, 4, 0, 2], [4, 4, 4, 0]])


def test_the_ranker_learns_on_an_inner_holdout_of_the_fit_posts():
    model, side, posts, topic = fitted()
    assert model.ranker is not None
    assert N_USERS <= model.holdout_posts < 50  # a quarter of each user's posts, at least one
    assert model.sources.memory.image_ids.tolist() == list(range(100))  # then refitted on all
    test = posts(np.arange(100, 120))
    top = np.argmax(model.score(test, side), axis=1)
    # The topic's first tag is on every post of the topic: the hybrid ranks it first.
    assert (top // TAGS_PER_TOPIC == topic[100:120]).mean() >= 0.9


def test_validation_posts_never_change_the_fit():
    side, posts, _ = world()
    train = posts(np.arange(100))
    noise = posts(np.arange(100, 110))
    shuffled = Posts(user=noise.user, image=noise.image, tags=noise.tags[:, ::-1],
                     n_users=N_USERS, n_images=noise.n_images)
    test = posts(np.arange(110, 120))
    alone = PersonalHybrid(PersonalHybridConfig(**SMALL)).fit(TrainingData(train=train, side=side))
    with_val = PersonalHybrid(PersonalHybridConfig(**SMALL)).fit(TrainingData(train=train, side=side, val=shuffled))
    np.testing.assert_array_equal(alone.score(test, side), with_val.score(test, side))


def test_a_user_without_history_gets_visual_and_group_evidence():
    model, side, posts, topic = fitted()
    test = posts(np.arange(100, 120))
    cold = posts(np.arange(100, 120), user=np.full(20, UNKNOWN_USER))
    rows, (q, _) = model._features(model.sources, cold, side)
    assert (rows[:, FEATURE_NAMES.index("has_history")] == 0).all()
    assert (rows[:, FEATURE_NAMES.index("history")] == 0).all()
    scores = model.score(cold, side)
    assert np.isfinite(scores).all()
    assert (np.argmax(scores, axis=1) // TAGS_PER_TOPIC == topic[100:120]).mean() >= 0.9
    warm_rows, _ = model._features(model.sources, test, side)
    assert (warm_rows[:, FEATURE_NAMES.index("has_history")] == 1).any()


def test_an_image_without_groups_gets_visual_and_history_evidence():
    model, side, posts, topic = fitted()
    groups = side.image_groups.tolil()
    groups[100:120] = 0  # the test images belong to no group
    bare = SideInfo(features=side.features, image_groups=groups.tocsr())
    test = posts(np.arange(100, 120))
    rows, _ = model._features(model.sources, test, bare)
    assert (rows[:, FEATURE_NAMES.index("has_groups")] == 0).all()
    assert (rows[:, FEATURE_NAMES.index("comember")] == 0).all()
    scores = model.score(test, bare)
    assert np.isfinite(scores).all()
    assert (np.argmax(scores, axis=1) // TAGS_PER_TOPIC == topic[100:120]).mean() >= 0.9
    # Neither history nor groups: the visual neighbours still carry the topic.
    cold = posts(np.arange(100, 120), user=np.full(20, UNKNOWN_USER))
    assert (np.argmax(model.score(cold, bare), axis=1) // TAGS_PER_TOPIC == topic[100:120]).mean() >= 0.9


def test_without_a_holdout_it_falls_back_to_the_fixed_blend():
    side, posts, topic = world()
    # Every training post by a different user: nobody has two posts, so nothing is held out.
    train = posts(np.arange(N_USERS), user=np.arange(N_USERS))
    model = PersonalHybrid(PersonalHybridConfig(**SMALL)).fit(TrainingData(train=train, side=side))
    assert model.ranker is None and model.holdout_posts == 0
    scores = model.score(posts(np.arange(100, 120)), side)
    assert (np.argmax(scores, axis=1) // TAGS_PER_TOPIC == topic[100:120]).mean() >= 0.9


def test_holdout_takes_a_share_of_each_users_posts_and_keeps_history():
    side, posts, _ = world()
    users = np.array([0, 0, 0, 1, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3])
    train = posts(np.arange(14), user=users)
    held = PersonalHybrid(PersonalHybridConfig(**SMALL))._holdout(train, np.random.default_rng(0))
    # A quarter, rounded, at least one and never all: user 0 (3 posts) 1, user 1 (a single
    # post) none, user 2 (2 posts) 1, user 3 (8 posts) 2.
    assert sorted(users[held].tolist()) == [0, 2, 3, 3]


def test_no_posts_give_an_empty_score_matrix():
    model, side, posts, _ = fitted()
    assert model.score(posts(np.arange(0)), side).shape == (0, N_TAGS)

"""Guards that every registered recommender learns something (issue 11, item 7), beyond the
shapes and round trips of ``test_recommender_contract.py``: on a planted dataset whose every
input carries the topic of a post, each model's top tags for held-out posts hit the post's
true tags, and its topic, clearly better than chance.

The planted data (``planted_data``): 4 topics of 3 tags each plus one popular tag on most
images. An image's topic shows in every kind of side information a model may read (``needs``):
its colour-feature / CNN / VLAD vectors are the topic's centre plus noise, its three patches
are tinted with the topic's colour, and it is in its topic's group. Each user posts on one
topic (four users per topic), so the tagging history carries it too. Held-out posts are new images of known users
plus two posts of a user never seen in training.

MP (most popular, non-personalised and history-only) can see neither the image nor the user,
so it cannot find the topic; what it can learn is frequency: it must rank the popular tag
first, which also lifts its precision above chance. Every other model must find the topic.
Models train with their small ``contract_overrides`` settings, as in the contract test, except
the epoch cap: the overrides stop gradient models after 2-3 epochs, enough for shapes and round
trips but not to learn (FM, the PerMLPs and the patch CNNs then score the topic at chance; at
30 epochs they find it every time), so here a model with ``max_epochs`` gets ``LEARNING_EPOCHS``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import sparse

from tagrec_models.data import UNKNOWN_USER, Posts, SideInfo, TrainingData
from tagrec_models.recommenders import available, get_recommender
from test_recommender_contract import FEATURE_DIMS, SIGNED, small_config

N_TOPICS, TAGS_PER_TOPIC = 4, 3
POPULAR = N_TOPICS * TAGS_PER_TOPIC  # the last tag: on most images, whatever the topic
N_TAGS = POPULAR + 1
USERS_PER_TOPIC = 4  # KNN voting counts one vote per user (Li et al.): a topic needs several users
N_USERS, N_IMAGES, N_TEST, N_VAL, PATCH = N_TOPICS * USERS_PER_TOPIC, 96, 24, 8, 75
POPULAR_SHARE = 0.9
K = 3
TOPIC_HIT_FLOOR = 0.5  # chance is 1 / N_TOPICS = 0.25
PRECISION_MARGIN = 0.1
LEARNING_EPOCHS = 30  # on 64 training posts: well under a second per model


def planted_data() -> tuple[TrainingData, Posts, SideInfo, np.ndarray]:
    """Training data, held-out posts, side information, and the topic of every image."""
    rng = np.random.default_rng(11)
    topic = np.arange(N_IMAGES) % N_TOPICS
    image_tags = []
    for image in range(N_IMAGES):
        first = 3 * topic[image]
        chosen = set(int(first + t) for t in rng.choice(TAGS_PER_TOPIC, size=2, replace=False))
        if rng.random() < POPULAR_SHARE:
            chosen.add(POPULAR)
        image_tags.append(sorted(chosen))
    features = {}
    for name, dim in FEATURE_DIMS.items():
        centres = rng.normal(size=(N_TOPICS, dim))
        noise = 0.3 * rng.normal(size=(N_IMAGES, dim))
        values = centres[topic] + noise
        features[name] = (values if name in SIGNED else np.abs(values)).astype(np.float32)
    tints = rng.integers(30, 226, size=(N_TOPICS, 3))
    noise = rng.integers(-25, 26, size=(N_IMAGES, 3, PATCH, PATCH, 3))
    patches = np.clip(tints[topic][:, None, None, None, :] + noise, 0, 255).astype(np.uint8)
    groups = sparse.csr_matrix((np.ones(N_IMAGES, dtype=np.float32), (np.arange(N_IMAGES), topic)),
                               shape=(N_IMAGES, N_TOPICS))
    side = SideInfo(features=features, patches=patches, image_groups=groups)
    # User u posts on topic u % N_TOPICS only; the images of a topic go to its users in turn.
    owner = topic + N_TOPICS * ((np.arange(N_IMAGES) // N_TOPICS) % USERS_PER_TOPIC)

    def posts(images: np.ndarray, users: np.ndarray) -> Posts:
        rows = [r for r, i in enumerate(images) for _ in image_tags[i]]
        cols = [t for i in images for t in image_tags[i]]
        matrix = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(images), N_TAGS))
        return Posts(user=np.asarray(users, dtype=np.int64), image=np.asarray(images, dtype=np.int64),
                     tags=matrix, n_users=N_USERS, n_images=N_IMAGES)

    n_train = N_IMAGES - N_TEST - N_VAL
    train_images = np.arange(n_train)
    val_images = np.arange(n_train, n_train + N_VAL)
    test_images = np.arange(n_train + N_VAL, N_IMAGES)
    test_users = owner[test_images].copy()
    test_users[-2:] = UNKNOWN_USER  # a user never seen in training: only the image can tell
    data = TrainingData(train=posts(train_images, owner[train_images]), side=side,
                        val=posts(val_images, owner[val_images]))
    return data, posts(test_images, test_users), side, topic


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best tags per row, best first (ties broken by tag index)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def precision_at_k(scores: np.ndarray, truth: sparse.csr_matrix, k: int) -> float:
    true = truth.toarray() > 0
    picked = top_k(scores, k)
    return float(np.take_along_axis(true, picked, axis=1).sum(axis=1).mean() / k)


def topic_hit_rate(scores: np.ndarray, post_topics: np.ndarray, k: int) -> float:
    """Of the k best topic tags (the popular tag set aside), the share from the post's topic."""
    picked = top_k(scores[:, :POPULAR], k)
    return float((picked // TAGS_PER_TOPIC == post_topics[:, None]).mean())


def learning_config(model_cls):
    """The contract test's small settings, with ``LEARNING_EPOCHS`` epochs where the model has
    an epoch cap (see the module docstring)."""
    config = small_config(model_cls)
    if "max_epochs" in {f.name for f in dataclasses.fields(config)}:
        config = dataclasses.replace(config, max_epochs=LEARNING_EPOCHS)
    return config


def is_history_only_and_impersonal(model_cls) -> bool:
    """Reads neither side information nor the user: only tag frequencies can be learnt."""
    return not tuple(model_cls.needs) and not getattr(model_cls, "personalised", False)


@pytest.fixture(scope="module")
def planted():
    return planted_data()


def test_the_planted_data_is_what_the_docstring_says(planted):
    data, test, _, topic = planted
    frequency = np.asarray(data.train.tags.sum(axis=0)).ravel()
    assert frequency.argmax() == POPULAR and frequency[POPULAR] > 2 * frequency[:POPULAR].max()
    true = test.tags.toarray()
    assert (true[:, :POPULAR].argmax(axis=1) // TAGS_PER_TOPIC == topic[test.image]).all()
    # A perfect topic ranking hits the topic every time, a uniform one a quarter of the time.
    oracle = np.zeros((test.n_posts, N_TAGS))
    oracle[np.arange(test.n_posts)[:, None], TAGS_PER_TOPIC * topic[test.image][:, None] + np.arange(3)] = 1
    assert topic_hit_rate(oracle, topic[test.image], K) == 1.0
    # All-equal scores pick tags 0-2 (topic 0) for every post: a quarter of the posts are topic 0.
    assert topic_hit_rate(np.zeros_like(oracle), topic[test.image], K) == pytest.approx(1 / N_TOPICS)


@pytest.mark.parametrize("name", available())
def test_every_model_learns_the_planted_signal(name, planted):
    data, test, side, topic = planted
    model_cls = get_recommender(name)
    scores = model_cls(learning_config(model_cls)).fit(data).score(test, side)
    true_per_post = np.asarray(test.tags.sum(axis=1)).ravel()
    chance_precision = float(true_per_post.mean() / N_TAGS)
    precision = precision_at_k(scores, test.tags, K)
    assert precision > chance_precision + PRECISION_MARGIN, (
        f"{name}: P@{K} {precision:.3f}, chance {chance_precision:.3f}")
    if is_history_only_and_impersonal(model_cls):
        assert (top_k(scores, 1).ravel() == POPULAR).all(), f"{name} does not rank the most frequent tag first"
        return
    hit_rate = topic_hit_rate(scores, topic[test.image], K)
    assert hit_rate >= TOPIC_HIT_FLOOR, (
        f"{name}: top-{K} topic tags hit the post's topic {hit_rate:.3f} of the time; chance is {1 / N_TOPICS}")

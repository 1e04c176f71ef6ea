"""Guards the paper-3 recommenders beyond the shared contract: the CCA family recommends the
right tags through its common space, retune/common_space/DMFR reuse behave, 2PKNN's two passes
match a hand-worked example, and missing inputs are named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import sparse

from tagrec_models.crossmodal.ccs import ccs_curve
from tagrec_models.crossmodal.dmfr import DeepMultimodalFeatures
from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.evaluation.metrics import metrics_at_k
from tagrec_models.recommenders import get_recommender
from tagrec_models.recommenders.two_pknn import TwoPKNN, TwoPKNNConfig


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors: on a shared 2-core machine thread hand-offs cost more than the arithmetic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def topics(n_train: int = 160, n_test: int = 40, seed: int = 0) -> tuple[TrainingData, Posts, SideInfo]:
    """Four topics with three tags each (two always, one half the time); a 64-d non-negative
    "cnn" feature that shows the topic through noise."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    topic = rng.integers(0, 4, size=n)
    centres = np.abs(rng.normal(size=(4, 64)))
    cnn = np.abs(centres[topic] + 0.6 * rng.normal(size=(n, 64))).astype(np.float32)
    sets = [{3 * t, 3 * t + 1} | ({3 * t + 2} if rng.random() < 0.5 else set()) for t in topic]
    rows = [i for i, s in enumerate(sets) for _ in s]
    y = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, [c for s in sets for c in sorted(s)])), shape=(n, 12))

    def posts(idx: np.ndarray) -> Posts:
        return Posts(user=np.full(len(idx), -1), image=idx, tags=y[idx], n_users=1, n_images=n)

    side = SideInfo(features={"cnn": cnn})
    train, test = posts(np.arange(n_train)), posts(np.arange(n_train, n))
    return TrainingData(train=train, side=side, val=test.subset(np.arange(min(10, n_test)))), test, side


SMALL_DMFR = dict(ae_dim=16, ae_epochs=20, ae_batch_size=64, sg_dim=8, sg_epochs=5, n_words=6, k=10, device="cpu")
FAMILY = {
    "cca": SMALL_DMFR,
    "kcca": {**SMALL_DMFR, "n_components": 6, "n_landmarks": 100},
    "dcca": {**SMALL_DMFR, "hidden_v": (32,), "hidden_s": (32,), "out_dim": 4, "dcca_epochs": 20, "dcca_batch_size": 80},
    "cca_knn": {"pca_dim": 16, "sg_dim": 8, "sg_epochs": 5, "k": 10, "device": "cpu"},
}


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_common_space_models_recommend_the_topic_tags(name):
    data, test, side = topics()
    cls = get_recommender(name)
    model = cls(cls.Config(**FAMILY[name])).fit(data)
    at2 = metrics_at_k(model.score(test, side), test.tags, 2)
    assert at2.precision[1] > 0.9  # the two always-present tags of the right topic
    for match in ("semantic", "visual", "both"):
        assert metrics_at_k(model.retune(match=match).score(test, side), test.tags, 2).precision[1] > 0.8
    images, annotations = model.common_space(test, side)
    assert images.shape == annotations.shape == (test.n_posts, len(model.correlations))
    curve = ccs_curve(images, annotations, top=20)
    assert curve[0] > 0.8  # the first canonical pair generalises to held-out posts


def test_retune_changes_only_scoring_knobs_and_leaves_the_original_alone():
    data, test, side = topics()
    model = get_recommender("cca")(get_recommender("cca").Config(**SMALL_DMFR)).fit(data)
    before = model.score(test, side)
    other = model.retune(k=3, temperature=0.5, rare_power=1.0)
    assert other.config.k == 3 and model.config.k == SMALL_DMFR["k"]
    assert not np.allclose(other.score(test, side), before)
    np.testing.assert_array_equal(model.score(test, side), before)
    with pytest.raises(ValueError, match="refit"):
        model.retune(ae_dim=8)


def test_one_dmfr_can_feed_cca_and_dcca_but_only_its_own():
    data, test, side = topics()
    cca_cls, dcca_cls = get_recommender("cca"), get_recommender("dcca")
    cfg = cca_cls.Config(**SMALL_DMFR)
    visual = side.feature("cnn")[data.train.image]
    dmfr = DeepMultimodalFeatures(cfg.dmfr()).fit(visual, data.train.tags)
    shared = cca_cls(cfg).fit(data, dmfr=dmfr)
    fresh = cca_cls(cfg).fit(data)
    np.testing.assert_allclose(shared.score(test, side), fresh.score(test, side), rtol=1e-5, atol=1e-6)
    dcca_cls(dcca_cls.Config(**FAMILY["dcca"])).fit(data, dmfr=dmfr)
    with pytest.raises(ValueError, match="fitted with"):
        cca_cls(cca_cls.Config(**{**SMALL_DMFR, "n_words": 5})).fit(data, dmfr=dmfr)
    other = TrainingData(train=data.train.subset(np.arange(100)), side=side)
    with pytest.raises(ValueError, match="other training data"):
        cca_cls(cfg).fit(other, dmfr=dmfr)


@pytest.mark.parametrize("name", ["cca", "kcca", "dcca", "cca_knn", "jec", "tagprop", "two_pknn"])
def test_a_missing_feature_is_named(name):
    data, _, _ = topics(n_train=20, n_test=4)
    bare = TrainingData(train=data.train, side=SideInfo(features={"ch64": np.zeros((24, 64), np.float32)}))
    with pytest.raises(KeyError, match="'cnn'"):
        get_recommender(name)().fit(bare)


# -- 2PKNN by hand ----------------------------------------------------------------------------
SKY, WATER, TREE, GRASS, SUN, BOAT = range(6)
LINE = [(0.0, {WATER, BOAT}), (1.0, {SKY, WATER, SUN}), (3.0, {SKY, TREE}), (6.0, {TREE, GRASS}), (10.0, {SKY, GRASS}), (20.0, {SKY, WATER})]


def line_data() -> tuple[TrainingData, Posts, SideInfo]:
    x = np.array([p for p, _ in LINE] + [0.2], dtype=np.float32)
    rows = [i for i, (_, s) in enumerate(LINE) for _ in s]
    cols = [t for _, s in LINE for t in sorted(s)]
    y = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(7, 6))
    side = SideInfo(features={"line": np.stack([x, np.zeros_like(x)], axis=1)})
    train = Posts(user=np.zeros(6, np.int64), image=np.arange(6), tags=y[:6], n_users=1, n_images=7)
    query = Posts(user=np.zeros(1, np.int64), image=np.array([6]), tags=y[:1], n_users=1, n_images=7)
    return TrainingData(train=train, side=side), query, side


def test_two_pknn_by_hand():
    """Query at 0.2, k1 = 1. Pass 1, each label's nearest carrier: sky -> B (0.8), water -> A
    (0.2), tree -> C (2.8), grass -> D (5.8), sun -> B, boat -> A; T_J = {A, B, C, D} (E and F
    are never used although F carries sky and water). Pass 2 with beta = 0 counts T_J's labels:
    sky 2 (B, C), water 2 (A, B), tree 2 (C, D), grass 1, sun 1, boat 1."""
    data, query, side = line_data()
    model = TwoPKNN(TwoPKNNConfig(features=("line",), distances=("l1",), k1=1, beta=0.0)).fit(data)
    np.testing.assert_allclose(model.score(query, side)[0], [2, 2, 2, 1, 1, 1])
    # With beta > 0 each member weighs exp(-beta * (D - D_min)), D = |0.2 - x| / scale.
    beta = 2.0
    d = np.abs(0.2 - np.array([0.0, 1.0, 3.0, 6.0])) / model.scale[0]
    w = np.exp(-beta * (d - d.min()))  # A, B, C, D
    expected = [w[1] + w[2], w[0] + w[1], w[2] + w[3], w[3], w[1], w[0]]
    np.testing.assert_allclose(model.retune(beta=beta).score(query, side)[0], expected, rtol=1e-5)
    # k1 = 2: sky {B, C}, water {A, B}, tree {C, D}, grass {D, E}, sun {B}, boat {A}, so
    # T_J = {A, B, C, D, E}; F is still left out. Counts: sky 3 (B, C, E), water 2, tree 2,
    # grass 2 (D, E), sun 1, boat 1.
    two = model.retune(k1=2).score(query, side)[0]
    np.testing.assert_allclose(two, [3, 2, 2, 2, 1, 1])

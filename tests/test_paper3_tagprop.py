"""Guards TagProp sigma-ML (Guillaumin et al. 2009): it learns to trust an informative base
distance over a noisy one and so beats plain kNN voting on the same neighbours; leave-one-out
training; save/load; errors on bad config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import sparse

from tagrec_models.crossmodal.distances import base_distance
from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.evaluation.metrics import metrics_at_k
from tagrec_models.recommenders.tagprop import TagProp, TagPropConfig

N_TRAIN, N_TEST, N_TAGS = 240, 120, 8


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors: on a shared 2-core machine thread hand-offs cost more than the arithmetic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fixture(seed: int = 0) -> tuple[TrainingData, Posts, SideInfo]:
    """Four topics; topic c always has tag 2c and half the time tag 2c + 1. Feature "good"
    shows the topic (with overlap between topics); feature "noise" shows nothing."""
    rng = np.random.default_rng(seed)
    n = N_TRAIN + N_TEST
    topic = rng.integers(0, 4, size=n)
    centres = rng.normal(size=(4, 8)) * 1.2
    good = (centres[topic] + rng.normal(size=(n, 8))).astype(np.float32)
    noise = rng.normal(size=(n, 8)).astype(np.float32)
    tag_sets = [{2 * t} | ({2 * t + 1} if rng.random() < 0.5 else set()) for t in topic]
    rows = [i for i, s in enumerate(tag_sets) for _ in s]
    cols = [c for s in tag_sets for c in sorted(s)]
    y = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, N_TAGS))

    def posts(idx: np.ndarray) -> Posts:
        return Posts(user=np.zeros(len(idx), np.int64), image=idx, tags=y[idx], n_users=1, n_images=n)

    side = SideInfo(features={"good": good, "noise": noise})
    return TrainingData(train=posts(np.arange(N_TRAIN)), side=side), posts(np.arange(N_TRAIN, n)), side


def plain_knn(data: TrainingData, test: Posts, side: SideInfo, model: TagProp) -> np.ndarray:
    """Uniform vote of the same K neighbours TagProp uses (equal sum of the scaled distances)."""
    total = sum(
        base_distance(d, side.feature(f)[test.image], side.feature(f)[data.train.image]) / model.scale[i]
        for i, (f, d) in enumerate(model.bases)
    )
    near = np.argsort(total, axis=1, kind="stable")[:, : model.k_eff]
    y = data.train.tags.toarray()
    return y[near].mean(axis=1)


CFG = TagPropConfig(features=("good", "noise"), distances=("l2",), k=80, steps=150, lr=0.05, device="cpu")


def test_tagprop_learns_the_metric_and_beats_plain_knn():
    data, test, side = fixture()
    model = TagProp(CFG).fit(data)
    good, noise = model.theta
    assert good > 3 * noise  # the informative distance gets the weight
    ours = metrics_at_k(model.score(test, side), test.tags, 2)
    knn = metrics_at_k(plain_knn(data, test, side, model), test.tags, 2)
    assert ours.f1[1] > knn.f1[1] + 0.05  # measured: 0.81 against 0.69


def test_training_is_leave_one_out_and_save_load_is_exact(tmp_path):
    data, test, side = fixture()
    model = TagProp(TagPropConfig(**{**CFG.__dict__, "steps": 5})).fit(data)
    neighbours, _ = model._distances(model.ref, exclude_self=True)
    assert not (neighbours == np.arange(N_TRAIN)[:, None]).any()
    reloaded = TagProp.load(model.save(tmp_path / "tagprop.model"))
    np.testing.assert_array_equal(reloaded.score(test, side), model.score(test, side))


def test_bad_config_is_named():
    data, _, _ = fixture()
    with pytest.raises(ValueError, match="unknown TagProp distance 'cityblock'"):
        TagProp(TagPropConfig(features=("good",), distances=("cityblock",))).fit(data)
    with pytest.raises(ValueError, match="weighting"):
        TagProp(TagPropConfig(features=("good",), weighting="uniform")).fit(data)

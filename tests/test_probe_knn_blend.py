"""Guards ``probe_knn_blend`` (issue 13): its score is the log-linear blend its docstring states,
worked out from its two parts' own outputs; its ends are the parts themselves; re-scoring at
other scoring-field values needs no refit; save / load keeps the scores."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.recommenders import get_recommender


def _clusters(n_per_tag: dict[int, int], dim: int = 12, seed: int = 0):
    """Non-negative images (kl needs histograms) around one centre per tag."""
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.normal(size=(len(n_per_tag), dim))) + 0.5
    rows, tags = [], []
    for t, n in n_per_tag.items():
        rows.append(np.abs(centres[t] + 0.2 * rng.normal(size=(n, dim))))
        tags += [t] * n
    x = np.vstack(rows).astype(np.float32)
    y = sparse.csr_matrix((np.ones(len(tags)), (np.arange(len(tags)), tags)), shape=(len(tags), len(n_per_tag)))
    return x, y


@pytest.fixture(scope="module")
def fitted():
    x, y = _clusters({0: 30, 1: 12, 2: 6})
    n = len(x)
    rows = np.random.default_rng(1).permutation(n)
    train, test = np.sort(rows[: 2 * n // 3]), np.sort(rows[2 * n // 3 :])

    def posts(r):
        return Posts(user=np.zeros(len(r), dtype=np.int64), image=r, tags=y[r], n_users=1, n_images=n)

    side = SideInfo(features={"cnn": x})
    model = get_recommender("probe_knn_blend")(steps=60, lr=0.01).fit(TrainingData(train=posts(train), side=side))
    return model, posts(train), posts(test), side


def test_the_score_is_the_stated_log_linear_blend(fitted):
    model, train, test, side = fitted
    point = dict(knn_weight=0.25, rare_power=1.5, k1=3, beta=5.0)
    got = model.retune(**point).score(test, side)
    logits = model.probe.logits(test, side)
    votes = model.knn.retune(k1=3, beta=5.0, rare_power=0.0).score(test, side).astype(np.float64)
    votes /= votes.sum(axis=1, keepdims=True)
    counts = np.asarray(train.tags.sum(axis=0)).ravel()
    expected = 0.75 * logits + 0.25 * np.log(votes + 1e-4) - 1.5 * np.log(counts + 1.0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_its_ends_rank_like_its_parts(fitted):
    model, _, test, side = fitted
    probe_only = model.retune(knn_weight=0.0).score(test, side)
    np.testing.assert_array_equal(np.argsort(-probe_only, axis=1, kind="stable"),
                                  np.argsort(-model.probe.logits(test, side), axis=1, kind="stable"))
    knn_only = model.retune(knn_weight=1.0, knn_floor=1e-12).score(test, side)
    votes = model.knn.retune(rare_power=0.0).score(test, side)
    np.testing.assert_array_equal(np.argsort(-knn_only, axis=1, kind="stable"),
                                  np.argsort(-votes, axis=1, kind="stable"))


def test_it_learns_the_clusters_and_save_load_keeps_scores(fitted, tmp_path):
    model, _, test, side = fitted
    scores = model.score(test, side)
    assert (scores.argmax(axis=1) == np.asarray(test.tags.argmax(axis=1)).ravel()).mean() > 0.95
    loaded = type(model).load(model.save(tmp_path / "blend.model"))
    np.testing.assert_array_equal(loaded.score(test, side), scores)
    np.testing.assert_array_equal(loaded.retune(knn_weight=0.75, k1=2).score(test, side),
                                  model.retune(knn_weight=0.75, k1=2).score(test, side))


def test_a_weight_outside_zero_one_is_refused(fitted):
    model, _, test, side = fitted
    with pytest.raises(ValueError, match="knn_weight"):
        model.retune(knn_weight=1.5).score(test, side)

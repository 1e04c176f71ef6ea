"""Guards paper 2's parameter studies (Figures 9-14): tidy frames of the lambda, stage and
number-of-tags sweeps chosen on validation posts, neighbour-retrieval MAP against a hand-worked
value, and image-retrieval metrics on the transposed scores."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from paper2_data import known_signal
from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.studies.sweeps import (
    LAMBDAS,
    METRIC_COLUMNS,
    best_value,
    compare_models,
    retrieval_metrics,
    sweep_lambda,
    sweep_n_tags,
    sweep_stage,
    visual_retrieval_map,
)
from tagrec_models.recommenders import get_recommender


@pytest.fixture(scope="module")
def blurred():
    data, test, side = known_signal(seed=1, signal=0.3)
    fit_data = TrainingData(train=data.train, side=side)  # validation stays out of the fit
    return fit_data, data.val, side


def test_sweep_lambda_is_tidy_and_groups_matter(blurred):
    fit_data, val, side = blurred
    messages = []
    frame = sweep_lambda("ug_nw", fit_data, val, side, log=messages.append)
    assert list(frame.columns[:2]) == ["lam", "k"]
    assert set(METRIC_COLUMNS) | {"neighbour_ap", "neighbour_jaccard", "n_posts"} <= set(frame.columns)
    assert len(frame) == len(LAMBDAS) * 10
    assert sorted(frame["lam"].unique()) == list(LAMBDAS)
    assert frame["neighbour_ap"].between(0, 1).all() and frame["neighbour_jaccard"].between(0, 1).all()
    assert any("lambda = 0.4" in m for m in messages)
    # With blurred pictures, leaning on groups (small lambda) finds more relevant neighbours.
    per_lam = frame[frame["k"] == 10].set_index("lam")
    assert per_lam.loc[0.1, "neighbour_ap"] > per_lam.loc[0.9, "neighbour_ap"]
    chosen = best_value(frame, "lam")
    assert chosen in LAMBDAS and per_lam.loc[chosen, "ndcg"] == per_lam["ndcg"].max()
    with pytest.raises(ValueError, match="lam"):
        sweep_lambda("knn_voting", fit_data, val, side)


def test_sweep_stage_prefers_the_informative_feature():
    data, _, side = known_signal(seed=2, signal=1.0)
    fit_data = TrainingData(train=data.train, side=side)
    frame = sweep_stage("noug_nw", fit_data, data.val, side, stages=["noise", "vlad"])
    assert set(frame["stage"]) == {"noise", "vlad"} and len(frame) == 20
    at10 = frame[frame["k"] == 10].set_index("stage")
    assert at10.loc["vlad", "retrieval_map"] > at10.loc["noise", "retrieval_map"] + 0.2
    assert best_value(frame, "stage", metric="retrieval_map") == "vlad"
    assert best_value(frame, "stage") == "vlad"
    with pytest.raises(KeyError, match="missing"):
        sweep_stage("noug_nw", fit_data, data.val, side, stages=["missing"])


def test_n_tags_and_model_comparison(blurred):
    fit_data, val, side = blurred
    models = {name: get_recommender(name)().fit(fit_data) for name in ["ug_nw", "noug_nonw", "mp"]}
    frame = compare_models(models, val, side)
    assert list(frame["model"].unique()) == ["ug_nw", "noug_nonw", "mp"] and len(frame) == 30
    longer = sweep_n_tags(models["ug_nw"], val, side, k_max=20)
    assert list(longer["k"]) == list(range(1, 21))
    np.testing.assert_allclose(longer["ndcg"][:10], frame[frame["model"] == "ug_nw"]["ndcg"])


def test_visual_retrieval_map_by_hand():
    """Training codes 0, 1, 2, 10 with tags {t0}, {t0, t1}, {t1}, {t2}; queries at 0.9 and 1.6,
    both tagged {t0}, k = 3. Query 0.9: neighbours 1, 0, 2 -> relevant, relevant, not;
    2 relevant images in all: AP = (1 + 1) / 2 = 1. Query 1.6: neighbours 2, 1, 0 -> not,
    relevant, relevant: AP = (1/2 + 2/3) / 2 = 7/12. MAP = (1 + 7/12) / 2 = 19/24."""
    codes = np.array([[0.0], [1.0], [2.0], [10.0], [0.9], [1.6]], dtype=np.float32)
    train = Posts(
        user=np.array([0, 1, 1, 2]),
        image=np.arange(4),
        tags=sparse.csr_matrix(np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)),
        n_users=3,
        n_images=6,
    )
    queries = Posts(
        user=np.array([0, 1]),
        image=np.array([4, 5]),
        tags=sparse.csr_matrix(np.array([[1, 0, 0], [1, 0, 0]], dtype=np.float32)),
        n_users=3,
        n_images=6,
    )
    side = SideInfo(features={"vlad": codes})
    assert visual_retrieval_map(train, queries, side, "vlad", k=3) == pytest.approx(19 / 24)


def test_retrieval_metrics_rank_images_per_tag():
    # Two tags, three images. Tag 0 is on images 0, 2; scores rank images 2, 1, 0 for it:
    # P@1 = 1, P@2 = 1/2. Tag 1 is on image 1, ranked first: P@1 = 1, P@2 = 1/2.
    scores = np.array([[0.1, 0.2], [0.5, 0.9], [0.9, 0.1]])
    truth = sparse.csr_matrix(np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32))
    frame = retrieval_metrics(scores, truth, k_max=2)
    np.testing.assert_allclose(frame["precision"], [1.0, 0.5])
    # recall: tag 0 1/2 then 1/2, tag 1 1 then 1 -> 0.75, 0.75
    np.testing.assert_allclose(frame["recall"], [0.75, 0.75])
    assert (frame["n_queries"] == 2).all()

"""Guards the ranking metrics (paper 1 eq. 12, NDCG, MAP, per-label Corel5k table) against values
worked out by hand, including tie-breaking, empty posts and malformed input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from tagrec_models.evaluation.metrics import (
    AtK,
    harmonic,
    metrics_at_k,
    per_label_metrics,
    top_k,
)

# Two posts with a true tag and one without, over four tags.
#   post 0: scores 0.9 0.1 0.5 0.3 -> ranking 0, 2, 3, 1; true {0, 3} -> hits 1 0 1 0
#   post 1: scores 0.2 0.8 0.8 0.1 -> tie of tags 1 and 2 goes to the lower index:
#           ranking 1, 2, 0, 3; true {2} -> hits 0 1 0 0
#   post 2: no true tag: left out of every average, counted in n_empty.
SCORES = np.array(
    [
        [0.9, 0.1, 0.5, 0.3],
        [0.2, 0.8, 0.8, 0.1],
        [1.0, 2.0, 3.0, 4.0],
    ]
)
TRUTH = sparse.csr_matrix(
    np.array(
        [
            [1, 0, 0, 1],
            [0, 0, 1, 0],
            [0, 0, 0, 0],
        ],
        dtype=np.float32,
    )
)


def test_top_k_orders_by_score_and_breaks_ties_towards_the_lower_index():
    np.testing.assert_array_equal(top_k(SCORES, 4)[:2], [[0, 2, 3, 1], [1, 2, 0, 3]])
    # All equal: index order.
    np.testing.assert_array_equal(top_k(np.zeros((1, 3)), 2), [[0, 1]])
    # k larger than the number of tags is clipped.
    assert top_k(SCORES, 10).shape == (3, 4)


def test_top_k_equals_a_full_stable_sort_on_tie_heavy_scores():
    # top_k only sorts each row's k best (partition first); it must pick exactly what a full
    # stable sort picks, including which of several tied scores at the k-th place survive.
    rng = np.random.default_rng(0)
    for trial in range(200):
        n_rows, n_cols = int(rng.integers(1, 12)), int(rng.integers(2, 12))
        scores = rng.integers(0, 3, size=(n_rows, n_cols)).astype(np.float32)  # many ties
        if trial % 4 == 0:
            scores = rng.random((n_rows, n_cols))
        if trial % 7 == 0:
            scores[0] = -np.inf
        for k in range(1, n_cols + 2):
            expected = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, n_cols)]
            np.testing.assert_array_equal(top_k(scores, k), expected)


def test_top_k_handles_unsigned_and_boolean_scores():
    # Negating uint8 wraps (0 -> 0 becomes the "best"); a boolean cannot be negated at all.
    np.testing.assert_array_equal(top_k(np.array([[0, 3, 2]], dtype=np.uint8), 2), [[1, 2]])
    np.testing.assert_array_equal(top_k(np.array([[False, True, True]]), 2), [[1, 2]])


def test_top_k_rejects_bad_input():
    with pytest.raises(ValueError, match="k must be"):
        top_k(SCORES, 0)
    with pytest.raises(ValueError, match="NaN"):
        top_k(np.array([[0.1, np.nan]]), 1)
    with pytest.raises(ValueError, match="matrix"):
        top_k(np.array([0.1, 0.2]), 1)


def test_harmonic_mean():
    # 2 * 0.5 * 0.25 / 0.75 = 1/3; both zero -> 0 rather than NaN.
    np.testing.assert_allclose(harmonic(np.array([0.5, 0.0]), np.array([0.25, 0.0])), [1 / 3, 0.0])


def test_precision_recall_f1_at_k_by_hand():
    result = metrics_at_k(SCORES, TRUTH, k_max=4)
    assert isinstance(result, AtK)
    assert (result.n_posts, result.n_empty) == (2, 1)
    # hits of post 0 at K=1..4: 1 1 2 2 (of |T|=2); post 1: 0 1 1 1 (of |T|=1)
    # Prec@K = mean(hits/K):  K=1 (1+0)/2 = .5; K=2 (.5+.5)/2 = .5; K=3 (2/3+1/3)/2 = .5;
    #                         K=4 (.5+.25)/2 = .375
    np.testing.assert_allclose(result.precision, [0.5, 0.5, 0.5, 0.375])
    # Recall@K = mean(hits/|T|): K=1 (.5+0)/2 = .25; K=2 (.5+1)/2 = .75; K=3,4 (1+1)/2 = 1
    np.testing.assert_allclose(result.recall, [0.25, 0.75, 1.0, 1.0])
    # F1@K of the two averages (eq. 12): 2*.5*.25/.75 = 1/3; 2*.5*.75/1.25 = .6;
    # 2*.5*1/1.5 = 2/3; 2*.375*1/1.375 = 6/11
    np.testing.assert_allclose(result.f1, [1 / 3, 0.6, 2 / 3, 6 / 11])


def test_mean_post_f1_is_the_average_of_each_posts_f1():
    result = metrics_at_k(SCORES, TRUTH, k_max=4)
    # post 0 F1 at K=1..4: (p=1, r=.5) 2/3; (.5, .5) .5; (2/3, 1) .8; (.5, 1) 2/3
    # post 1 F1 at K=1..4: 0; (.5, 1) 2/3; (1/3, 1) .5; (.25, 1) .4
    expected = [(2 / 3 + 0) / 2, (0.5 + 2 / 3) / 2, (0.8 + 0.5) / 2, (2 / 3 + 0.4) / 2]
    np.testing.assert_allclose(result.mean_post_f1, expected)
    # It is a different number from F1 of the averages, which is why it is its own column.
    assert not np.allclose(result.mean_post_f1, result.f1)


def test_ndcg_by_hand():
    result = metrics_at_k(SCORES, TRUTH, k_max=4)
    d2, d3 = 1 / math.log2(3), 1 / math.log2(4)
    # post 0 (|T| = 2): DCG 1, 1, 1 + d3, 1 + d3; ideal DCG 1, 1 + d2, 1 + d2, 1 + d2
    post0 = [1.0, 1 / (1 + d2), (1 + d3) / (1 + d2), (1 + d3) / (1 + d2)]
    # post 1 (|T| = 1): DCG 0, d2, d2, d2; ideal DCG 1 at every K
    post1 = [0.0, d2, d2, d2]
    np.testing.assert_allclose(result.ndcg, (np.array(post0) + np.array(post1)) / 2)
    np.testing.assert_allclose(result.ndcg[:3], [0.5, 0.622039, 0.775325], atol=1e-6)


def test_map_by_hand():
    result = metrics_at_k(SCORES, TRUTH, k_max=4)
    # AP@K = sum_{i<=K} Prec@i * rel_i / min(|T|, K)
    # post 0: K=1: 1/1 = 1; K=2: 1/2; K=3: (1 + 2/3)/2 = 5/6; K=4: 5/6
    # post 1: K=1: 0; K=2: (1/2)/1 = .5; K=3, 4: .5
    np.testing.assert_allclose(result.map, [0.5, 0.5, (5 / 6 + 0.5) / 2, (5 / 6 + 0.5) / 2])


def test_non_binary_truth_counts_as_relevant_and_k_is_clipped_to_the_tags():
    doubled = TRUTH * 2.0
    result = metrics_at_k(SCORES, doubled, k_max=10)
    assert len(result.f1) == 4  # only four tags exist
    np.testing.assert_allclose(result.f1, metrics_at_k(SCORES, TRUTH, k_max=4).f1)


def test_to_frame_has_one_row_per_cutoff():
    frame = metrics_at_k(SCORES, TRUTH, k_max=3).to_frame()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["k"]) == [1, 2, 3]
    assert list(frame.columns) == ["k", "precision", "recall", "f1", "mean_post_f1", "ndcg", "map"]
    np.testing.assert_allclose(frame["precision"], [0.5, 0.5, 0.5])


def test_metrics_reject_malformed_input():
    with pytest.raises(ValueError, match="differ in shape"):
        metrics_at_k(SCORES[:, :3], TRUTH)
    with pytest.raises(ValueError, match="no post with a true tag"):
        metrics_at_k(SCORES, sparse.csr_matrix(SCORES.shape))
    with pytest.raises(ValueError, match="k must be"):
        metrics_at_k(SCORES, TRUTH, k_max=0)


# Per-label (Corel5k) table, three images, five labels, k = 2:
#   image 0: top 2 = {0, 1}; true {0, 2}
#   image 1: top 2 = {1, 2}; true {1}
#   image 2: top 2 = {3, 0}; true {0, 4}
# label 0: predicted 2x, correct 2, occurs 2 -> P 1,   R 1
# label 1: predicted 2x, correct 1, occurs 1 -> P .5,  R 1
# label 2: predicted 1x, correct 0, occurs 1 -> P 0,   R 0
# label 3: never true -> not averaged (although predicted)
# label 4: never predicted, occurs 1         -> P 0,   R 0
# P = 1.5 / 4 = .375; R = 2 / 4 = .5; F1 = 2 * .375 * .5 / .875 = 3/7; N+ = 2 (labels 0, 1)
LABEL_SCORES = np.array(
    [
        [0.9, 0.8, 0.1, 0.0, 0.05],
        [0.1, 0.9, 0.8, 0.0, 0.05],
        [0.5, 0.1, 0.2, 0.9, 0.05],
    ]
)
LABEL_TRUTH = sparse.csr_matrix(
    np.array([[1, 0, 1, 0, 0], [0, 1, 0, 0, 0], [1, 0, 0, 0, 1]], dtype=np.float32)
)


def test_per_label_metrics_by_hand():
    result = per_label_metrics(LABEL_SCORES, LABEL_TRUTH, k=2)
    assert result.precision == pytest.approx(0.375)
    assert result.recall == pytest.approx(0.5)
    assert result.f1 == pytest.approx(3 / 7)
    assert (result.n_plus, result.n_labels) == (2, 4)


def test_per_label_metrics_reject_a_truth_without_labels():
    with pytest.raises(ValueError, match="no label"):
        per_label_metrics(LABEL_SCORES, sparse.csr_matrix(LABEL_SCORES.shape), k=2)

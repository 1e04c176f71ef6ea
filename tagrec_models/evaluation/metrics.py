"""Ranking metrics of the three papers, written down once (DESIGN.md, "Evaluation protocol").

All functions take a score matrix ``[n_posts, n_tags]`` (higher = more relevant) and the true
tags as a binary CSR matrix of the same shape. The top K is taken by score with ties broken
towards the lower tag index, so results are deterministic.

A post with no true tag has no defined recall; it is left out of every average and counted in
``n_empty`` so that callers can report it (our splits make it rare: every test tag is a
training tag).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores per row, best first; ties go to the lower index."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a [n_posts, n_tags] matrix, got shape {scores.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not np.issubdtype(scores.dtype, np.floating):
        # Negating unsigned or boolean scores wraps around or fails; floats negate exactly.
        scores = scores.astype(np.float64)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN: a ranking of them is undefined")
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if k == n_cols or n_rows == 0:
        # A stable sort on the negated scores keeps equal scores in index order.
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]
    # Only the k best of each row are needed: find each row's k-th largest value v in linear
    # time, keep every score above v and the first (by index) of the scores equal to v until k
    # are kept, then sort those k. Same result as the full stable sort, several times faster.
    kth = np.partition(scores, n_cols - k, axis=1)[:, n_cols - k : n_cols - k + 1]
    above = scores > kth
    equal = scores == kth
    room = k - above.sum(axis=1, keepdims=True)
    if np.array_equal(equal.sum(axis=1, keepdims=True), room):
        keep = above | equal  # no surplus tie at the k-th value (the usual case)
    else:
        keep = above | (equal & (np.cumsum(equal, axis=1) <= room))
    columns = np.nonzero(keep)[1].reshape(n_rows, k)  # ascending index within each row
    order = np.argsort(-np.take_along_axis(scores, columns, axis=1), axis=1, kind="stable")
    return np.take_along_axis(columns, order, axis=1)


def _hits(scores: np.ndarray, truth: sparse.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``rel[p, i]`` = 1 if the i-th recommended tag of post p is true; and ``|T_p|``."""
    truth = sparse.csr_matrix(truth)
    if truth.shape != scores.shape:
        raise ValueError(f"scores {scores.shape} and truth {truth.shape} differ in shape")
    ranked = top_k(scores, k)
    rel = np.asarray(truth[np.arange(len(ranked))[:, None], ranked].todense(), dtype=np.float64)
    rel = (rel > 0).astype(np.float64)
    n_true = np.asarray((truth > 0).sum(axis=1)).ravel().astype(np.float64)
    return rel, n_true


@dataclass(frozen=True)
class AtK:
    """Per-cutoff averages: ``precision[k-1]`` is Prec@k and so on, for k = 1..k_max."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    mean_post_f1: np.ndarray
    ndcg: np.ndarray
    map: np.ndarray
    n_posts: int
    n_empty: int

    def to_frame(self) -> pd.DataFrame:
        k = np.arange(1, len(self.precision) + 1)
        return pd.DataFrame(
            {
                "k": k,
                "precision": self.precision,
                "recall": self.recall,
                "f1": self.f1,
                "mean_post_f1": self.mean_post_f1,
                "ndcg": self.ndcg,
                "map": self.map,
            }
        )


def harmonic(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    p, r = np.asarray(p, dtype=np.float64), np.asarray(r, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(p + r > 0, 2 * p * r / (p + r), 0.0)


@dataclass(frozen=True)
class PostMetrics:
    """Each post's own values at k = 1..k_max (``[n_kept, k_max]``) for the posts that have a
    true tag (``kept``: their row numbers in the input): precision, recall, NDCG and AP, the
    per-post terms that ``metrics_at_k`` averages. Kept for the bootstrap intervals and paired
    tests over test posts (``evaluation.significance``)."""

    kept: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    ndcg: np.ndarray
    ap: np.ndarray

    @property
    def f1(self) -> np.ndarray:
        """Each post's own F1 at each k (the terms of ``mean_post_f1``)."""
        return harmonic(self.precision, self.recall)


def post_metrics(scores: np.ndarray, truth: sparse.csr_matrix, k_max: int = 10) -> PostMetrics:
    """The per-post terms of ``metrics_at_k`` (see there for each formula)."""
    scores = np.asarray(scores)  # top_k ranks any float dtype as is (no float64 copy)
    rel, n_true = _hits(scores, truth, k_max)
    keep = n_true > 0
    rel, n_true = rel[keep], n_true[keep]
    k = np.arange(1, rel.shape[1] + 1, dtype=np.float64)
    cum_hits = np.cumsum(rel, axis=1)
    post_p = cum_hits / k
    post_r = cum_hits / n_true[:, None] if len(n_true) else cum_hits
    discounts = 1.0 / np.log2(k + 1.0)
    dcg = np.cumsum(rel * discounts, axis=1)
    ideal_hits = np.minimum(n_true[:, None], k[None, :])
    ideal = np.cumsum(discounts)[ideal_hits.astype(int) - 1]
    ap = np.cumsum(post_p * rel, axis=1) / np.minimum(n_true[:, None], k[None, :])
    return PostMetrics(kept=np.flatnonzero(keep), precision=post_p, recall=post_r, ndcg=dcg / ideal, ap=ap)


def metrics_at_k(scores: np.ndarray, truth: sparse.csr_matrix, k_max: int = 10) -> AtK:
    """Prec@K, Recall@K and F1@K for K = 1..k_max, with NDCG@K and MAP@K beside them.

    * Prec@K = avg_p |top_K(p) & T_p| / K and Recall@K = avg_p |top_K(p) & T_p| / |T_p|;
      F1@K is the harmonic mean of those two averages (paper 1, eq. 12; paper 3, eqs. 9-11).
    * ``mean_post_f1`` is the mean over posts of each post's own F1 (TagRec's convention),
      reported separately and never mixed with F1@K.
    * NDCG@K with binary gains: DCG = sum_i rel_i / log2(i + 1), normalised by the DCG of
      min(|T_p|, K) hits (paper 2, section 5.3).
    * MAP@K: AP@K = sum_i Prec@i * rel_i / min(|T_p|, K), averaged over posts.
    """
    posts = post_metrics(scores, truth, k_max)
    n_posts = len(posts.kept)
    if n_posts == 0:
        raise ValueError("no post with a true tag: the metrics are undefined")
    precision, recall = posts.precision.mean(axis=0), posts.recall.mean(axis=0)
    return AtK(
        precision=precision,
        recall=recall,
        f1=harmonic(precision, recall),
        mean_post_f1=posts.f1.mean(axis=0),
        ndcg=posts.ndcg.mean(axis=0),
        map=posts.ap.mean(axis=0),
        n_posts=n_posts,
        n_empty=int(np.asarray(scores).shape[0] - n_posts),
    )


@dataclass(frozen=True)
class PerLabel:
    """The classic Corel5k table: per-label P and R averaged over labels, F1 of those two
    averages, and N+ = the number of labels recalled at least once."""

    precision: float
    recall: float
    f1: float
    n_plus: int
    n_labels: int


def per_label_metrics(scores: np.ndarray, truth: sparse.csr_matrix, k: int = 5) -> PerLabel:
    """Each image gets its top ``k`` labels; for each label that occurs in ``truth``:
    precision = correct / predicted (0 when never predicted), recall = correct / occurrences.
    Averages run over the labels that occur in ``truth`` (the Corel5k convention, 260 labels)."""
    scores = np.asarray(scores, dtype=np.float64)
    truth = sparse.csr_matrix(truth)
    ranked = top_k(scores, k)
    predicted = sparse.csr_matrix(
        (np.ones(ranked.size), (np.repeat(np.arange(len(ranked)), ranked.shape[1]), ranked.ravel())),
        shape=scores.shape,
    )
    true_bin = (truth > 0).astype(np.float64)
    correct = np.asarray(predicted.multiply(true_bin).sum(axis=0)).ravel()
    n_pred = np.asarray(predicted.sum(axis=0)).ravel()
    n_true = np.asarray(true_bin.sum(axis=0)).ravel()
    labels = n_true > 0
    if not labels.any():
        raise ValueError("no label occurs in the truth matrix: per-label metrics are undefined")
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n_pred > 0, correct / np.maximum(n_pred, 1), 0.0)[labels]
    recall = (correct / np.maximum(n_true, 1))[labels]
    p, r = float(precision.mean()), float(recall.mean())
    return PerLabel(
        precision=p,
        recall=r,
        f1=float(harmonic(p, r)),
        n_plus=int((recall > 0).sum()),
        n_labels=int(labels.sum()),
    )

"""Corel5k's second protocol: per-label thresholds chosen on validation (issue 13, item 4).

Under the classic protocol every image gets exactly 5 labels (``metrics.per_label_metrics``).
The threshold-based record (e.g. ASL + per-label thresholds, 48.4 / 56.3 / 52.0 / 191; attention
pooling on TResNet, 45.3 / 61.1 / 52.0 / 202; DESIGN.md) instead gives label w to every image
whose score reaches a threshold t_w, so an image may get more or fewer than 5 labels. Those
numbers are not comparable with the 5-tag table, and tagrec never mixes them: this module and
its results table are separate.

Two rules choose the thresholds on *validation* images; test labels never enter the choice.

* ``choose_global_threshold`` (the table's default rule): one threshold t for every label, the
  one that maximises the validation per-label F1 of the averaged P and R. On a score with the
  post-hoc logit adjustment (``s_w - r * log(count_w + 1)``, Menon et al. 2021, eq. 10), which
  the tuned Corel5k models carry as a scoring field, it is a per-label threshold
  ``t + r * log(count_w + 1)`` on the unadjusted score: two values fitted to validation
  instead of one per label. Corel5k's validation holds about 450 images, a median label has a
  handful of them, and a threshold fitted to each label's few images does not carry to test
  (``benchmarks/thresholds_corel5k.py``, the Corel5k blend: test per-label F1 0.430 at 6.9 tags
  per image with a threshold per label, 0.470 at 3.6 with the global rule). Per-tag thresholds
  pulled towards the global one (the pull chosen by cross-validation inside validation), a floor
  and a cap on the tags per image, and frequency-matched per-tag thresholds did not beat it on
  the fine-tuned embedding either (``benchmarks/threshold_rules_corel5k.py``).
* ``choose_thresholds`` (rule ``per_label``): for each label, the threshold that maximises that
  label's F1 on the validation images (candidates: the label's own validation scores, so a
  threshold sits just at a score that admits one more image); labels with fewer than
  ``min_positives`` validation images, and labels whose best validation F1 is 0, get the
  global threshold above.
* ``thresholded_per_label_metrics``: the same per-label P / R / F1 of averages / N+ convention
  as the 5-tag table (precision 0 for a label never predicted; averages over labels occurring
  in the truth), plus the mean number of labels given per image.

Scores need not be calibrated (a kNN vote, a probability): the per-label rule only reads each
label's own ordering of images; a global threshold assumes scores comparable across labels
(true of log-probabilities and logits, roughly true of the other scores).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from tagrec_models.evaluation.metrics import harmonic


@dataclass(frozen=True)
class Thresholds:
    """``values[w]``: label w is given when score >= values[w]; ``per_label[w]``: whether w
    got its own threshold (else the global one, ``global_value``)."""

    values: np.ndarray
    per_label: np.ndarray
    global_value: float


@dataclass(frozen=True)
class ThresholdedPerLabel:
    precision: float
    recall: float
    f1: float
    n_plus: int
    n_labels: int
    labels_per_image: float


def choose_global_threshold(scores: np.ndarray, truth: sparse.spmatrix, n_candidates: int = 200) -> Thresholds:
    """The one threshold, shared by every label, that maximises the validation per-label F1 (of
    the averaged P and R, the reported measure). Candidates: the score quantiles at which an
    image gets 0.1 to ``n_labels / 2`` labels on average, on a geometric grid (fine where the
    best value lies, a few labels per image); of tied candidates the lowest is kept."""
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(sparse.csr_matrix(truth).todense()) > 0
    if scores.shape != y.shape:
        raise ValueError(f"scores {scores.shape} and truth {y.shape} differ in shape")
    n_labels = scores.shape[1]
    per_image = np.geomspace(0.1, max(n_labels / 2, 0.2), n_candidates)
    # method 'higher': every candidate is a score, so a threshold admits exactly the images at or above it
    candidates = np.unique(np.quantile(scores, np.clip(1.0 - per_image / n_labels, 0.0, 1.0), method="higher"))
    best_f1, best_value = -1.0, float(candidates[-1])
    for t in candidates:
        value = _given_label_metrics(scores >= t, y).f1 if y.any() else 0.0
        if value > best_f1:
            best_f1, best_value = value, float(t)
    return Thresholds(values=np.full(n_labels, best_value), per_label=np.zeros(n_labels, dtype=bool),
                      global_value=best_value)


def choose_thresholds(scores: np.ndarray, truth: sparse.spmatrix, min_positives: int = 2,
                      n_global: int = 200) -> Thresholds:
    """Per-label thresholds maximising each label's validation F1 (see the module docstring)."""
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(sparse.csr_matrix(truth).todense()) > 0
    if min_positives < 1:
        raise ValueError(f"min_positives must be >= 1, got {min_positives}")
    fallback = choose_global_threshold(scores, y, n_global)
    values, own = fallback.values.copy(), fallback.per_label.copy()
    for w in np.flatnonzero(y.sum(axis=0) >= min_positives):
        column, positives = scores[:, w], y[:, w]
        order = np.argsort(-column, kind="stable")
        hits = np.cumsum(positives[order])
        given = np.arange(1, len(order) + 1)
        f1 = 2 * hits / (given + positives.sum())
        # a threshold at a score admits every image with that score: only the last of a tie counts
        last_of_tie = np.r_[column[order][1:] != column[order][:-1], True]
        f1 = np.where(last_of_tie, f1, -1.0)
        best = int(np.argmax(f1))
        if f1[best] > 0:
            values[w], own[w] = column[order][best], True
    return Thresholds(values=values, per_label=own, global_value=fallback.global_value)


def thresholded_per_label_metrics(scores: np.ndarray, truth: sparse.spmatrix, thresholds: Thresholds | np.ndarray) -> ThresholdedPerLabel:
    """Per-label P / R / F1 (of the averages) / N+ when label w is given to every image with
    score >= its threshold; averages over the labels occurring in ``truth`` (Corel5k: 260)."""
    values = thresholds.values if isinstance(thresholds, Thresholds) else np.asarray(thresholds, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(sparse.csr_matrix(truth).todense()) > 0
    if scores.shape != y.shape or values.shape != (scores.shape[1],):
        raise ValueError(f"scores {scores.shape}, truth {y.shape} and thresholds {values.shape} do not fit")
    if not y.any(axis=0).any():
        raise ValueError("no label occurs in the truth matrix: per-label metrics are undefined")
    return _given_label_metrics(scores >= values[None, :], y)


def _given_label_metrics(pred: np.ndarray, y: np.ndarray) -> ThresholdedPerLabel:
    """``thresholded_per_label_metrics`` of boolean given-label and truth matrices [n, L]."""
    correct = (pred & y).sum(axis=0).astype(np.float64)
    n_pred, n_true = pred.sum(axis=0), y.sum(axis=0)
    labels = n_true > 0
    precision = np.where(n_pred > 0, correct / np.maximum(n_pred, 1), 0.0)[labels]
    recall = (correct / np.maximum(n_true, 1))[labels]
    p, r = float(precision.mean()), float(recall.mean())
    return ThresholdedPerLabel(precision=p, recall=r, f1=float(harmonic(p, r)), n_plus=int((recall > 0).sum()),
                               n_labels=int(labels.sum()), labels_per_image=float(pred.sum(axis=1).mean()))

"""How sure a comparison is: bootstrap intervals over test posts, a paired randomisation test
against the best method, and Holm's correction across the methods of one table (DESIGN.md,
"Evaluation protocol": "a comparison states its uncertainty").

Every headline measure is a *statistic of per-post means*: each test post contributes a small
vector of components and the measure is a function of their mean over posts.

* P@K, R@K, NDCG@K, MAP@K, mean per-post F1: one component, the post's own value; the
  statistic is the mean.
* F1@K (paper 1, eq. 12; paper 3, eqs. 9-11): two components, the post's P@K and R@K; the
  statistic is the harmonic mean of their averages (not a mean of per-post F1).
* per-label F1 and N+ at 5 tags (the Corel5k protocol): ``3 L`` components, for each label
  whether the image's 5 predicted tags hit it (correct), predict it, and whether it is true;
  per-label precision = correct / predicted and recall = correct / true are ratios of sums,
  so the means over images give them exactly (``per_label_statistic``).

Writing them all this way lets one vectorised bootstrap and one randomisation test serve every
column, with the per-label columns recomputed from the stored predicted tag sets rather than
approximated.

Pooling (several splits, several seeds): the posts of each split are resampled within that
split (a post belongs to one split's test part); each seed's statistic is computed on the same
resampled posts and the seeds are averaged; the splits' values are averaged. This is the
uncertainty of the table's number (mean over seeds, and over splits) due to which posts were
held out.

Interval: the percentile bootstrap (Efron & Tibshirani 1993, ch. 13): ``n_resamples`` draws of
the test posts with replacement, the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of
the statistic. Seeded (``seed``), so a table is reproducible.

Per-label measures: a resample repeats some images and leaves out about 37% of them, so a
label seen once or twice in test can drop out or lose its only hit; per-label F1 (averaged over
the labels that occur) then sits above the test value on resamples and N+ below it, by more
than the interval's half-width on Corel5k (2PKNN: per-label F1 0.405, percentile interval
[0.408, 0.463]). Their intervals are bias-corrected: shifted by the bootstrap's estimate of that
bias (``LABEL_SET_STATISTICS``). To compare two methods on per-label F1 or N+, the paired
randomisation test below, which keeps every image, is the better tool.

Paired test: approximate randomisation (Noreen 1989; Riezler & Maxwell 2005), a permutation
test in which, per test post, the two methods' outputs are swapped with probability 1/2 (a
sign flip of the per-post difference when the statistic is a mean). Chosen over the paired
bootstrap because (a) under the null hypothesis that the two methods are exchangeable on every
post it is exact up to Monte Carlo error, with no centring or normal approximation, which
matters for statistics of means that are not means (F1 of the averaged P and R, per-label F1);
(b) Riezler & Maxwell found the bootstrap test more prone to false positives on such
statistics; (c) it is the same test the issue asks for on per-label F1 (swap the two methods'
predicted tag sets per test image and recompute per-label F1). Two-sided;
``p = (1 + #{|d*| >= |d|}) / (1 + n_resamples)``, so p is never 0 and two identical methods
get p = 1. Seeds: each method's per-post components are first averaged over its seeds (the
two methods need not have the same number of seeds, and a seed of one is not paired with a
seed of the other); the test statistic is the difference of the statistics of those averages.

Holm (1979): the step-down correction of ``m`` p-values, controlling the family-wise error
rate across the methods of one table compared with its best.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

Statistic = Callable[[np.ndarray], np.ndarray]
"""Maps component means ``[..., C]`` to the measure ``[...]``."""


def mean_statistic(means: np.ndarray) -> np.ndarray:
    """One component: the measure is its mean over posts."""
    return means[..., 0]


def f1_statistic(means: np.ndarray) -> np.ndarray:
    """Two components (P@K, R@K): F1 of their averages (paper 1, eq. 12)."""
    p, r = means[..., 0], means[..., 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1.0), 0.0)


def _label_parts(means: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_labels = means.shape[-1] // 3
    return means[..., :n_labels], means[..., n_labels:2 * n_labels], means[..., 2 * n_labels:]


def per_label_prf(means: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label P and R averaged over the labels that occur (``metrics.per_label_metrics``),
    and the number of occurring labels, from the ``3 L`` component means (correct, predicted,
    true per label; a mean over images is the count divided by the number of images, and the
    ratios do not depend on that divisor)."""
    correct, predicted, true = _label_parts(means)
    occurs = true > 0
    n_occurring = occurs.sum(axis=-1)
    # In place, without temporaries: these arrays are [n_seeds, n_resamples, L] in the bootstrap.
    precision = np.divide(correct, predicted, out=np.zeros_like(correct), where=occurs & (predicted > 0))
    recall = np.divide(correct, true, out=np.zeros_like(correct), where=occurs)
    denominator = np.maximum(n_occurring, 1)
    return precision.sum(axis=-1) / denominator, recall.sum(axis=-1) / denominator, n_occurring


def per_label_statistic(means: np.ndarray) -> np.ndarray:
    """Per-label F1: F1 of the averaged per-label P and R (the Corel5k protocol)."""
    p, r, _ = per_label_prf(means)
    return f1_statistic(np.stack([p, r], axis=-1))


def n_plus_statistic(means: np.ndarray) -> np.ndarray:
    """N+: the number of occurring labels recalled at least once."""
    correct, _, true = _label_parts(means)
    return ((true > 0) & (correct > 0)).sum(axis=-1).astype(np.float64)


# Statistics over the labels that occur: a resample of the test images leaves out about a third
# of them, so its rare labels (mostly low per-label F1, each one recalled or not) drop out and the
# resampled values sit systematically off the test value (per-label F1 above it, N+ below it:
# measured on Corel5k, 2PKNN's per-label F1 0.405 with a percentile interval of [0.408, 0.463]).
# Their intervals are bias-corrected: the percentile interval shifted by the bootstrap's own
# estimate of that bias, mean(resampled) - test value (Efron & Tibshirani 1993, section 10.2).
LABEL_SET_STATISTICS: frozenset[Statistic] = frozenset({per_label_statistic, n_plus_statistic})


def label_components(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image components of the per-label measures: ``predicted`` and ``truth`` are binary
    ``[n_images, L]`` (the image's k predicted tags, its true tags); returns
    ``[n_images, 3 L]`` = (correct, predicted, true)."""
    predicted = np.asarray(predicted, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    return np.concatenate([predicted * truth, predicted, truth], axis=1)


@dataclass(frozen=True)
class Interval:
    """A statistic on the full test set and its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float


@lru_cache(maxsize=8)
def _resample_weights(n: int, n_resamples: int, seed: int, split: int) -> np.ndarray:
    """``[n_resamples, n]``: how often each post is drawn in each resample, divided by ``n``
    (so ``weights @ values`` is the resample's mean), drawn all at once. Seeded by (seed,
    split), so every method of a table is resampled on the same draws (common random numbers:
    the intervals of two methods differ by the methods, not by the draws), and cached, since a
    table asks for the same draws once per method and measure. Read-only."""
    rng = np.random.default_rng([seed, split])
    draws = rng.integers(0, n, size=(n_resamples, n))
    flat = (draws + n * np.arange(n_resamples)[:, None]).ravel()
    weights = np.bincount(flat, minlength=n_resamples * n).reshape(n_resamples, n) / n
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=8)
def _swaps(n: int, n_resamples: int, seed: int, split: int) -> np.ndarray:
    """``[n_resamples, n]`` 0/1: which posts swap the two methods' outputs in each draw;
    seeded by (seed, split) and cached like ``_resample_weights``. Read-only."""
    swaps = np.random.default_rng([seed, split, 1]).integers(0, 2, size=(n_resamples, n)).astype(np.float64)
    swaps.setflags(write=False)
    return swaps


def _as_splits(values) -> list[np.ndarray]:
    """Normalise to a list (one per split) of ``[n_seeds, n_posts, C]`` arrays."""
    splits = [values] if isinstance(values, np.ndarray) else list(values)
    out = []
    for array in splits:
        array = np.asarray(array)
        if array.dtype not in (np.float32, np.float64):
            array = array.astype(np.float64)
        if array.ndim == 1:
            array = array[None, :, None]
        elif array.ndim == 2:
            array = array[None]
        if array.ndim != 3 or array.shape[1] == 0:
            raise ValueError(f"per-post values must be [n_seeds, n_posts, C] with posts, got {array.shape}")
        out.append(array)
    if not out:
        raise ValueError("no split to resample")
    return out


def bootstrap_interval(
    values,
    statistic: Statistic = mean_statistic,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of ``statistic`` over test posts (module docstring).

    ``values``: per split, the per-post components ``[n_seeds, n_posts, C]`` (a 1-d array is
    one seed, one component; a 2-d array one seed). Posts are resampled within each split,
    each seed scored on the same resample, seeds then splits averaged."""
    return bootstrap_intervals(values, {"value": statistic}, n_resamples, level, seed)["value"]


def bootstrap_intervals(
    values,
    statistics: Mapping[str, Statistic],
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]:
    """``bootstrap_interval`` for several statistics of the same components, on the same
    resamples (one matrix product for all: per-label F1 and N+ share theirs)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    estimate = {name: 0.0 for name in statistics}
    resampled = {name: np.zeros(n_resamples) for name in statistics}
    splits = _as_splits(values)
    for index, array in enumerate(splits):
        weights = _resample_weights(array.shape[1], n_resamples, seed, index)
        # [n_seeds, n_resamples, C] component means, one matrix product per seed.
        # Broadcast over seeds: BLAS, not einsum's loop; in the array's precision (float32 for
        # the per-label counts, where it halves the cost of the widest products).
        means = np.matmul(weights.astype(array.dtype, copy=False), array)
        for name, statistic in statistics.items():
            estimate[name] += float(statistic(array.mean(axis=1)).mean())
            resampled[name] += statistic(means).mean(axis=0)
    out = {}
    for name, statistic in statistics.items():
        values, value = resampled[name] / len(splits), estimate[name] / len(splits)
        low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
        if statistic in LABEL_SET_STATISTICS:
            bias = float(values.mean()) - value
            low, high = low - bias, high - bias
        out[name] = Interval(estimate=value, low=float(low), high=float(high))
    return out


def randomisation_test(
    values_a,
    values_b,
    statistic: Statistic = mean_statistic,
    n_resamples: int = 2000,
    seed: int = 0,
) -> float:
    """Two-sided p-value of approximate randomisation (module docstring) for
    ``statistic(a) - statistic(b)`` on the same test posts: ``values_a`` and ``values_b`` as
    in ``bootstrap_interval``, the same posts in the same order in each split."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    splits_a, splits_b = _as_splits(values_a), _as_splits(values_b)
    if len(splits_a) != len(splits_b):
        raise ValueError("the two methods must be scored on the same splits")
    observed, permuted = 0.0, np.zeros(n_resamples)
    for index, (a, b) in enumerate(zip(splits_a, splits_b)):
        if a.shape[1:] != b.shape[1:]:
            raise ValueError(f"the two methods differ in posts or components: {a.shape} vs {b.shape}")
        a, b = a.mean(axis=0), b.mean(axis=0)  # seeds averaged: [n_posts, C]
        n = a.shape[0]
        mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
        observed += float(statistic(mean_a) - statistic(mean_b))
        swap = _swaps(n, n_resamples, seed, index)
        shift = swap.astype(a.dtype, copy=False) @ (b - a) / n  # how much each resample's swaps move a's mean (and b's back)
        permuted += statistic(mean_a + shift) - statistic(mean_b - shift)
    # A relative tolerance at the arrays' precision: a swapped difference equal to the observed
    # one in exact arithmetic must count even when rounding made it a hair smaller.
    precision = 1e-6 if any(x.dtype == np.float32 for x in (*splits_a, *splits_b)) else 1e-12
    tolerance = precision * max(1.0, abs(observed))
    exceed = np.count_nonzero(np.abs(permuted) >= abs(observed) - tolerance)
    return float((1 + exceed) / (1 + n_resamples))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values: sort ascending, multiply the i-th smallest
    (0-based) by ``m - i``, take the running maximum, cap at 1. NaN entries are left out of
    the family (``m`` counts the others) and stay NaN."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    present = np.flatnonzero(~np.isnan(p))
    if len(present) == 0:
        return out
    order = present[np.argsort(p[present], kind="stable")]
    m = len(order)
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adjusted
    return out


@dataclass(frozen=True)
class Settings:
    """``n_resamples``: bootstrap and randomisation draws; ``level``: interval coverage;
    ``seed``: the draws' seed; ``alpha``: the level below which a Holm-adjusted p-value says
    a method is not tied with the best."""

    n_resamples: int = 2000
    level: float = 0.95
    seed: int = 0
    alpha: float = 0.05


def compare_with_best(
    values: Mapping[str, object],
    best: str,
    statistic: Statistic = mean_statistic,
    settings: Settings = Settings(),
    intervals: bool = True,
) -> pd.DataFrame:
    """For every method of ``values`` (name -> per-split per-post components, as in
    ``bootstrap_interval``): the estimate and the bootstrap interval (unless ``intervals`` is
    false), the raw and the Holm-adjusted (across the other methods) p-value of the paired test
    against ``best``, and ``tied_with_best`` (adjusted p >= alpha, or the best itself, whose p
    is 1)."""
    if best not in values:
        raise KeyError(f"the best method {best!r} has no per-post values")
    rows = []
    for method, method_values in values.items():
        row: dict[str, object] = {"method": method}
        if intervals:
            interval = bootstrap_interval(method_values, statistic, settings.n_resamples, settings.level, settings.seed)
            row.update(estimate=interval.estimate, ci_low=interval.low, ci_high=interval.high)
        row["p_raw"] = 1.0 if method == best else randomisation_test(method_values, values[best], statistic,
                                                                     settings.n_resamples, settings.seed)
        rows.append(row)
    frame = pd.DataFrame(rows)
    others = frame["method"] != best
    frame["p_vs_best"] = 1.0
    frame.loc[others, "p_vs_best"] = holm(frame.loc[others, "p_raw"].to_numpy())
    frame["tied_with_best"] = ~others | (frame["p_vs_best"] >= settings.alpha)
    return frame


# The long per-post frame (``results.per_post``) -> the components of each measure.
MEASURES: dict[str, tuple[tuple[str, ...], Statistic]] = {
    "f1@5": (("p@5", "r@5"), f1_statistic),
    "p@5": (("p@5",), mean_statistic),
    "r@5": (("r@5",), mean_statistic),
    "mean_post_f1@5": (("f1@5",), mean_statistic),
    "ndcg@10": (("ndcg@10",), mean_statistic),
    "map@10": (("map@10",), mean_statistic),
}
"""measure -> (the ``metric`` values of ``results.per_post`` it is computed from, statistic)."""

LABEL_MEASURES: dict[str, Statistic] = {"label_f1@5": per_label_statistic, "n_plus@5": n_plus_statistic}
"""Per-label measures, computed from each image's predicted tag set (``label_values``)."""


def post_values(per_post: pd.DataFrame, measure: str, posts: Sequence[str] | None = None) -> dict[str, list[np.ndarray]]:
    """method -> per split ``[n_seeds, n_posts, C]`` for ``measure`` (a key of ``MEASURES``)
    from a long per-post frame (split, method, seed, post, metric, value); ``posts`` keeps only
    those posts (a scenario's subset). Posts are in one order for every method of a split."""
    metrics, _ = MEASURES[measure]
    rows = per_post[per_post["metric"].isin(metrics)]
    if posts is not None:
        rows = rows[rows["post"].isin(set(posts))]
    out: dict[str, list[np.ndarray]] = {}
    for split in sorted(rows["split"].unique()):
        in_split = rows[rows["split"] == split]
        order = sorted(in_split["post"].unique())
        # One reshape for every method of the split (a pivot per method costs more than the bootstrap).
        wide = in_split.set_index(["method", "seed", "post", "metric"])["value"].unstack("metric")
        for method in in_split["method"].unique():
            by_method = wide.loc[method]
            seeds = sorted(by_method.index.get_level_values("seed").unique())
            index = pd.MultiIndex.from_product([seeds, order], names=["seed", "post"])
            array = by_method.reindex(index)[list(metrics)].to_numpy().reshape(len(seeds), len(order), len(metrics))
            out.setdefault(str(method), []).append(array)
    return out


def label_values(predictions: pd.DataFrame, truth: pd.DataFrame, posts: Sequence[str] | None = None) -> dict[str, list[np.ndarray]]:
    """method -> per split ``[n_seeds, n_images, 3 L]`` per-label components
    (``label_components``) from the predicted tag sets (split, method, seed, post, tag) and the
    true tags (split, post, tag); ``L`` = the labels that occur in the split's truth (the
    Corel5k convention: averages run over them)."""
    if posts is not None:
        keep = set(posts)
        predictions, truth = predictions[predictions["post"].isin(keep)], truth[truth["post"].isin(keep)]
    out: dict[str, list[np.ndarray]] = {}
    for split in sorted(truth["split"].unique()):
        true_rows = truth[truth["split"] == split]
        order = sorted(true_rows["post"].unique())
        labels = sorted(true_rows["tag"].unique())
        post_at = {p: i for i, p in enumerate(order)}
        label_at = {t: i for i, t in enumerate(labels)}
        true = np.zeros((len(order), len(labels)))
        true[true_rows["post"].map(post_at).to_numpy(), true_rows["tag"].map(label_at).to_numpy()] = 1.0
        in_split = predictions[(predictions["split"] == split) & predictions["post"].isin(post_at)]
        for method, by_method in in_split.groupby("method", sort=False):
            seeds = sorted(by_method["seed"].unique())
            # A predicted tag that is true for no test image changes no occurring label's
            # precision or recall (``metrics.per_label_metrics``): only the occurring ones count.
            hits = by_method[by_method["tag"].isin(label_at)]
            arrays = []
            for seed in seeds:
                rows = hits[hits["seed"] == seed]
                predicted = np.zeros_like(true)
                predicted[rows["post"].map(post_at).to_numpy(), rows["tag"].map(label_at).to_numpy()] = 1.0
                arrays.append(label_components(predicted, true))
            # float32: exact for these 0/1 counts; the bootstrap's means carry ~1e-7 relative error.
            out.setdefault(str(method), []).append(np.stack(arrays).astype(np.float32))
    return out


def format_interval(estimate: float, low: float, high: float) -> str:
    """``0.471 [0.43, 0.51]``: the estimate to 3 decimals and the interval to 2; a count such as
    N+ (10 or more) as ``139 [120, 150]`` (``98.7 [90, 106]`` for a mean over seeds)."""
    if any(pd.isna(v) for v in (estimate, low, high)):
        return "" if pd.isna(estimate) else f"{estimate:.3f}"
    if abs(estimate) >= 10:  # counts such as N+ (a mean over seeds may have a fraction)
        value = f"{estimate:.0f}" if float(estimate).is_integer() else f"{estimate:.1f}"
        return f"{value} [{low:.0f}, {high:.0f}]"
    return f"{estimate:.3f} [{low:.2f}, {high:.2f}]"

"""Can a better threshold rule close the gap to the threshold-based Corel5k record (issue 13's
goal: per-label F1 0.52 with thresholds chosen on validation)? A study, not a rule of the
``label_thresholds`` asset: each rule below is chosen on the 449 *validation* images from a fit
on train only, like the asset's, and scored on test; only the last row reads test labels, and
it is a bound, not a result.

Rows (the blend ``probe_knn_blend_stages`` at its registered defaults; its scoring point, the
knn weight, logit adjustment and 2PKNN's k1 / beta, searched with a global threshold as the
asset's rule ``global`` does, over the whole grid):

* ``global``: the asset's default rule, one threshold for every tag;
* ``per_label``: each tag's own F1-maximising threshold (``choose_thresholds``), at the same point;
* ``shrunk``: each tag's threshold pulled towards the global one, ``t + lambda * (t_w - t)``
  (lambda = 0: global, 1: per_label), lambda chosen by 5-fold cross-validation *inside*
  validation (thresholds chosen on four fifths, scored on the fifth left out, 4 repeats), so
  that its validation figure is out of sample; the thresholds then come from all of validation;
* ``global, at least m / at most M tags``: the global threshold with a floor and a cap on the
  tags an image gets, (t, m, M) chosen on validation;
* ``frequency-matched``: tag w's threshold admits ``c * freq_w`` of the validation images
  (freq_w: its share of the training images), c chosen on validation; it reads no validation
  labels per tag, so it cannot overfit them;
* ``global, refit on train + validation``: the global rule's point and threshold, the test
  scores from a fit on all 4,500 training images;
* ``bound``: the point and the global threshold chosen on *test* labels: what no choice of a
  global threshold at any point of the grid can exceed on this score.

Validation F1 is in-sample except for ``shrunk`` (cross-validated). ~4 min on 2 cores::

    python benchmarks/threshold_rules_corel5k.py                     # the frozen Lite2 + stage5/6 cache
    python benchmarks/threshold_rules_corel5k.py --embedding data/bench/finetune_gpu/lite2_epochs16_..._seed0.npz \\
        --json data/bench/threshold_rules/epochs16_seed0.json
    python benchmarks/gpu_corel5k.py summarise --thresholds --src data/bench/threshold_rules

Several ``--embedding`` files of one seed are concatenated, an ensemble of its fine-tunes
(summarised as epochs "12+16+20+24")::

    python benchmarks/threshold_rules_corel5k.py --embedding data/bench/finetune_gpu/lite2_epochs{12,16,20,24}_..._seed0.npz \\
        --json data/bench/threshold_rules/ensemble_seed0.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd

from representations_corel5k import splits
from thresholds_corel5k import embedding_arguments, embedding_name, side_info
from tagrec_models.data import TrainingData
from tagrec_models.evaluation.thresholds import (ThresholdedPerLabel, Thresholds, choose_global_threshold,
                                                 choose_thresholds, thresholded_per_label_metrics)
from tagrec_models.recommenders import get_recommender
from tagrec_models.studies.tuning import best_scoring_point, grid_size, search_scoring_points

SHRINKAGES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)


def given(pred: np.ndarray, truth) -> ThresholdedPerLabel:
    """Per-label metrics of a boolean given-tag matrix (every tag's threshold at 0.5 of 0/1)."""
    return thresholded_per_label_metrics(pred.astype(np.float64), truth, np.full(pred.shape[1], 0.5))


def shrunk(own: Thresholds, shrinkage: float) -> np.ndarray:
    """Each tag's threshold pulled towards the global one: ``t + shrinkage * (t_w - t)``."""
    return own.global_value + shrinkage * (own.values - own.global_value)


def cross_validated_shrinkage(scores: np.ndarray, truth, folds: int = 5, repeats: int = 4,
                              seed: int = 0) -> dict[float, float]:
    """shrinkage -> per-label F1 of the out-of-fold given tags, averaged over ``repeats`` fold draws."""
    y = np.asarray(truth.todense()) > 0
    rng, values = np.random.default_rng(seed), {s: [] for s in SHRINKAGES}
    for _ in range(repeats):
        fold_of = rng.permutation(len(scores)) % folds
        pred = {s: np.zeros_like(y) for s in SHRINKAGES}
        for k in range(folds):
            fit, held = fold_of != k, fold_of == k
            own = choose_thresholds(scores[fit], y[fit])
            for s in SHRINKAGES:
                pred[s][held] = scores[held] >= shrunk(own, s)[None, :]
        for s in SHRINKAGES:
            values[s].append(given(pred[s], truth).f1)
    return {s: float(np.mean(v)) for s, v in values.items()}


def ranks(scores: np.ndarray) -> np.ndarray:
    """rank[i, w]: 0 for image i's highest-scoring tag."""
    order = np.argsort(-scores, axis=1, kind="stable")
    out = np.empty_like(order)
    np.put_along_axis(out, order, np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy(), axis=1)
    return out


def floor_cap(scores: np.ndarray, rank: np.ndarray, threshold: float, floor: int, cap: int) -> np.ndarray:
    """Tags at or above ``threshold``, at least the ``floor`` best and at most the ``cap`` best
    (0: no cap) per image; ``rank``: ``ranks(scores)``."""
    pred = (scores >= threshold) | (rank < floor)
    return pred & (rank < cap) if cap else pred


def frequency_matched(descending: np.ndarray, shares: np.ndarray, c: float) -> np.ndarray:
    """Per-tag thresholds admitting ``round(c * share_w * n)`` (at least 1) of the n images whose
    scores ``descending`` holds, each tag's column sorted high to low (sorted once per search)."""
    admitted = np.clip(np.round(c * shares * len(descending)).astype(int), 1, len(descending))
    return descending[admitted - 1, np.arange(descending.shape[1])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    embedding_arguments(parser)
    args = parser.parse_args()
    vocab, fit, val, train_val, test = splits(args.corel5k)
    side, settings = side_info(args, vocab)
    cls = get_recommender(args.model)
    model = cls().fit(TrainingData(train=fit, side=side))
    space = {name: values for name, values in cls.search_space.items() if name in cls.scoring_fields}
    start = {name: getattr(cls.Config(), name) for name in space}

    def best_point(posts) -> dict:
        def objective(point: dict) -> float:
            scores = model.retune(**point).score(posts, side)
            return thresholded_per_label_metrics(scores, posts.tags, choose_global_threshold(scores, posts.tags)).f1
        candidates = search_scoring_points(space, start, grid_size(space), 0, objective, f"{cls.name}-rules")
        return dict(best_scoring_point(candidates)[1])

    point = best_point(val)
    print(f"global rule's point, chosen on validation: {point}", flush=True)
    scored = model.retune(**point)
    sv, st = scored.score(val, side), scored.score(test, side)
    rows = []

    def row(rule: str, val_f1: float, result: ThresholdedPerLabel, note: str = "") -> None:
        rows.append({"threshold_rule": rule, "val_thr_label_f1": val_f1, "thr_label_precision": result.precision,
                     "thr_label_recall": result.recall, "thr_label_f1": result.f1, "thr_n_plus": result.n_plus,
                     "thr_labels_per_image": result.labels_per_image, "chosen": note})
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)

    chosen = choose_global_threshold(sv, val.tags)
    global_val_f1 = thresholded_per_label_metrics(sv, val.tags, chosen).f1
    row("global", global_val_f1,
        thresholded_per_label_metrics(st, test.tags, chosen), f"t={chosen.global_value:.3f}")
    own = choose_thresholds(sv, val.tags)
    row("per_label", thresholded_per_label_metrics(sv, val.tags, own).f1, thresholded_per_label_metrics(st, test.tags, own))

    curve = cross_validated_shrinkage(sv, val.tags)
    shrinkage = max(SHRINKAGES, key=lambda s: (curve[s], -s))
    values = shrunk(own, shrinkage)
    row("shrunk", curve[shrinkage], thresholded_per_label_metrics(st, test.tags, values),
        f"lambda={shrinkage}; cross-validated F1 by lambda: " + ", ".join(f"{s}: {v:.3f}" for s, v in curve.items()))

    y_val = val.tags
    candidates = np.unique(np.quantile(sv, 1.0 - np.geomspace(0.1, 20, 120) / sv.shape[1]))
    rank_val, rank_test = ranks(sv), ranks(st)
    f1, threshold, floor, cap = max(((given(floor_cap(sv, rank_val, t, m, c), y_val).f1, t, m, c)
                                     for m in (0, 1, 2) for c in (0, 3, 4, 5, 6, 8) for t in candidates),
                                    key=lambda x: x[0])
    row("global, at least m / at most M tags", f1, given(floor_cap(st, rank_test, threshold, floor, cap), test.tags),
        f"t={threshold:.3f}, m={floor}, M={cap or 'none'}")

    shares = np.asarray(fit.tags.sum(axis=0)).ravel() / fit.n_posts
    descending = -np.sort(-sv, axis=0)
    f1, c = max(((given(sv >= frequency_matched(descending, shares, c)[None, :], y_val).f1, c)
                 for c in np.geomspace(0.3, 3, 25)), key=lambda x: x[0])
    values = frequency_matched(descending, shares, c)
    row("frequency-matched", f1, thresholded_per_label_metrics(st, test.tags, values), f"c={c:.2f}")

    refit = cls().fit(TrainingData(train=train_val, side=side)).retune(**point)
    row("global, refit on train + validation", global_val_f1,
        thresholded_per_label_metrics(refit.score(test, side), test.tags, chosen), f"t={chosen.global_value:.3f}")

    test_point = best_point(test)
    st_bound = model.retune(**test_point).score(test, side)
    bound = choose_global_threshold(st_bound, test.tags)
    row("bound: point and global threshold chosen on test", float("nan"),
        thresholded_per_label_metrics(st_bound, test.tags, bound), json.dumps(test_point))

    columns = ["threshold_rule", "val_thr_label_f1", "thr_label_precision", "thr_label_recall", "thr_label_f1",
               "thr_n_plus", "thr_labels_per_image", "chosen"]
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_colwidth", 120):
        print(pd.DataFrame(rows)[columns].round(4).to_string(index=False))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"embedding": embedding_name(args), "settings": settings,
                                         "point": point, "rows": rows}, indent=1, default=float))


if __name__ == "__main__":
    main()

"""Corel5k's second protocol as a results table (issue 13, item 4): tags given by thresholds
chosen on validation, so an image gets every tag whose score reaches its threshold (more or
fewer than 5), reported per label as P / R / F1 / N+ in its own table, never beside the 5-tag
columns (``evaluation.thresholds`` says how each rule chooses thresholds).

Protocol, per method: the configuration the tuning engine chose (``TrainedModel.config``) is
fitted once on the *training* posts only, so that its validation scores are out of sample; the
thresholds are chosen on those validation scores; the same fit scores the test posts and the
thresholds are applied. Test labels never reach the choice. (The 5-tag tables' final fits saw
validation, so their validation scores could not choose thresholds honestly.)

Rules (``rule``):

* ``global`` (default): one threshold for every tag, chosen on validation *together with* the
  model's scoring-only fields (``Recommender.scoring_fields``: a blend weight, the logit
  adjustment, 2PKNN's k1 / beta), searched like the tuning engine's operating points
  (``studies.tuning.search_scoring_points``: the whole grid when it has at most
  ``retune_trials`` points, else as many TPE draws). Why jointly: the 5-tag per-label point
  answers another question (which 5 tags), and the logit adjustment is what shapes a shared
  threshold into per-tag ones.
* ``per_label``: a threshold per tag (``choose_thresholds``), at the 5-tag per-label
  operating point, as before; kept to compare with.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Callable, Sequence

import pandas as pd

from tagrec_models.artifacts import TrainedModel
from tagrec_models.bundle import SplitBundle
from tagrec_models.data import SideInfo, TrainingData
from tagrec_models.evaluation.thresholds import (Thresholds, choose_global_threshold, choose_thresholds,
                                                 thresholded_per_label_metrics)
from tagrec_models.recommenders.registry import get_recommender
from tagrec_models.studies.tuning import PER_LABEL, best_scoring_point, search_scoring_points

Log = Callable[[str], None]


def _tuples(value):
    return tuple(value) if isinstance(value, list) else value


RULES = ("global", "per_label")


def _global_point(model, bundle: SplitBundle, side: SideInfo, start: dict, retune_trials: int,
                  seed: int) -> tuple[dict, int]:
    """(scoring-field values, points scored): the point whose validation scores give the best
    per-label F1 under their own best global threshold; ``start`` keeps a tie."""
    space = {name: values for name, values in type(model).search_space.items() if name in type(model).scoring_fields}
    if not space or retune_trials <= 0:
        return start, 0

    def objective(point: dict) -> float:
        scores = model.retune(**point).score(bundle.val, side)
        return thresholded_per_label_metrics(scores, bundle.val.tags, choose_global_threshold(scores, bundle.val.tags)).f1

    start = {name: start[name] for name in space}
    candidates = search_scoring_points(space, start, retune_trials, seed, objective, f"{type(model).name}-thresholds")
    _, point, _ = best_scoring_point(candidates)
    return dict(point), len(candidates)


def threshold_rows(trained: TrainedModel, bundle: SplitBundle, side: SideInfo, rule: str = "global",
                   min_positives: int = 2, retune_trials: int = 150, seed: int = 0, log: Log | None = None) -> dict:
    """One row of the thresholds table for ``trained`` (see the module docstring)."""
    if rule not in RULES:
        raise ValueError(f"threshold rule must be one of {RULES}, got {rule!r}")
    if bundle.val.n_posts == 0:
        raise ValueError("the per-label thresholds protocol needs validation posts to choose thresholds on")
    cls = get_recommender(trained.name)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    config = cls.Config(**{k: _tuples(v) for k, v in trained.config.items() if k in fields})
    say = log or (lambda message: None)
    say(f"{trained.name}: fitting the chosen configuration on train only for the thresholds protocol")
    started = time.perf_counter()
    model = cls(config).fit(TrainingData(train=bundle.train, side=side, val=bundle.val))
    seconds = time.perf_counter() - started
    five_tag_point = (getattr(trained, "operating_points", {}) or {}).get(PER_LABEL) or {}
    point, scored = five_tag_point, 0
    if rule == "global":
        start = {**{name: getattr(config, name) for name in cls.scoring_fields}, **five_tag_point}
        point, scored = _global_point(model, bundle, side, start, retune_trials, seed)
        say(f"{trained.name}: thresholds operating point {point} ({scored} points scored on validation)")
    if point:
        model = model.retune(**point)
    val_scores = model.score(bundle.val, side)
    chosen: Thresholds = (choose_global_threshold(val_scores, bundle.val.tags) if rule == "global"
                          else choose_thresholds(val_scores, bundle.val.tags, min_positives=min_positives))
    val = thresholded_per_label_metrics(val_scores, bundle.val.tags, chosen)
    test = thresholded_per_label_metrics(model.score(bundle.test, side), bundle.test.tags, chosen)
    return {
        "method": trained.name,
        "thr_label_precision": test.precision,
        "thr_label_recall": test.recall,
        "thr_label_f1": test.f1,
        "thr_n_plus": test.n_plus,
        "thr_labels_per_image": test.labels_per_image,
        "val_thr_label_f1": val.f1,
        "threshold_rule": rule,
        "n_own_thresholds": int(chosen.per_label.sum()),
        "operating_point": json.dumps(dict(sorted(point.items())), default=str),
        "points_scored": scored,
        "n_labels": test.n_labels,
        "threshold_fit": "train",
        "fit_seconds": seconds,
    }


def threshold_table(trained_models: Sequence[TrainedModel], bundle: SplitBundle, side: SideInfo, rule: str = "global",
                    min_positives: int = 2, retune_trials: int = 150, seed: int = 0, log: Log | None = None) -> pd.DataFrame:
    """The thresholds table: one row per method, ranked by test ``thr_label_f1``."""
    rows = [threshold_rows(t, bundle, side, rule, min_positives, retune_trials, seed, log) for t in trained_models]
    table = pd.DataFrame(rows).sort_values("thr_label_f1", ascending=False, kind="stable").reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table

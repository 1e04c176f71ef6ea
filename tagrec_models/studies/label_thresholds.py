"""Corel5k's second protocol as a results table (issue 13, item 4): per-label thresholds chosen
on validation, so an image gets every label whose score reaches that label's threshold (more or
fewer than 5), reported per label as P / R / F1 / N+ in its own table, never beside the 5-tag
columns (``evaluation.thresholds`` says why and how the thresholds are chosen).

Protocol, per method: the configuration the tuning engine chose (``TrainedModel.config``, at the
per-label operating point) is fitted once on the *training* posts only, so that its validation
scores are out of sample; the thresholds are chosen on those validation scores; the same fit
scores the test posts and the thresholds are applied. Test labels never reach the choice. (The
5-tag tables' final fits saw validation, so their validation scores could not choose
thresholds honestly.)
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import pandas as pd

from tagrec_models.artifacts import TrainedModel
from tagrec_models.bundle import SplitBundle
from tagrec_models.data import SideInfo, TrainingData
from tagrec_models.evaluation.thresholds import choose_thresholds, thresholded_per_label_metrics
from tagrec_models.recommenders.registry import get_recommender
from tagrec_models.studies.tuning import PER_LABEL

Log = Callable[[str], None]


def _tuples(value):
    return tuple(value) if isinstance(value, list) else value


def threshold_rows(trained: TrainedModel, bundle: SplitBundle, side: SideInfo, min_positives: int = 2,
                   log: Log | None = None) -> dict:
    """One row of the thresholds table for ``trained`` (see the module docstring)."""
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
    point = (getattr(trained, "operating_points", {}) or {}).get(PER_LABEL) or {}
    if point:
        model = model.retune(**point)
    chosen = choose_thresholds(model.score(bundle.val, side), bundle.val.tags, min_positives=min_positives)
    val = thresholded_per_label_metrics(model.score(bundle.val, side), bundle.val.tags, chosen)
    test = thresholded_per_label_metrics(model.score(bundle.test, side), bundle.test.tags, chosen)
    return {
        "method": trained.name,
        "thr_label_precision": test.precision,
        "thr_label_recall": test.recall,
        "thr_label_f1": test.f1,
        "thr_n_plus": test.n_plus,
        "thr_labels_per_image": test.labels_per_image,
        "val_thr_label_f1": val.f1,
        "n_own_thresholds": int(chosen.per_label.sum()),
        "n_labels": test.n_labels,
        "threshold_fit": "train",
        "fit_seconds": seconds,
    }


def threshold_table(trained_models: Sequence[TrainedModel], bundle: SplitBundle, side: SideInfo,
                    min_positives: int = 2, log: Log | None = None) -> pd.DataFrame:
    """The thresholds table: one row per method, ranked by test ``thr_label_f1``."""
    rows = [threshold_rows(t, bundle, side, min_positives, log) for t in trained_models]
    table = pd.DataFrame(rows).sort_values("thr_label_f1", ascending=False, kind="stable").reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table

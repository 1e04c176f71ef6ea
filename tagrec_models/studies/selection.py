"""Evaluation helpers and multi-seed runs of a recommender (paper 1, section 4; DESIGN.md,
"Evaluation protocol"). Hyper-parameters are chosen by the one tuning engine,
``studies.tuning`` (Optuna on validation).

* ``evaluate`` scores posts with a fitted model and computes P/R/F1@1..k_max (paper 1, eq. 12)
  with the other ranking metrics of ``metrics.metrics_at_k``; ``evaluate_scenarios`` does so
  per test scenario (``tagrec_models.evaluation.scenarios``).
* ``multi_seed`` fits a configuration once per seed, evaluates each fit on the test posts in
  both scenarios, and summarises mean and standard deviation across seeds (sample standard
  deviation, ddof=1; NaN for a single seed) together with training time.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.evaluation.metrics import AtK, metrics_at_k
from tagrec_models.evaluation.scenarios import METRICS, SCENARIOS, scenario_mask
from tagrec_models.recommenders.base import Recommender, RecommenderConfig

Log = Callable[[str], None]


def evaluate(model: Recommender, posts: Posts, side: SideInfo | None = None, k_max: int = 10) -> AtK:
    """Score ``posts`` with the fitted ``model`` and compute the metrics for K = 1..k_max."""
    if posts.n_posts == 0:
        raise ValueError("evaluate: there are no posts to evaluate")
    return metrics_at_k(model.score(posts, side), posts.tags, k_max=k_max)


def evaluate_scenarios(
    model: Recommender,
    test: Posts,
    train: Posts,
    side: SideInfo | None = None,
    k_max: int = 10,
    scenarios: Sequence[str] = SCENARIOS,
) -> dict[str, AtK | None]:
    """``evaluate`` per scenario; ``None`` for a scenario without a post with a true tag (for
    example no test image is new), so the caller can say so instead of inventing a number."""
    masks = {scenario: scenario_mask(test, train, scenario) for scenario in scenarios}
    scores = model.score(test, side)  # once: every scenario is a subset of the test posts
    out: dict[str, AtK | None] = {}
    for scenario, mask in masks.items():
        rows = np.flatnonzero(mask)
        truth = test.tags[rows]
        if truth.getnnz() == 0:
            out[scenario] = None
            continue
        out[scenario] = metrics_at_k(scores[rows], truth, k_max=k_max)
    return out


def _fit(model_cls: type[Recommender], config: RecommenderConfig, data: TrainingData, log: Log | None):
    model = model_cls(config)
    model.set_log(log)
    started = time.perf_counter()
    model.fit(data)
    return model, time.perf_counter() - started


# -- several seeds ----------------------------------------------------------------------------
def run_seeds(
    model_cls: type[Recommender],
    config: RecommenderConfig,
    data: TrainingData,
    test: Posts,
    side: SideInfo | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    k_max: int = 10,
    scenarios: Sequence[str] = SCENARIOS,
    log: Log | None = None,
    on_fitted: Callable[[int, Recommender], None] | None = None,
) -> pd.DataFrame:
    """One fit per seed (``config`` with ``seed`` replaced), evaluated on ``test`` in every
    scenario. Long format: one row per (seed, scenario, k) with the metrics of ``METRICS``,
    ``n_posts`` (posts with a true tag in that scenario), ``fit_seconds`` and
    ``score_seconds``. ``on_fitted(seed, model)`` lets the caller keep (save) each model.
    Scenarios without a post (no new image) give no rows."""
    if not seeds:
        raise ValueError("run_seeds needs at least one seed")
    side = side if side is not None else data.side
    frames = []
    for seed in seeds:
        if log is not None:
            log(f"{model_cls.name}: seed {seed}")
        model, fit_seconds = _fit(model_cls, dataclasses.replace(config, seed=seed), data, log)
        if on_fitted is not None:
            on_fitted(seed, model)
        started = time.perf_counter()
        results = evaluate_scenarios(model, test, data.train, side, k_max, scenarios)
        score_seconds = time.perf_counter() - started
        for scenario, result in results.items():
            if result is None:
                if log is not None:
                    log(f"{model_cls.name}: scenario {scenario!r} has no test post; skipped")
                continue
            frame = result.to_frame()
            frame.insert(0, "scenario", scenario)
            frame.insert(0, "seed", seed)
            frame["n_posts"] = result.n_posts
            frame["fit_seconds"] = fit_seconds
            frame["score_seconds"] = score_seconds
            frames.append(frame)
    if not frames:
        raise ValueError("no scenario had a test post with a true tag")
    return pd.concat(frames, ignore_index=True)


def summarise_seeds(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation (ddof=1) across seeds, per (scenario, k): columns
    ``<metric>_mean``, ``<metric>_std`` for every metric and for ``fit_seconds``, plus
    ``n_seeds`` and ``n_posts``."""
    measured = [*METRICS, "fit_seconds"]
    grouped = runs.groupby(["scenario", "k"], sort=False)
    summary = grouped[measured].agg(["mean", "std"])
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    summary["n_seeds"] = grouped["seed"].nunique()
    summary["n_posts"] = grouped["n_posts"].first()
    return summary.reset_index()


def multi_seed(
    model_cls: type[Recommender],
    config: RecommenderConfig,
    data: TrainingData,
    test: Posts,
    side: SideInfo | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    k_max: int = 10,
    scenarios: Sequence[str] = SCENARIOS,
    log: Log | None = None,
    on_fitted: Callable[[int, Recommender], None] | None = None,
) -> pd.DataFrame:
    """``summarise_seeds(run_seeds(...))``: one row per (scenario, k) with mean and std across
    ``seeds`` of P/R/F1@k (paper 1, eq. 12), mean per-post F1, NDCG, MAP and training time."""
    runs = run_seeds(model_cls, config, data, test, side, seeds, k_max, scenarios, log, on_fitted)
    return summarise_seeds(runs)

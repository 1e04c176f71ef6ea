"""Evaluation scenarios, hyper-parameter search on validation, and multi-seed runs (paper 1,
section 4; DESIGN.md, "Evaluation protocol").

* ``evaluate`` scores posts with a fitted model and computes P/R/F1@1..k_max (eq. 12) with the
  other ranking metrics of ``metrics.metrics_at_k``.
* Two test scenarios, as in paper 1's Figures 3 and 4: ``"all"`` test posts, and
  ``"new_images"``, the test posts whose image occurs in no training post (the factorisation
  models know nothing about such an image). On Flickr-style data every image belongs to one
  post, so every test image is new and the two scenarios coincide.
* ``grid_search`` fits one model per point of a grid and ranks them by a metric on the
  VALIDATION posts of ``TrainingData`` (never on test). Models with early stopping also use
  the validation posts to pick their epoch: the chosen configuration's validation score is
  therefore optimistic, which is why test numbers come from ``multi_seed`` on held-out posts.
* ``multi_seed`` fits a configuration once per seed, evaluates each fit on the test posts in
  both scenarios, and summarises mean and standard deviation across seeds (sample standard
  deviation, ddof=1; NaN for a single seed) together with training time.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.evaluation.metrics import AtK, metrics_at_k
from tagrec_models.recommenders.base import Recommender, RecommenderConfig

Log = Callable[[str], None]

SCENARIOS = ("all", "new_images")
METRICS = ("precision", "recall", "f1", "mean_post_f1", "ndcg", "map")
_ALIASES = {"p": "precision", "prec": "precision", "r": "recall", "f": "f1", "f1": "f1"}


# -- scenarios --------------------------------------------------------------------------------
def new_image_mask(test: Posts, train: Posts) -> np.ndarray:
    """Bool per test post: its image occurs in no training post (Figure 4's "new images")."""
    seen = np.zeros(max(test.n_images, train.n_images, 1), dtype=bool)
    seen[train.image] = True
    return ~seen[test.image]


def scenario_mask(test: Posts, train: Posts, scenario: str) -> np.ndarray:
    """Bool per test post: does it belong to ``scenario`` (``"all"`` or ``"new_images"``)."""
    if scenario == "all":
        return np.ones(test.n_posts, dtype=bool)
    if scenario == "new_images":
        return new_image_mask(test, train)
    raise ValueError(f"unknown scenario {scenario!r}; choose one of {SCENARIOS}")


def scenario_posts(test: Posts, train: Posts, scenario: str) -> Posts:
    """The test posts of ``scenario`` (``"all"`` returns ``test`` itself)."""
    mask = scenario_mask(test, train, scenario)
    return test if mask.all() and scenario == "all" else test.subset(np.flatnonzero(mask))


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


# -- metrics by name --------------------------------------------------------------------------
def parse_metric(metric: str) -> tuple[str, int]:
    """``"f1@5"`` -> ``("f1", 5)``; names: precision (p), recall (r), f1, mean_post_f1, ndcg,
    map."""
    name, sep, k = metric.strip().lower().partition("@")
    name = _ALIASES.get(name, name)
    if not sep or name not in METRICS or not k.isdigit() or int(k) < 1:
        raise ValueError(
            f"metric {metric!r} is not of the form NAME@K with NAME in {METRICS} and K >= 1"
        )
    return name, int(k)


def metric_value(result: AtK, metric: str) -> float:
    name, k = parse_metric(metric)
    values = getattr(result, name)
    if k > len(values):
        raise ValueError(f"metric {metric!r}: only {len(values)} cutoffs were computed")
    return float(values[k - 1])


# -- grid search ------------------------------------------------------------------------------
def expand_grid(base_config: RecommenderConfig, grid: dict[str, Iterable[Any]]) -> list[RecommenderConfig]:
    """Every combination of ``grid`` values applied to ``base_config``, in the grid's order
    (the last key varies fastest)."""
    fields = {f.name for f in dataclasses.fields(base_config)}
    unknown = sorted(set(grid) - fields)
    if unknown:
        raise ValueError(
            f"grid keys {unknown} are not fields of {type(base_config).__name__}; "
            f"fields: {sorted(fields)}"
        )
    keys = list(grid)
    values = [list(grid[k]) for k in keys]
    for key, options in zip(keys, values):
        if not options:
            raise ValueError(f"grid key {key!r} has no value to try")
    return [
        dataclasses.replace(base_config, **dict(zip(keys, combo)))
        for combo in itertools.product(*values)
    ]


def _fit(model_cls: type[Recommender], config: RecommenderConfig, data: TrainingData, log: Log | None):
    model = model_cls(config)
    if log is not None and hasattr(model, "set_log"):
        model.set_log(log)
    started = time.perf_counter()
    model.fit(data)
    return model, time.perf_counter() - started


def grid_search(
    model_cls: type[Recommender],
    base_config: RecommenderConfig,
    grid: dict[str, Iterable[Any]],
    data: TrainingData,
    metric: str = "f1@5",
    log: Log | None = None,
) -> tuple[RecommenderConfig, pd.DataFrame]:
    """Fit ``model_cls`` at every point of ``grid`` on ``data.train`` and rank by ``metric`` on
    ``data.val`` (required). Returns the best config (the first of equal scores, in grid order)
    and a table with one row per point: the grid values, the metric, ``fit_seconds``,
    ``epochs`` (length of the training history) and ``best``.
    """
    if data.val is None or data.val.n_posts == 0:
        raise ValueError("grid_search needs validation posts (TrainingData.val); it never uses test")
    if not isinstance(base_config, model_cls.Config):
        raise TypeError(
            f"base_config is a {type(base_config).__name__}, {model_cls.name} expects a "
            f"{model_cls.Config.__name__}"
        )
    _, k = parse_metric(metric)
    configs = expand_grid(base_config, grid)
    rows = []
    for number, config in enumerate(configs, 1):
        point = {key: getattr(config, key) for key in grid}
        if log is not None:
            log(f"grid_search {model_cls.name} {number}/{len(configs)}: {point}")
        model, seconds = _fit(model_cls, config, data, log)
        value = metric_value(evaluate(model, data.val, data.side, k_max=k), metric)
        rows.append({**point, metric: value, "fit_seconds": seconds, "epochs": len(model.training_history)})
    table = pd.DataFrame(rows)
    best = int(np.argmax(table[metric].to_numpy()))
    table["best"] = np.arange(len(table)) == best
    return configs[best], table


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
    ``seeds`` of P/R/F1@k (eq. 12), mean per-post F1, NDCG, MAP and training time."""
    runs = run_seeds(model_cls, config, data, test, side, seeds, k_max, scenarios, log, on_fitted)
    return summarise_seeds(runs)

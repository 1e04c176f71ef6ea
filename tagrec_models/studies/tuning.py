"""One tuning engine for every recommender: Optuna on the VALIDATION posts, never on test
(DESIGN.md, "Evaluation protocol": the same search budget for every model in a profile, each
metric family with its own operating point).

``tune`` runs two stages, both seeded (``TPESampler(seed=...)``), so the same data and seed give
the same trials:

1. **fit trials** (``n_trials``, the budget every model gets): Optuna draws a point of the
   model's ``search_space`` (``Recommender.search_space``; fit and scoring fields together),
   the model is fitted on ``data.train`` (epoch-based torch models early-stop on validation as
   always) and scored on ``data.val``. The objective is the per-image metric (``f1@5``: paper 1,
   eq. 12, which on Corel5k with 5 tags is paper 3's AF, eqs. 9-11); the per-label F1 at 5 tags
   (the Corel5k table) is recorded beside it. Trial 0 is the model's defaults (the paper's
   settings where they lie in the space), so tuning never does worse than the defaults on
   validation; the model's ``search_probes`` (hypotheses its docstring names) come next. Epoch-based models report their validation F1@5 after every epoch
   (``TorchRecommender.set_epoch_callback``) and ``MedianPruner`` stops trials that fall below
   the median of earlier trials at the same epoch.
2. **operating points** (only for models whose search space holds scoring-only fields,
   ``Recommender.scoring_fields``): the chosen fit is re-scored without a refit
   (``crossmodal.retune.Retunable.retune``) over those fields and one setting is chosen for the
   per-image metric, one for the per-label F1, each only where it beats the chosen fit as it
   is. One re-scoring gives both values, and no point is scored twice. A scoring grid of at
   most ``retune_trials`` points is searched exhaustively; a larger one gets ``retune_trials``
   TPE draws per family, each study starting from the chosen trial's values. Knobs that trade
   frequent against rare tags (``rare_power``, 2PKNN's k1/beta, a softmax temperature) thus get
   one setting for the per-image columns and one for the per-label columns, as the annotation
   literature does. A model without scoring fields uses its chosen fit trial for both families.

The result lists every trial (``TuningResult.trials``: family, stage, trial, params as JSON,
metric, value, chosen; exactly one chosen row per family), the chosen configuration, the
scoring-field values of each family and, for epoch-based models, the best epoch count of the
chosen trial (what a refit on train + validation trains for, with no early stopping).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import optuna
import pandas as pd

from tagrec_models.data import TrainingData
from tagrec_models.evaluation.metrics import metrics_at_k, per_label_metrics
from tagrec_models.evaluation.scenarios import metric_value, parse_metric
from tagrec_models.recommenders.base import Recommender, RecommenderConfig

Log = Callable[[str], None]

PER_IMAGE, PER_LABEL = "per_image", "per_label"
FAMILIES = (PER_IMAGE, PER_LABEL)
# The per-label metric family: F1 of the label-averaged P and R with 5 tags per image (the
# Corel5k table; DESIGN.md, "Evaluation protocol").
LABEL_K = 5
PER_LABEL_METRIC = f"label_f1@{LABEL_K}"
TRIAL_COLUMNS = ["family", "stage", "trial", "params", "metric", "value", "state", "chosen",
                 "fit_seconds", "best_epoch"]


@dataclass(frozen=True)
class TuningResult:
    """What ``tune`` chose and every trial it ran (see the module docstring)."""

    config: RecommenderConfig
    """The chosen configuration at the per-image operating point (what the final fit uses)."""
    operating_points: dict[str, dict[str, Any]]
    """Family -> scoring-field values to ``retune`` the final fit with (empty: as fitted)."""
    validation: dict[str, float]
    """Family -> the chosen setting's validation score (fit on train only)."""
    best_epoch: int | None
    """Epochs of the chosen trial's best validation F1@5 (epoch-based models), else None."""
    trials: pd.DataFrame = field(repr=False)
    """One row per (family, trial): ``TRIAL_COLUMNS``."""


def _plain(value: Any) -> Any:
    """A JSON / Optuna-categorical friendly form of a config value (tuples become lists)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _labels(values: Sequence[Any]) -> dict[str, Any]:
    """Optuna's categorical choices must be None/bool/int/float/str: other values (tuples of
    features) are offered by their JSON label and mapped back."""
    return {json.dumps(_plain(v)): v for v in values}


def _point_key(point: Mapping[str, Any]) -> str:
    """A search-space point as one string (the same point, the same key)."""
    return json.dumps({k: _plain(v) for k, v in point.items()}, sort_keys=True)


def _suggest(trial: optuna.Trial, space: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    point = {}
    for name, values in space.items():
        choices = _labels(values)
        point[name] = choices[trial.suggest_categorical(name, list(choices))]
    return point


def _enqueue(study: optuna.Study, space: Mapping[str, Sequence[Any]], start: Mapping[str, Any]) -> None:
    """Make ``start`` (restricted to values the space offers) the study's first trial."""
    params = {}
    for name, values in space.items():
        label = json.dumps(_plain(start.get(name)))
        if label in _labels(values):
            params[name] = label
    if params:
        study.enqueue_trial(params)


def check_space(model_cls: type[Recommender], space: Mapping[str, Sequence[Any]]) -> None:
    fields = {f.name for f in dataclasses.fields(model_cls.Config)}
    unknown = sorted(set(space) - fields)
    if unknown:
        raise ValueError(f"{model_cls.name}: search_space keys {unknown} are not Config fields")
    empty = sorted(name for name, values in space.items() if not list(values))
    if empty:
        raise ValueError(f"{model_cls.name}: search_space {empty} offer no value to try")


def _validation_scores(model: Recommender, data: TrainingData, metric: str) -> tuple[float, float]:
    """(per-image ``metric``, per-label F1 at 5 tags) of a fitted model on the validation posts."""
    _, k = parse_metric(metric)
    scores = model.score(data.val, data.side)
    per_image = metric_value(metrics_at_k(scores, data.val.tags, k_max=k), metric)
    per_label = per_label_metrics(scores, data.val.tags, k=LABEL_K).f1
    return float(per_image), float(per_label)


def grid_size(space: Mapping[str, Sequence[Any]]) -> int:
    """The number of points of a categorical search space (1 for an empty one)."""
    return math.prod(len(list(values)) for values in space.values())


@dataclass(frozen=True)
class OperatingPointSearch:
    """What the operating-point stage scored: per family, (number, point, validation value)."""

    how: str
    """"every point of the N-point grid" or "TPE, B draws per family over an N-point grid"."""
    rescorings: int
    """Distinct points re-scored (both families read every re-scoring; a repeat is free)."""
    candidates: dict[str, list[tuple[int, dict[str, Any], float]]]


def search_scoring_points(space: Mapping[str, Sequence[Any]], start: Mapping[str, Any], budget: int, seed: int,
                          objective: Callable[[dict[str, Any]], float],
                          study_name: str) -> list[tuple[int, dict[str, Any], float]]:
    """(number, point, value) of the points of a scoring-only grid that ``objective`` scored:
    every point, ``start`` first, when the grid has at most ``budget`` points (a sampler cannot
    then miss the best one); else ``budget`` TPE draws, the first at ``start``. Shared by the
    operating-point stage below and the thresholds protocol (``studies.label_thresholds``)."""
    size = grid_size(space)
    if size <= budget:
        names = list(space)
        grid = [dict(zip(names, values)) for values in itertools.product(*(space[n] for n in names))]
        start_key = _point_key({n: start.get(n) for n in names})
        ordered = sorted(grid, key=lambda p: _point_key(p) != start_key)  # stable: start, then grid order
        return [(number, point, float(objective(point))) for number, point in enumerate(ordered)]
    decode = {name: _labels(values) for name, values in space.items()}
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per draw would bury the run's own log
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=int(seed)),
                                study_name=study_name)
    _enqueue(study, space, start)
    study.optimize(lambda trial: objective(_suggest(trial, space)), n_trials=budget)
    return [(t.number, {n: decode[n][label] for n, label in t.params.items()}, float(t.value)) for t in study.trials]


def best_scoring_point(candidates: Sequence[tuple[int, dict[str, Any], float]]) -> tuple[int, dict[str, Any], float]:
    """The (number, point, value) of ``search_scoring_points`` with the highest value; a tie goes
    to the earliest point scored (``start`` comes first, so it keeps a tie)."""
    return max(candidates, key=lambda c: (c[2], -c[0]))


def _operating_point_search(model: Recommender, data: TrainingData, metric: str,
                            space: Mapping[str, Sequence[Any]], start: Mapping[str, Any],
                            budget: int, seed: int) -> OperatingPointSearch:
    """Re-score the chosen fit over its scoring-only fields, for both metric families.

    One re-scoring gives both families' values, so each point is scored at most once. A grid of
    at most ``budget`` points is scored exhaustively, ``start`` first: a sampler cannot then
    miss the best point (on Corel5k, 16 TPE draws over ``probe_knn_blend_stages``' 360 points
    stopped 0.02 per-label F1 below the grid's best). A larger grid gets ``budget`` TPE draws
    per family, each study starting from ``start``."""
    scored: dict[str, tuple[float, float]] = {}

    def rescore(point: Mapping[str, Any]) -> tuple[float, float]:
        key = _point_key(point)
        if key not in scored:
            scored[key] = _validation_scores(model.retune(**point), data, metric)
        return scored[key]

    size = grid_size(space)
    how = (f"every point of the {size}-point grid" if size <= budget
           else f"TPE, {budget} draws per family over a {size}-point grid")
    # Another seed than stage 1's for the TPE studies: the same seed would redraw stage 1's points.
    candidates = {family: search_scoring_points(space, start, budget, int(seed) + 1 + index,
                                                lambda point, index=index: rescore(point)[index],
                                                f"{type(model).name}-{family}")
                  for index, family in enumerate(FAMILIES)}
    return OperatingPointSearch(how, len(scored), candidates)


def tune(
    model_cls: type[Recommender],
    base_config: RecommenderConfig,
    data: TrainingData,
    n_trials: int,
    retune_trials: int = 0,
    seed: int = 0,
    metric: str = "f1@5",
    space: Mapping[str, Sequence[Any]] | None = None,
    log: Log | None = None,
) -> TuningResult:
    """Choose ``model_cls``'s configuration on ``data.val`` (required; ``data.test`` does not
    exist here by construction). See the module docstring for the two stages."""
    say = log or (lambda message: None)
    if data.val is None or data.val.n_posts == 0:
        raise ValueError("tune needs validation posts (TrainingData.val); it never uses test")
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    space = dict(model_cls.search_space if space is None else space)
    check_space(model_cls, space)
    base_config = dataclasses.replace(base_config, seed=int(seed))
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    # -- stage 1: fit trials ----------------------------------------------------------------
    fitted: dict[int, Recommender] = {}
    best_value = -np.inf

    seen: dict[str, optuna.trial.FrozenTrial | optuna.Trial] = {}

    def objective(trial: optuna.Trial) -> float:
        nonlocal best_value
        point = _suggest(trial, space)
        key = _point_key(point)
        if key in seen:  # TPE may draw a point again: its fit would be identical (same seed)
            earlier = seen[key]
            for name in ("fit_seconds", PER_LABEL_METRIC, "best_epoch"):
                trial.set_user_attr(name, earlier.user_attrs.get(name))
            trial.set_user_attr("repeat_of", earlier.number)
            return earlier.user_attrs["value"]
        config = dataclasses.replace(base_config, **point)
        model = model_cls(config)
        model.set_log(None)
        hook = getattr(model, "set_epoch_callback", None)
        if hook is not None:
            def report(epoch: int, value: float) -> None:
                trial.report(value, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"epoch {epoch}: validation F1@5 {value:.4f}")
            hook(report)
        started = time.perf_counter()
        model.fit(data)
        trial.set_user_attr("fit_seconds", time.perf_counter() - started)
        if hook is not None:
            hook(None)
        per_image, per_label = _validation_scores(model, data, metric)
        trial.set_user_attr(PER_LABEL_METRIC, per_label)
        trial.set_user_attr("best_epoch", model.best_epoch())
        say(f"tune {model_cls.name} trial {trial.number}: {point} -> {metric} {per_image:.4f}, "
            f"{PER_LABEL_METRIC} {per_label:.4f}")
        trial.set_user_attr("value", per_image)
        seen[key] = trial
        if per_image > best_value:  # keep only the best fit: the operating points re-score it
            best_value = per_image
            fitted.clear()
            fitted[trial.number] = model
        return per_image

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=int(seed)),
        # A trial is judged from epoch 6 on: slower learning rates start low (the openclipart
        # PITF study pruned every lr <= 0.02 trial at epoch 3 with a 2-epoch warm-up).
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=5),
        study_name=f"{model_cls.name}-fit",
    )
    _enqueue(study, space, dataclasses.asdict(base_config))
    for probe in model_cls.search_probes:  # the model's declared hypothesis tests come next
        _enqueue(study, space, {**dataclasses.asdict(base_config), **probe})
    # An empty space has one point: the model as it is (MP).
    study.optimize(objective, n_trials=n_trials if space else 1, catch=())
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"{model_cls.name}: no tuning trial completed")
    # The first of equal scores (Optuna's best_trial may pick any of a tie).
    chosen_trial = max(complete, key=lambda t: (t.value, -t.number))
    decode = {name: _labels(values) for name, values in space.items()}
    chosen_point = {name: decode[name][label] for name, label in chosen_trial.params.items()}
    config = dataclasses.replace(base_config, **chosen_point)
    model = fitted.get(chosen_trial.number)
    rows = []
    for trial in study.trials:
        point = {name: _plain(decode[name][label]) for name, label in trial.params.items()}
        common = {"stage": "fit", "trial": trial.number, "params": json.dumps(point, sort_keys=True),
                  "state": trial.state.name.lower(),
                  "fit_seconds": trial.user_attrs.get("fit_seconds", float("nan")),
                  "best_epoch": trial.user_attrs.get("best_epoch")}
        rows.append({**common, "family": PER_IMAGE, "metric": metric,
                     "value": trial.value if trial.value is not None else float("nan"),
                     "chosen": trial.number == chosen_trial.number})
        rows.append({**common, "family": PER_LABEL, "metric": PER_LABEL_METRIC,
                     "value": trial.user_attrs.get(PER_LABEL_METRIC, float("nan")), "chosen": False})

    # -- stage 2: one operating point per metric family -------------------------------------
    scoring_space = {name: values for name, values in space.items() if name in model_cls.scoring_fields}
    operating_points: dict[str, dict[str, Any]] = {PER_IMAGE: {}, PER_LABEL: {}}
    validation = {PER_IMAGE: float(chosen_trial.value),
                  PER_LABEL: float(chosen_trial.user_attrs[PER_LABEL_METRIC])}
    chosen_row = {PER_IMAGE: None, PER_LABEL: None}
    if scoring_space and retune_trials > 0 and model is not None:
        start = {name: getattr(config, name) for name in scoring_space}
        # Absolute values, so the final fit (made at the per-image point) can be re-scored at either.
        operating_points = {family: dict(start) for family in FAMILIES}
        searched = _operating_point_search(model, data, metric, scoring_space, start, retune_trials, seed)
        say(f"tune {model_cls.name} operating points: {searched.how}, {searched.rescorings} re-scorings")
        for family in FAMILIES:
            family_metric = metric if family == PER_IMAGE else PER_LABEL_METRIC
            candidates = searched.candidates[family]
            number, point, value = best_scoring_point(candidates)
            # The chosen fit as it is keeps a tie: a new operating point needs a strict gain.
            if value > validation[family]:
                operating_points[family] = dict(point)
                validation[family] = float(value)
                chosen_row[family] = number
            say(f"tune {model_cls.name} {family} operating point: {operating_points[family]} "
                f"-> {family_metric} {validation[family]:.4f}")
            for number, point, value in candidates:
                params = {**{k: _plain(v) for k, v in chosen_point.items()}, **{k: _plain(v) for k, v in point.items()}}
                rows.append({"family": family, "stage": "operating_point", "trial": number,
                             "params": json.dumps(params, sort_keys=True), "metric": family_metric,
                             "value": value, "state": "complete", "chosen": number == chosen_row[family],
                             "fit_seconds": 0.0, "best_epoch": None})
    trials = pd.DataFrame(rows, columns=TRIAL_COLUMNS)
    for family in FAMILIES:
        if chosen_row[family] is None:  # the chosen fit trial, as fitted, is this family's choice
            mark = (trials["family"] == family) & (trials["stage"] == "fit") & (trials["trial"] == chosen_trial.number)
            trials.loc[mark, "chosen"] = True
        else:
            trials.loc[(trials["family"] == family) & (trials["stage"] == "fit"), "chosen"] = False
    if operating_points[PER_IMAGE]:
        config = dataclasses.replace(config, **operating_points[PER_IMAGE])
    return TuningResult(
        config=config,
        operating_points=operating_points,
        validation=validation,
        best_epoch=chosen_trial.user_attrs.get("best_epoch"),
        trials=trials,
    )

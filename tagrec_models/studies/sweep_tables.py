"""Paper 2's parameter studies (Figures 9-11) as the tables the results assets store.

``sweeps`` holds the studies themselves (one setting at a time, on the posts it is given);
this module runs them on the validation posts, and where a test column is wanted also on the
test posts, and lays the two side by side: one row per (setting, k), every metric column
prefixed ``val_`` or ``test_``, and a ``chosen`` flag on the rows of the setting picked on
VALIDATION (never on test). Models are always fitted on the training posts only.

* ``lambda_table`` (Figure 10, section 5.2): paper 2, eq. 5's lambda from 0.1 to 0.9.
* ``stage_table`` (Figure 9, section 5.1): the conv stage whose VLAD codes give the most
  relevant visual neighbours; codebooks fitted on training images only, as the ``vlad``
  asset does.
* ``n_tags_table`` (Figure 11, section 5.3): metrics against the number of recommended tags
  for the four UG/noUG x NW/noNW policies.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from tagrec_models.data import Posts, SideInfo, TrainingData
from tagrec_models.evaluation.scenarios import parse_metric
from tagrec_models.features.vlad import VladConfig, fit_codebook
from tagrec_models.studies.sweeps import LAMBDAS, Relevance, best_value, compare_models, sweep_lambda, sweep_stage
from tagrec_models.recommenders.registry import get_recommender
from tagrec_models.recommenders.weighted_walk import ABLATIONS

Log = Callable[[str], None]
NEIGHBOUR_MEASURES = ("neighbour_ap", "neighbour_jaccard")
"""Measures of the chosen neighbours themselves (Figure 10's y axis): one value per setting."""


def selection_measure(metric: str, k_max: int) -> tuple[str, int]:
    """``"ndcg@10"`` -> ``("ndcg", 10)``; a neighbour measure (``"neighbour_ap"``), the same at
    every k, -> ``(name, k_max)``. The cutoff must be one the sweep computes."""
    if metric in NEIGHBOUR_MEASURES:
        return metric, k_max
    try:
        name, k = parse_metric(metric)
    except ValueError as error:
        raise ValueError(f"{error}, or one of {NEIGHBOUR_MEASURES}") from None
    if k > k_max:
        raise ValueError(f"selection metric {metric!r}: the sweep computes k up to {k_max} only")
    return name, k


def cutoff(frame: pd.DataFrame, k: int) -> int:
    """``k``, or the largest k the frame has when that is smaller: with fewer tags in the
    vocabulary than k, every tag is ranked by then (metrics_at_k stops there)."""
    return min(int(k), int(frame["k"].max()))


def _side_by_side(val: pd.DataFrame, test: pd.DataFrame | None, keys: Sequence[str]) -> pd.DataFrame:
    measures = [c for c in val.columns if c not in keys]
    table = val.rename(columns={c: f"val_{c}" for c in measures})
    if test is not None:
        test = test.rename(columns={c: f"test_{c}" for c in measures})
        table = table.merge(test, on=list(keys), how="inner", validate="one_to_one")
    return table


def lambda_table(
    fit_data: TrainingData,
    val: Posts,
    test: Posts,
    side: SideInfo,
    *,
    model: str = "ug_nw",
    lambdas: Sequence[float] = LAMBDAS,
    metric: str = "ndcg@10",
    k_max: int = 10,
    relevance: Relevance = "tags",
    log: Log | None = None,
) -> pd.DataFrame:
    """Figure 10: one row per (``lam``, ``k``) with the recommendation metrics and the
    neighbour relevance (``neighbour_ap``, ``neighbour_jaccard``, see ``sweeps``) on the
    validation posts (``val_*``) and on the test posts (``test_*``); ``chosen`` marks the
    lambda with the best validation ``metric`` (of equal values, the one nearest the model's
    default lambda)."""
    measure, at_k = selection_measure(metric, k_max)
    if fit_data.val is not None:
        raise ValueError("lambda_table: fit_data must hold the training posts only (val=None)")
    say = log or (lambda message: None)
    say(f"lambda sweep on {val.n_posts} validation posts")
    on_val = sweep_lambda(model, fit_data, val, side, lambdas=lambdas, k_max=k_max, relevance=relevance, log=log)
    say(f"lambda sweep on {test.n_posts} test posts")
    on_test = sweep_lambda(model, fit_data, test, side, lambdas=lambdas, k_max=k_max, relevance=relevance, log=log)
    chosen = best_lambda(on_val, measure, cutoff(on_val, at_k), default=_default_lam(model))
    say(f"chosen lambda {chosen} (validation {measure} at k = {cutoff(on_val, at_k)})")
    table = _side_by_side(on_val, on_test, keys=("lam", "k"))
    table["chosen"] = table["lam"] == chosen
    return table


def _default_lam(model: str) -> float:
    return float(get_recommender(model).Config().lam)


def best_lambda(frame: pd.DataFrame, measure: str, at_k: int, default: float) -> float:
    """The lambda with the best ``measure`` at ``k = at_k``; among equal values the one nearest
    the model's default (the paper's 0.4), since a tie gives no reason to move from it."""
    rows = frame[frame["k"] == at_k]
    tied = rows.loc[rows[measure] == rows[measure].max(), "lam"].astype(float)
    return min(tied, key=lambda lam: (abs(lam - default), lam))


def stage_table(
    descriptors_by_stage: Mapping[str, np.ndarray],
    fit_data: TrainingData,
    val: Posts,
    side: SideInfo,
    *,
    vlad: VladConfig = VladConfig(),
    model: str = "noug_nw",
    retrieval_k: int = 15,
    k_max: int = 10,
    log: Log | None = None,
) -> pd.DataFrame:
    """Figure 9: one row per (``stage``, ``k``) on the validation posts. Per stage a VLAD
    codebook (``vlad``) is fitted on the training images only, training and validation images
    are encoded, and ``sweeps.sweep_stage`` gives ``retrieval_map`` (section 5.1: MAP of the
    top ``retrieval_k`` training images by Euclidean distance, relevant = shares a tag) and
    the recommendations of ``model`` on that stage's codes. ``chosen`` marks the stage with
    the best ``retrieval_map``, the paper's criterion and the ``vlad`` asset's.

    ``descriptors_by_stage``: ``[n_images, positions, channels]`` per stage, rows in image
    index order. Test images get no code (zero rows): nothing here queries them."""
    if not descriptors_by_stage:
        raise ValueError("stage_table: no stage given")
    if fit_data.val is not None:
        raise ValueError("stage_table: fit_data must hold the training posts only (val=None)")
    say = log or (lambda message: None)
    n_images = fit_data.train.n_images
    train_images = np.unique(fit_data.train.image)
    val_images = np.setdiff1d(np.unique(val.image), train_images)
    held_out = np.setdiff1d(np.arange(n_images), train_images)
    encoded = np.concatenate([train_images, val_images])
    frames = []
    for stage, descriptors in descriptors_by_stage.items():
        if descriptors.shape[0] != n_images:
            raise ValueError(f"stage_table: stage {stage!r} has {descriptors.shape[0]} rows for {n_images} images")
        codebook = fit_codebook(descriptors, train_images=train_images, held_out_images=held_out,
                                stage=stage, config=vlad, log=log)
        codes = np.zeros((n_images, codebook.dim), dtype=np.float32)
        codes[encoded] = codebook.encode(descriptors, encoded)
        stage_side = SideInfo(features={stage: codes}, image_groups=side.image_groups)
        frame = sweep_stage(model, replace(fit_data, side=stage_side), val, stage_side, [stage],
                            k_max=k_max, retrieval_k=retrieval_k, log=log)
        at_k = frame[frame["k"] == cutoff(frame, k_max)].iloc[0]
        say(f"stage {stage}: retrieval MAP@{retrieval_k} {at_k['retrieval_map']:.4f}, "
            f"NDCG@{int(at_k['k'])} {at_k['ndcg']:.4f}")
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    chosen = best_value(table, "stage", metric="retrieval_map", at_k=cutoff(table, k_max))
    table = _side_by_side(table, None, keys=("stage", "k"))
    table["chosen"] = table["stage"] == chosen
    return table


def ablations(with_groups: bool) -> tuple[str, ...]:
    """Figure 12's policies a dataset can run: all four with groups, the noUG two without."""
    return tuple(name for name, (groups, _) in ABLATIONS.items() if with_groups or not groups)


def n_tags_table(
    fit_data: TrainingData,
    val: Posts,
    test: Posts,
    side: SideInfo,
    *,
    models: Sequence[str],
    lam: float | None = None,
    k_max: int = 10,
    log: Log | None = None,
) -> pd.DataFrame:
    """Figure 11: one row per (``model``, ``k``) for k = 1..k_max recommended tags, metrics on
    validation (``val_*``) and test (``test_*``) posts. ``lam`` (paper 2, eq. 5) is set in every model
    that uses groups (None: the model's default); column ``lam`` records it (NaN for the
    models that rank by visual similarity alone)."""
    if not models:
        raise ValueError("n_tags_table: no model given")
    if fit_data.val is not None:
        raise ValueError("n_tags_table: fit_data must hold the training posts only (val=None)")
    say = log or (lambda message: None)
    fitted, lams = {}, {}
    for name in models:
        model_cls = get_recommender(name)
        config = model_cls.Config()
        if "lam" not in {f.name for f in fields(config)}:
            raise ValueError(f"n_tags_table: {name} has no paper 2, eq. 5 lambda; it is not one of paper 2's policies")
        if lam is not None:
            config = replace(config, lam=float(lam))
        say(f"fitting {name}")
        fitted[name] = model_cls(config).fit(fit_data)
        lams[name] = config.lam if getattr(config, "use_groups", False) else float("nan")
    table = _side_by_side(compare_models(fitted, val, side, k_max=k_max, log=log),
                          compare_models(fitted, test, side, k_max=k_max, log=log), keys=("model", "k"))
    table.insert(1, "lam", table["model"].map(lams))
    return table


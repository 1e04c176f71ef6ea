"""Repeated splits (issue 12, part 4): the split seed as a dimension of a per-user
(leave-posts-out) dataset, so a comparison's uncertainty covers which posts were held out.

Split 0 is the dataset's own split (recipe seed ``s``: the split every other asset uses);
split ``i`` re-splits the same filtered assignments with recipe seed ``s + i`` (paper 1,
section 4.1, deterministic from the seed: ``preprocess.splits.split_per_user``), with its own
validation part. On each extra split every method is tuned on that split's validation with the
one tuning engine (``experiment.train_model`` -> ``studies.tuning.tune``, the same budget),
refitted per seed and scored on that split's test posts; what is kept is the per-post records
(``experiment.PostRecords``) and the validation score, cached per (split, method) in a folder
keyed by everything that determines them (recipe, budget, seeds), so that asking for one more
split computes that split only, and a changed budget or recipe never reuses a stale result.

The pooled table (``pooled_table``): per method the F1@5 and per-label F1 averaged over splits
(each the mean over seeds), the 95% bootstrap interval resampling test posts within each split
(``evaluation.significance``), and the paired randomisation test against the method with the
best validation score averaged over splits, Holm-corrected.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import duckdb
import pandas as pd

from tagrec_models.bundle import build_bundle
from tagrec_models.evaluation.scenarios import SCENARIOS
from tagrec_models.evaluation.significance import Settings
from tagrec_models.experiment import PostRecords, evaluate_with_posts, held_out_truth, side_info_from, train_model
from tagrec_models.preprocess.duplicates import apply_duplicate_grouping
from tagrec_models.preprocess.recipes import Recipe
from tagrec_models.preprocess.splits import split_per_user
from tagrec_models.reporting import significance_columns

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Budget:
    """What each extra split's models get: the tuning budget and the seeds (the profile's)."""

    n_trials: int = 1
    retune_trials: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    final_fit: str = "train+val"
    tuning_seed: int = 0


@dataclasses.dataclass(frozen=True)
class SplitResult:
    """One split's per-post records of every method, its test truth and validation scores."""

    split: int
    records: PostRecords
    truth: pd.DataFrame
    validation: dict[str, float]
    computed: tuple[str, ...]  # the methods fitted in this call (the others came from the cache)


def split_seed(recipe: Recipe, split: int) -> int:
    """The recipe seed of split ``split`` (split 0 is the dataset's own split)."""
    return int(recipe.seed) + int(split)


def cache_key(recipe: Recipe, budget: Budget, split: int, method: str, params: Mapping[str, Any] | None) -> str:
    """A digest of everything a cached (split, method) result depends on."""
    text = json.dumps({"recipe": dataclasses.asdict(recipe), "budget": dataclasses.asdict(budget),
                       "split": split, "method": method, "params": dict(params or {})},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_split(
    split: int,
    recipe: Recipe,
    filtered: pd.DataFrame,
    images: pd.DataFrame,
    methods: Sequence[str],
    provided_side: Mapping[str, Any],
    budget: Budget,
    cache_dir: str | Path,
    dataset: str,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    log: Log | None = None,
) -> SplitResult:
    """Split ``split`` (>= 1) of the filtered assignments, and every method tuned, fitted and
    scored on it, each (split, method) read from ``cache_dir`` when it was computed before
    under the same recipe, budget and ``params`` (config overrides per method)."""
    say = log or (lambda message: None)
    if split < 1:
        raise ValueError("split 0 is the dataset's own split: its records come from the leaderboard")
    if recipe.split != "per_user":
        raise ValueError(f"recipe {recipe.name!r} splits {recipe.split!r}: repeated splits need a per-user split")
    seeded = dataclasses.replace(recipe, seed=split_seed(recipe, split))
    con = duckdb.connect()
    try:
        result = split_per_user(con, filtered, seeded, log=say)
    finally:
        con.close()
    result = apply_duplicate_grouping(result, images, seeded, log=say)
    bundle = build_bundle(result.part("train"), result.part("val"), result.part("test"))
    side = None
    per_post, predictions, validation, computed = [], [], {}, []
    for method in methods:
        digest = cache_key(recipe, budget, split, method, (params or {}).get(method))
        folder = Path(cache_dir) / f"split{split}" / f"{method}.{digest}"
        if (folder / "done.json").is_file():
            per_post.append(pd.read_parquet(folder / "per_post.parquet"))
            predictions.append(pd.read_parquet(folder / "predictions.parquet"))
            validation[method] = json.loads((folder / "done.json").read_text())["validation"]
            continue
        if side is None:  # aligned to this split's vocabulary once, only when something is fitted
            side = side_info_from(bundle, provided_side)
        say(f"split {split} (recipe seed {seeded.seed}): tuning and fitting {method}")
        trained = train_model(method, dataset, bundle.training_data(side), folder / "models", seeds=budget.seeds,
                              n_trials=budget.n_trials, retune_trials=budget.retune_trials,
                              final_fit=budget.final_fit, tuning_seed=budget.tuning_seed,
                              overrides=(params or {}).get(method), log=say)
        _, records = evaluate_with_posts(trained, bundle, side, {"test": SCENARIOS})
        score = (trained.validation_scores or {}).get("per_image")
        folder.mkdir(parents=True, exist_ok=True)
        records.per_post.to_parquet(folder / "per_post.parquet", index=False)
        records.predictions.to_parquet(folder / "predictions.parquet", index=False)
        # Written last: a split interrupted half-way is recomputed, never half-read.
        (folder / "done.json").write_text(json.dumps({"validation": score, "recipe_seed": seeded.seed}))
        per_post.append(records.per_post)
        predictions.append(records.predictions)
        validation[method] = score
        computed.append(method)
    return SplitResult(split=split, records=PostRecords.concat([PostRecords(a, b) for a, b in zip(per_post, predictions)]),
                       truth=held_out_truth(bundle), validation=validation, computed=tuple(computed))


def pooled_table(results: Sequence[SplitResult], settings: Settings = Settings()) -> pd.DataFrame:
    """One row per method over every split of ``results`` (module docstring): n_splits,
    val_f1@5 (mean over splits), f1@5 and label_f1@5 (mean over splits of the mean over seeds)
    with their pooled intervals, p_vs_best / tied_with_best (F1@5) and the per-label test."""
    per_post = pd.concat([r.records.per_post.assign(split=r.split) for r in results], ignore_index=True)
    predictions = pd.concat([r.records.predictions.assign(split=r.split) for r in results], ignore_index=True)
    truth = pd.concat([r.truth.assign(split=r.split) for r in results], ignore_index=True)
    methods = list(dict.fromkeys(per_post["method"]))
    validation = pd.DataFrame([{"method": m, "split": r.split, "value": r.validation.get(m)}
                               for r in results for m in methods])
    val = validation.groupby("method", sort=False)["value"].mean()
    table = pd.DataFrame({"method": methods,
                          "n_splits": [int(per_post.loc[per_post["method"] == m, "split"].nunique()) for m in methods],
                          "val_f1@5": [val.get(m) for m in methods]})
    best = str(val.idxmax()) if val.notna().any() else None
    table["chosen_on_validation"] = table["method"] == best
    table = significance_columns(table, {"f1@5": "f1@5", "label_f1@5": "label_f1@5"},
                                 {"per_post": per_post, "predictions": predictions, "truth": truth},
                                 best, settings, tested=("f1@5", "label_f1@5"), estimates=True)
    order = ["method", "n_splits", "val_f1@5", "f1@5", "f1@5_ci_low", "f1@5_ci_high", "p_vs_best",
             "tied_with_best", "label_f1@5", "label_f1@5_ci_low", "label_f1@5_ci_high", "label_f1@5_p_vs_best",
             "label_f1@5_tied_with_best", "chosen_on_validation"]
    table = table[order].sort_values("f1@5", ascending=False, kind="stable").reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table

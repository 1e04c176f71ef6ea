"""Repeated splits (issue 12, part 4): every method of a per-user dataset compared over ``R``
resampled splits, each tuned and fitted on its own split with the one tuning engine.

The Dagster expression is a loop inside one asset with per-(split, method) results cached
under the data home, not partitions: the graph keeps one node per model (partitioning the
splits would partition every model, feature-independent results asset and check, and the
leaderboard would have to read every partition), `make demo` stays one unpartitioned run
with R = 1 (split 0 is the graph's own split, read from `results.per_post`: no extra fit),
and raising `n_splits` computes only the new splits (the cache is keyed by recipe, budget
and split, so a changed budget never reuses a stale fit).
"""


import dataclasses
import json
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.common import SignificanceConfig, key, md_table, progress, publish_post_records, results_table_asset
from assets.datasets import DatasetSpec
from assets.inputs import bundle_of, side_ins
from assets.papers import dataset_methods
from assets.recipe_settings import RecipeSettings
from assets.resources import DataHomeResource
from tagrec_models import reporting
from tagrec_models.experiment import PostRecords, held_out_truth
from tagrec_models.recommenders.registry import get_recommender
from tagrec_models.repeated_splits import Budget, SplitResult, pooled_table, run_split, split_seed

DESCRIPTION = (
    "Repeated splits (issue 12): every method over `n_splits` leave-posts-out splits of the same "
    "filtered posts (split 0 = the graph's own split; split i = recipe seed + i, each with its own "
    "validation part), tuned per split with the same engine and budget, F1@5 and per-label F1 "
    "averaged over splits with 95% bootstrap intervals resampling test posts within each split, "
    "and paired randomisation tests against the method best on validation (mean over splits), "
    "Holm-corrected. A loop with per-(split, method) results cached under the data home, not "
    "partitions: the graph stays one node per model, `make demo` one run (quick profile: 1 split, "
    "nothing extra fitted), and adding a split computes only that split. Per-post rows of every "
    "split go to `results.per_post` (column `split`)."
)


class RepeatedSplitsConfig(RecipeSettings):
    """The recipe (as the splits asset's), how many splits, each extra split's budget and the tests."""

    n_splits: int = Field(default=1, description="Number of splits R (split 0 is the graph's own; quick profile 1, full 5).")
    n_trials: int = Field(default=2, description="Tuning fits per model on each extra split's validation (the profile's budget).")
    retune_trials: int = Field(default=150, description="Operating-point budget on each extra split (exhaustive over a scoring grid of at most this many points, else this many TPE draws per family).")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="Seeds fitted per model on each extra split.")
    final_fit: str = Field(default="train+val", description="Final fit of each extra split: 'train+val' or 'train'.")
    tuning_seed: int = Field(default=0, description="Seed of the tuning engine's sampler on each extra split.")
    params_json: str = Field(default="{}", description="JSON object: method -> config overrides the extra splits' fits start from (as a model asset's `params`; e.g. epoch caps).")
    significance: SignificanceConfig = Field(default_factory=SignificanceConfig, description="Resamples, level, seed and alpha of the intervals and tests.")


def overrides(params_json: str) -> dict[str, dict[str, Any]]:
    """``params_json`` as config overrides per method, lists turned back into the tuples the
    models' ``Config`` fields hold."""
    try:
        given = json.loads(params_json or "{}")
    except json.JSONDecodeError as error:
        raise dg.Failure(f"repeated_splits: params_json is not JSON: {error}") from error
    out = {}
    for method, values in given.items():
        defaults = dataclasses.asdict(get_recommender(method).Config())
        out[method] = {k: tuple(v) if isinstance(defaults.get(k), tuple) and isinstance(v, list) else v
                       for k, v in values.items()}
    return out


def split_zero(data_home: DataHomeResource, dataset: str) -> SplitResult:
    """Split 0 as the leaderboard left it: its per-post records, predicted tags and validation
    scores from DuckDB (no model is loaded or scored again)."""
    with data_home.store.reader() as con:
        per_post = con.execute("SELECT method, seed, post, metric, value FROM results.per_post "
                               "WHERE dataset = ? AND split = 0", [dataset]).df()
        tags = con.execute("SELECT method, seed, post, position, tag FROM results.per_post_tags "
                           "WHERE dataset = ? AND split = 0", [dataset]).df()
        board = con.execute('SELECT method, "val_f1@5" FROM results.leaderboard WHERE dataset = ?', [dataset]).df()
    return SplitResult(split=0, records=PostRecords(per_post, tags), truth=None,
                       validation=dict(zip(board["method"], board["val_f1@5"])), computed=())


def repeated_splits_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    methods = dataset_methods(spec)
    needs = {need for m in methods for need in get_recommender(m).needs}
    ins = {"filtered_assignments": dg.AssetIn(key(spec, "filtered_assignments")),
           "images": dg.AssetIn(key(spec, "images")), "test": dg.AssetIn(key(spec, "test")),
           "train": dg.AssetIn(key(spec, "train")), "val": dg.AssetIn(key(spec, "val")),
           "leaderboard": dg.AssetIn(key(spec, "leaderboard")), **side_ins(spec, needs)}

    @results_table_asset(spec, "repeated_splits", ins, DESCRIPTION)
    def repeated_splits(context: dg.AssetExecutionContext, config: RepeatedSplitsConfig,
                        data_home: DataHomeResource, **inputs: Any):
        recipe = config.recipe(spec)
        zero = split_zero(data_home, spec.name)
        results = [SplitResult(0, zero.records, held_out_truth(bundle_of(inputs)), zero.validation, ())]
        provided = {name[len("side_"):]: value for name, value in inputs.items() if name.startswith("side_")}
        budget = Budget(n_trials=config.n_trials, retune_trials=config.retune_trials, seeds=tuple(config.seeds),
                        final_fit=config.final_fit, tuning_seed=config.tuning_seed)
        cache = data_home.home.dataset_dir(spec.name) / "repeated_splits"
        for split in range(1, config.n_splits):
            results.append(run_split(split, recipe, inputs["filtered_assignments"], inputs["images"], methods,
                                     provided, budget, cache, spec.name, params=overrides(config.params_json),
                                     log=progress(context)))
        table = pooled_table(results, config.significance.settings())
        publish_post_records(data_home.store, spec.name, {
            "per_post": pd.concat([r.records.per_post.assign(split=r.split) for r in results], ignore_index=True),
            "predictions": pd.concat([r.records.predictions.assign(split=r.split) for r in results], ignore_index=True)})
        computed = {r.split: list(r.computed) for r in results[1:]}
        return dg.Output(table, metadata={
            "table": md_table(reporting.interval_view(table)),
            "n_splits": config.n_splits,
            "recipe_seeds": dg.MetadataValue.json([split_seed(recipe, r.split) for r in results]),
            "fitted_now": dg.MetadataValue.json(computed),
        })

    return repeated_splits

"""Corel5k's per-label thresholds table (issue 13, item 4): its own results table,
``results.label_thresholds``, never mixed into the 5-tag tables (``tagrec_models.studies.
label_thresholds``). Built for datasets without users (Corel5k), whose literature reports it."""

from typing import Literal, Optional

import dagster as dg
from pydantic import Field

from assets.common import md_table, progress, results_table_asset
from assets.datasets import DatasetSpec
from assets.inputs import bundle_and_side, comparison_ins
from assets.papers import dataset_methods
from tagrec_models.studies.label_thresholds import threshold_table

DESCRIPTION = (
    "Corel5k's second protocol: each tag given to every test image whose score reaches the tag's "
    "threshold, chosen on validation from a fit of the tuned configuration on train only. Rule "
    "`global` (default): one threshold on the logit-adjusted score, chosen with the model's "
    "scoring fields (its operating point for this protocol); rule `per_label`: a threshold per tag "
    "with >= min_positives validation images, else the global one. Per-label P / R / F1 / N+ and "
    "the mean number of tags per image. Compare with threshold-based records only (DESIGN.md), "
    "never with the 5-tag table."
)


class ThresholdSettings(dg.Config):
    methods: Optional[list[str]] = Field(default=None, description="Methods to include; None: every model of the dataset.")
    rule: Literal["global", "per_label"] = Field(default="global", description=(
        "global: one threshold for every tag, chosen on validation with the model's scoring fields "
        "(a per-tag threshold fitted to a tag's few validation images overfits: on Corel5k 0.430 test "
        "per-label F1 against 0.470, benchmarks/thresholds_corel5k.py); per_label: a threshold per tag."))
    min_positives: int = Field(default=2, description="Rule per_label: validation images a tag needs for its own threshold (else the global one).")
    retune_trials: int = Field(default=150, description=(
        "Rule global: scoring-field points searched with the threshold (the whole grid when it has at most "
        "this many points, else this many TPE draws), as the tuning engine's operating points."))
    seed: int = Field(default=0, description="Seed of the TPE draws when a model's scoring grid exceeds retune_trials.")


def label_thresholds_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    methods = dataset_methods(spec)

    @results_table_asset(spec, "label_thresholds", comparison_ins(spec, methods), DESCRIPTION)
    def label_thresholds(context: dg.AssetExecutionContext, config: ThresholdSettings, **inputs):
        bundle, side = bundle_and_side(inputs)
        chosen = [m for m in methods if config.methods is None or m in config.methods]
        table = threshold_table([inputs[f"model_{m}"] for m in chosen], bundle, side, rule=config.rule,
                                min_positives=config.min_positives, retune_trials=config.retune_trials,
                                seed=config.seed, log=progress(context))
        return dg.Output(table, metadata={"table": md_table(table),
                                          "protocol": f"thresholds chosen on validation, rule {config.rule} (fit on train)"})

    return label_thresholds

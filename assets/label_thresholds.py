"""Corel5k's per-label thresholds table (issue 13, item 4): its own results table,
``results.label_thresholds``, never mixed into the 5-tag tables (``tagrec_models.studies.
label_thresholds``). Built for datasets without users (Corel5k), whose literature reports it."""

from typing import Optional

import dagster as dg
from pydantic import Field

from assets.common import md_table, progress, results_table_asset
from assets.datasets import DatasetSpec
from assets.inputs import bundle_and_side, comparison_ins
from assets.papers import dataset_methods
from tagrec_models.studies.label_thresholds import threshold_table

DESCRIPTION = (
    "Corel5k's second protocol: each tag given to every test image whose score reaches the tag's "
    "threshold, chosen on validation (per tag where it has >= min_positives validation images, "
    "else one global threshold), from a fit of the tuned configuration on train only; per-label "
    "P / R / F1 / N+ and the mean number of tags per image. Compare with threshold-based records "
    "only (DESIGN.md), never with the 5-tag table."
)


class ThresholdSettings(dg.Config):
    methods: Optional[list[str]] = Field(default=None, description="Methods to include; None: every model of the dataset.")
    min_positives: int = Field(default=2, description="Validation images a tag needs for its own threshold (else the global one).")


def label_thresholds_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    methods = dataset_methods(spec)

    @results_table_asset(spec, "label_thresholds", comparison_ins(spec, methods), DESCRIPTION)
    def label_thresholds(context: dg.AssetExecutionContext, config: ThresholdSettings, **inputs):
        bundle, side = bundle_and_side(inputs)
        chosen = [m for m in methods if config.methods is None or m in config.methods]
        table = threshold_table([inputs[f"model_{m}"] for m in chosen], bundle, side,
                                min_positives=config.min_positives, log=progress(context))
        return dg.Output(table, metadata={"table": md_table(table), "protocol": "per-label thresholds chosen on validation (fit on train)"})

    return label_thresholds

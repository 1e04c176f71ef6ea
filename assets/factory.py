"""One asset graph per dataset, built from its spec (DESIGN.md, "Data flow")."""

from __future__ import annotations

import dagster as dg

from assets.datasets import DatasetSpec
from assets.features import feature_assets
from assets.finetuned import finetuned_asset
from assets.ingest import ingest_assets
from assets.label_thresholds import label_thresholds_asset
from assets.leaderboard import leaderboard_asset
from assets.leakage import leakage_checks
from assets.papers import paper_assets
from assets.preprocess import preprocess_assets
from assets.repeated_splits import repeated_splits_asset
from assets.splits import split_assets
from assets.vocabulary import vocabulary_assets


def dataset_assets(spec: DatasetSpec) -> list[dg.AssetsDefinition]:
    return [
        *ingest_assets(spec),
        *vocabulary_assets(spec),
        *preprocess_assets(spec),
        *split_assets(spec),
        *feature_assets(spec),
        # The fine-tuned embedding (issue 13): read by an annotation-only model, so built where
        # those are (datasets without users)
        *([] if spec.has_users else [finetuned_asset(spec)]),
        *paper_assets(spec),
        leaderboard_asset(spec),
        # Repeated leave-posts-out splits (issue 12): per-user datasets only; Corel5k's fixed
        # split gets its uncertainty from resampling test images.
        *([repeated_splits_asset(spec)] if spec.has_users else []),
        # Corel5k's second protocol (issue 13): datasets without users only (the literature's)
        *([] if spec.has_users else [label_thresholds_asset(spec)]),
        *leakage_checks(spec),
    ]

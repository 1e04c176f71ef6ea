"""Small helpers every asset module uses: keys, logging callbacks, check results, metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.datasets import DatasetSpec
from tagrec_models import reporting
from tagrec_models.evaluation.significance import Settings
from tagrec_models.bundle import SplitBundle
from tagrec_models.experiment import PostRecords, held_out_truth
from tagrec_models.storage.duckdb_store import DuckDBStore


# Every pool a step queues on (dagster.yaml's `default_limit` applies to each). On PostgreSQL a
# deployment sets each one explicitly, once, after `dagster instance migrate` (deploy/README.md):
# Dagster creates a pool's limit row on its first use, and two runs that first use a pool at the
# same moment (a backfill's shards) race to insert it, one failing with a UniqueViolation on
# concurrency_limits (dagster-io/dagster#33552, open); an explicitly set limit skips that path.
POOLS = ("duckdb", "flickr", "gpu")

# The steps that use an accelerator (feature extraction, torch training) queue on the `gpu`
# pool (dagster.yaml) and, under the Kubernetes executor (pipelines/k8s.py), run in a pod that
# asks for one GPU through this tag; the in-process and Celery executors ignore it.
GPU_STEP_TAGS = {"dagster-k8s/config": {"container_config": {"resources": {
    "requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"},
    "limits": {"nvidia.com/gpu": "1"}}}}}


def key(spec: DatasetSpec, name: str) -> dg.AssetKey:
    return dg.AssetKey([spec.name, name])


def results_table_asset(spec: DatasetSpec, name: str, ins: dict[str, dg.AssetIn], description: str):
    """``@dg.asset`` for a results table: the IO manager writes the returned frame to Parquet,
    the view ``<dataset>.<name>`` and this dataset's rows of ``results.<name>`` in DuckDB, so
    it queues in the ``duckdb`` pool (one writer at a time, dagster.yaml)."""
    return dg.asset(key=key(spec, name), group_name=spec.name, ins=ins, description=description,
                    metadata={"results_table": name}, kinds={"duckdb", "pandas"}, pool="duckdb")


def progress(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> Callable[[str], None]:
    """A ``log`` callback for the library that writes to the Dagster run log."""
    return lambda message: context.log.info(message)


def jsonable(value: Any) -> Any:
    """Turn numpy scalars and tuples inside check details into plain JSON values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def check_result(
    asset_key: dg.AssetKey, name: str, outcome: tuple[bool, dict], description: str = ""
) -> dg.AssetCheckResult:
    passed, details = outcome
    metadata: dict[str, Any] = {"details": dg.MetadataValue.json(jsonable(details))}
    if description:
        metadata["rule"] = description
    return dg.AssetCheckResult(
        asset_key=asset_key, check_name=name, passed=bool(passed), metadata=metadata
    )


def md_table(frame: pd.DataFrame, floatfmt: str = ".4f") -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.to_markdown(index=False, floatfmt=floatfmt))


def plot_metadata(name: str, png: bytes, path: Path, alt: str = "") -> dict[str, dg.MetadataValue]:
    """Write the plot to ``path`` and return it as metadata: the image inline (``name``) and
    the file (``<name>_file``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return {name: dg.MetadataValue.md(reporting.markdown_image(png, alt or name.replace("_", " "))),
            f"{name}_file": dg.MetadataValue.path(str(path))}


class SignificanceConfig(dg.Config):
    """The intervals and paired tests of a results table (``tagrec_models.evaluation.significance``)."""

    n_resamples: int = Field(default=2000, description="Bootstrap resamples of the test posts for each interval, and random swaps for each paired randomisation test.")
    level: float = Field(default=0.95, description="Coverage of the percentile bootstrap intervals (0.95: the 2.5th and 97.5th percentiles).")
    seed: int = Field(default=0, description="Seed of the resamples and swaps (a table is reproducible).")
    alpha: float = Field(default=0.05, description="A method is tied with the best when its Holm-adjusted p-value is at least this.")

    def settings(self) -> Settings:
        return Settings(n_resamples=self.n_resamples, level=self.level, seed=self.seed, alpha=self.alpha)


SPLIT = 0
"""The ``split`` of the per-post rows: the recipe's one split (its seed drives it). Repeated
splits (issue 12, part 4) would number theirs from here."""


def post_records(records: Sequence[PostRecords], bundle: SplitBundle) -> dict[str, pd.DataFrame]:
    """The per-post frames of the methods' ``experiment.PostRecords`` with their ``split``, and
    the test posts' true tags: what ``reporting.significance_columns`` reads."""
    merged = PostRecords.concat(records)
    return {"per_post": merged.per_post.assign(split=SPLIT),
            "predictions": merged.predictions.assign(split=SPLIT),
            "truth": held_out_truth(bundle).assign(split=SPLIT)}


PER_POST_COLUMNS = ["split", "method", "seed", "post", "metric", "value"]
PER_POST_TAG_COLUMNS = ["split", "method", "seed", "post", "position", "tag"]


def publish_post_records(store: DuckDBStore, dataset: str, kept: dict[str, pd.DataFrame]) -> None:
    """``results.per_post`` and ``results.per_post_tags``: every method's per-post values and
    predicted tags, so a user can run their own test in SQL (this dataset's rows replaced)."""
    store.replace_result_rows("per_post", dataset, kept["per_post"][PER_POST_COLUMNS])
    store.replace_result_rows("per_post_tags", dataset, kept["predictions"][PER_POST_TAG_COLUMNS])

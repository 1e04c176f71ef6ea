"""Small helpers every asset module uses: keys, logging callbacks, check results, metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import dagster as dg
import pandas as pd

from assets.datasets import DatasetSpec
from tagrec_models import reporting


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

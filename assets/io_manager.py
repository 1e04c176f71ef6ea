"""Parquet + DuckDB IO manager: every DataFrame an asset returns becomes a Parquet file under
the data home (the source of truth) and a DuckDB view ``<dataset>.<asset>``; every other value
(a small handle naming files an asset wrote itself: feature arrays, model files) is pickled.

An asset whose table is too large to pass through pandas (``filtered_assignments``: 100M rows
at scale) writes the Parquet file itself with DuckDB and returns a ``ParquetTable`` naming it:
the file is moved into the table's place and published like a returned DataFrame's, and
downstream assets read it back as a DataFrame all the same.

A partitioned asset (the feature shards) returns a dict ``{partition key: value}`` for the
partitions its step materialised; each value is pickled on its own
(``<asset>__<partition>.pkl``), and a step that reads several partitions (every shard, for the
assets that must see every image) gets the dict back.

An asset whose definition metadata names ``results_table`` also replaces its dataset's rows in
``results.<results_table>``, so that one DuckDB table holds every dataset's results, and its
column schema carries every column's meaning (``assets.table_schema``).
"""

from __future__ import annotations

import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq

from assets.table_schema import column_schema_metadata
from tagrec_models.paths import DataHome
from tagrec_models.storage.atomic import atomic_path, staged_path
from tagrec_models.storage.duckdb_store import DuckDBStore

PREVIEW_ROWS = 8


def markdown_preview(frame: pd.DataFrame, rows: int = PREVIEW_ROWS) -> str:
    return frame.head(rows).to_markdown(index=False) if len(frame) else "(no rows)"


def table_schema(frame: pd.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name=str(c), type=str(t)) for c, t in frame.dtypes.items()]
    )


@dataclass(frozen=True)
class ParquetTable:
    """A table an asset wrote as a Parquet file itself (DuckDB ``COPY``), to be published as the
    asset's table: the IO manager moves ``path`` into place, so it should lie in the data home
    (same file system: a rename, not a copy)."""

    path: Path


class TagrecIOManager(dg.ConfigurableIOManager):
    root: str

    def _home(self) -> DataHome:
        return DataHome(Path(self.root).resolve())

    @staticmethod
    def _names(key: dg.AssetKey) -> tuple[str, str]:
        return key.path[0], "__".join(key.path[1:])

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        dataset, name = self._names(context.asset_key)
        if context.has_asset_partitions:
            keys = context.asset_partition_keys
            if not isinstance(obj, dict) or set(obj) != set(keys):
                raise dg.Failure(f"{context.asset_key.to_user_string()}: a partitioned asset returns "
                                 f"{{partition: value}} for its partitions {keys}")
            for partition in keys:
                self._pickle(self._home().object_path(dataset, f"{name}__{partition}"), obj[partition])
            return
        if isinstance(obj, ParquetTable):
            self._publish_file(context, dataset, name, Path(obj.path))
            return
        if isinstance(obj, pd.DataFrame):
            path = self._home().table_path(dataset, name)
            store = DuckDBStore(self._home().duckdb_path, log=context.log.info)
            results_table = (context.definition_metadata or {}).get("results_table")
            table = None if results_table is None else str(getattr(results_table, "value", results_table))
            # The new Parquet file replaces the old one only together with the DuckDB write
            # (view, results rows): a busy or failing database leaves both as they were.
            with staged_path(path) as staged:
                obj.to_parquet(staged, index=False)
                store.publish_parquet(dataset, name, staged, path, table, obj if table else None)
            # A results table's columns are measures a reader must be told the meaning of.
            schema = (column_schema_metadata(obj) if results_table is not None
                      else {"dagster/column_schema": table_schema(obj)})
            context.add_output_metadata(
                {
                    "dagster/row_count": len(obj),
                    **schema,
                    "preview": dg.MetadataValue.md(markdown_preview(obj)),
                    "parquet": dg.MetadataValue.path(str(path)),
                    "duckdb_view": f'"{dataset}"."{name}"',
                }
            )
        else:
            self._pickle(self._home().object_path(dataset, name), obj)

    def _publish_file(self, context: dg.OutputContext, dataset: str, name: str, written: Path) -> None:
        """Publish a Parquet file an asset wrote (``ParquetTable``) as its table, reading only
        the file's footer and first rows for the metadata."""
        if (context.definition_metadata or {}).get("results_table") is not None:
            raise dg.Failure(f"{context.asset_key.to_user_string()}: a results table is returned as a DataFrame")
        path = self._home().table_path(dataset, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        store = DuckDBStore(self._home().duckdb_path, log=context.log.info)
        if os.stat(written).st_dev == os.stat(path.parent).st_dev:
            store.publish_parquet(dataset, name, written, path)
        else:  # written outside the data home's file system: copied beside the table first
            with staged_path(path) as staged:
                shutil.copyfile(written, staged)
                store.publish_parquet(dataset, name, staged, path)
            written.unlink()
        parquet = pq.ParquetFile(path)
        head = next(parquet.iter_batches(batch_size=PREVIEW_ROWS), None)
        preview = parquet.schema_arrow.empty_table() if head is None else head
        context.add_output_metadata(
            {
                "dagster/row_count": parquet.metadata.num_rows,
                "dagster/column_schema": dg.TableSchema(
                    columns=[dg.TableColumn(name=f.name, type=str(f.type)) for f in parquet.schema_arrow]
                ),
                "preview": dg.MetadataValue.md(markdown_preview(preview.to_pandas())),
                "parquet": dg.MetadataValue.path(str(path)),
                "duckdb_view": f'"{dataset}"."{name}"',
            }
        )

    @staticmethod
    def _pickle(path: Path, obj: Any) -> None:
        with atomic_path(path) as tmp:
            with tmp.open("wb") as handle:
                pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)

    def load_input(self, context: dg.InputContext) -> Any:
        dataset, name = self._names(context.asset_key)
        if context.has_asset_partitions:
            found = {}
            for partition in context.asset_partition_keys:
                path = self._home().object_path(dataset, f"{name}__{partition}")
                if not path.exists():
                    raise dg.Failure(f"partition {partition} of {context.asset_key.to_user_string()} has "
                                     f"never been materialised (no {path}): materialise it first")
                with path.open("rb") as handle:
                    found[partition] = pickle.load(handle)
            return found
        parquet = self._home().table_path(dataset, name)
        pickled = self._home().object_path(dataset, name)
        if parquet.exists():
            return pd.read_parquet(parquet)
        if pickled.exists():
            with pickled.open("rb") as handle:
                return pickle.load(handle)
        raise dg.Failure(
            f"asset {context.asset_key.to_user_string()} has never been materialised "
            f"(no {parquet} or {pickled}): materialise it first"
        )

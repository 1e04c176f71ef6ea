"""Parquet + DuckDB IO manager: every DataFrame an asset returns becomes a Parquet file under
the data home (the source of truth) and a DuckDB view ``<dataset>.<asset>``; every other value
(a small handle naming files an asset wrote itself: feature arrays, model files) is pickled.

An asset whose definition metadata names ``results_table`` also replaces its dataset's rows in
``results.<results_table>``, so that one DuckDB table holds every dataset's results, and its
column schema carries every column's meaning (``assets.table_schema``).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from assets.table_schema import column_schema_metadata
from tagrec_models.paths import DataHome
from tagrec_models.storage.atomic import atomic_path, write_parquet
from tagrec_models.storage.duckdb_store import DuckDBStore

PREVIEW_ROWS = 8


def markdown_preview(frame: pd.DataFrame, rows: int = PREVIEW_ROWS) -> str:
    return frame.head(rows).to_markdown(index=False) if len(frame) else "(no rows)"


def table_schema(frame: pd.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name=str(c), type=str(t)) for c, t in frame.dtypes.items()]
    )


class TagrecIOManager(dg.ConfigurableIOManager):
    root: str

    def _paths(self, key: dg.AssetKey) -> tuple[str, str, Path]:
        dataset, name = key.path[0], "__".join(key.path[1:])
        folder = DataHome(Path(self.root).resolve()).dataset_dir(dataset)
        return dataset, name, folder

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        dataset, name, folder = self._paths(context.asset_key)
        if isinstance(obj, pd.DataFrame):
            path = write_parquet(obj, folder / "tables" / f"{name}.parquet")
            store = DuckDBStore(DataHome(Path(self.root).resolve()).duckdb_path)
            store.create_parquet_view(dataset, name, path)
            results_table = (context.definition_metadata or {}).get("results_table")
            if results_table is not None:
                table = getattr(results_table, "value", results_table)
                store.replace_result_rows(str(table), dataset, obj)
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
            with atomic_path(folder / "objects" / f"{name}.pkl") as tmp:
                with tmp.open("wb") as handle:
                    pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)

    def load_input(self, context: dg.InputContext) -> Any:
        _, name, folder = self._paths(context.asset_key)
        parquet = folder / "tables" / f"{name}.parquet"
        pickled = folder / "objects" / f"{name}.pkl"
        if parquet.exists():
            return pd.read_parquet(parquet)
        if pickled.exists():
            with pickled.open("rb") as handle:
                return pickle.load(handle)
        raise dg.Failure(
            f"asset {context.asset_key.to_user_string()} has never been materialised "
            f"(no {parquet.name} or {pickled.name} under {folder}): materialise it first"
        )

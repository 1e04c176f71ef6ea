"""The project's DuckDB database: views over Parquet files, and result tables.

Parquet files are the source of truth; DuckDB holds views over them (one schema per dataset)
and the ``results`` schema. DuckDB allows one writing process at a time, so every write goes
through ``DuckDBStore.writer()``, which takes an exclusive file lock beside the database
first: two pipeline steps never race, and a step waits (bounded) instead of failing when
another holds the database.
"""

from __future__ import annotations

import fcntl
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import duckdb
import pandas as pd

RESULTS_SCHEMA = "results"


class DatabaseBusyError(RuntimeError):
    pass


def quote(identifier: str) -> str:
    """Quote a DuckDB identifier (schema, view or table name)."""
    return '"' + identifier.replace('"', '""') + '"'


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class DuckDBStore:
    path: Path
    lock_timeout_s: float = 600.0

    @contextmanager
    def writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with lock_path.open("a") as lock:
            deadline = time.monotonic() + self.lock_timeout_s
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise DatabaseBusyError(
                            f"another tagrec step held {self.path} for over "
                            f"{self.lock_timeout_s:.0f} s"
                        ) from None
                    time.sleep(0.2)
            try:
                con = self._connect(read_only=False)
                try:
                    yield con
                finally:
                    con.close()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def reader(self) -> duckdb.DuckDBPyConnection:
        if not self.path.exists():
            raise FileNotFoundError(f"no tagrec database at {self.path}: materialise a dataset first")
        return self._connect(read_only=True)

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        try:
            return duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as error:
            # Another program (a `duckdb` shell, a notebook) has the file open for writing.
            raise DatabaseBusyError(
                f"cannot open {self.path}: another process holds it ({error}). "
                "Close other duckdb sessions on this file and retry."
            ) from error

    def create_parquet_view(self, schema: str, name: str, parquet: Path) -> None:
        with self.writer() as con:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
            con.execute(
                f"CREATE OR REPLACE VIEW {quote(schema)}.{quote(name)} AS "
                f"SELECT * FROM read_parquet({sql_string(str(parquet.resolve()))})"
            )

    def replace_result_rows(self, table: str, dataset: str, frame: pd.DataFrame) -> None:
        """Replace the rows of ``dataset`` in ``results.<table>`` with ``frame`` (plus a
        ``dataset`` column), creating the table on first use. A schema change (new columns)
        rebuilds the table, keeping other datasets' rows where columns agree."""
        frame = frame.copy()
        frame.insert(0, "dataset", dataset)
        target = f"{quote(RESULTS_SCHEMA)}.{quote(table)}"
        with self.writer() as con:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(RESULTS_SCHEMA)}")
            con.register("incoming", frame)
            exists = con.execute(
                "SELECT count(*) FROM information_schema.tables "
                "WHERE table_schema = ? AND table_name = ?",
                [RESULTS_SCHEMA, table],
            ).fetchone()[0]
            if exists:
                old_cols = [r[0] for r in con.execute(f"DESCRIBE {target}").fetchall()]
                if old_cols != list(frame.columns):
                    kept = con.execute(
                        f"SELECT * FROM {target} WHERE dataset <> ?", [dataset]
                    ).df()
                    combined = pd.concat([kept, frame], ignore_index=True)[list(frame.columns)]
                    con.register("combined", combined)
                    con.execute(f"CREATE OR REPLACE TABLE {target} AS SELECT * FROM combined")
                    con.unregister("combined")
                else:
                    con.execute("BEGIN")
                    con.execute(f"DELETE FROM {target} WHERE dataset = ?", [dataset])
                    con.execute(f"INSERT INTO {target} SELECT * FROM incoming")
                    con.execute("COMMIT")
            else:
                con.execute(f"CREATE TABLE {target} AS SELECT * FROM incoming")
            con.unregister("incoming")

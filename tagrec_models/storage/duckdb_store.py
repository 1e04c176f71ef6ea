"""The project's DuckDB database: views over Parquet files, and result tables.

Parquet files are the source of truth; DuckDB holds views over them (one schema per dataset)
and the ``results`` schema. DuckDB allows one writing process at a time, so every write goes
through ``DuckDBStore.writer()``, which takes an exclusive file lock beside the database
first: two pipeline steps never race, and a step waits (bounded) instead of failing when
another holds the database. A program outside tagrec (a ``duckdb`` shell, a notebook) that
has the file open is waited for too: opening the database is retried with a growing pause
for up to ``busy_timeout_s`` (readers such as ``tagrec suggest`` and the demo's summary as
well as writers), then a ``DatabaseBusyError`` says who to close.

``publish_parquet`` keeps a table's Parquet file and the database in step: the new file is
moved into place only once the database is open for writing, and put back when a statement
fails, so a failed write never leaves a replaced file beside an old results table.
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import duckdb
import pandas as pd

from tagrec_models.storage.atomic import atomic_path

RESULTS_SCHEMA = "results"


class DatabaseBusyError(RuntimeError):
    pass


def quote(identifier: str) -> str:
    """Quote a DuckDB identifier (schema, view or table name)."""
    return '"' + identifier.replace('"', '""') + '"'


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def copy_to_parquet(con: duckdb.DuckDBPyConnection, query: str, path: str | Path) -> Path:
    """Write the rows of ``query`` to the Parquet file ``path`` with DuckDB's ``COPY``,
    atomically (``storage.atomic``: a temporary file beside ``path``, moved into place when
    the copy has finished). The rows stream from the query into the file, so a result of 100M
    rows never becomes a Python object; an ``ORDER BY`` in ``query`` is the order of the file's
    rows (DuckDB keeps an ordered query's order in ``COPY``, also without
    ``preserve_insertion_order``)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        con.execute(f"COPY ({query}) TO {sql_string(str(tmp))} (FORMAT parquet)")
    return path


@dataclass(frozen=True)
class DuckDBStore:
    """``lock_timeout_s``: how long a writer waits for another tagrec writer;
    ``busy_timeout_s``: how long opening the database waits for a program outside tagrec that
    holds it; ``log``: told once per wait, so a waiting step says why it waits."""

    path: Path
    lock_timeout_s: float = 600.0
    busy_timeout_s: float = 60.0
    log: Callable[[str], None] | None = None

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
        """Open the database, waiting with a growing pause (0.1 s doubling to 2 s) while
        another process holds it, for at most ``busy_timeout_s``."""
        deadline = time.monotonic() + self.busy_timeout_s
        pause = 0.1
        told = False
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as error:
                if "lock" not in str(error).lower():
                    raise
                if time.monotonic() + pause > deadline:
                    # Another program (a `duckdb` shell, a notebook) has the file open for writing.
                    raise DatabaseBusyError(
                        f"cannot open {self.path}: another process holds it ({error}); waited "
                        f"{self.busy_timeout_s:g} s. Close other duckdb sessions on this file and retry."
                    ) from error
                if not told and self.log is not None:
                    self.log(
                        f"{self.path} is held by another process; waiting up to "
                        f"{self.busy_timeout_s:g} s for it"
                    )
                    told = True
                time.sleep(pause)
                pause = min(2.0, pause * 2)

    def publish_parquet(
        self,
        schema: str,
        name: str,
        staged: Path,
        final: Path,
        results_table: str | None = None,
        frame: pd.DataFrame | None = None,
    ) -> None:
        """Move the Parquet file ``staged`` to ``final``, point the view ``schema.name`` at it
        and (``results_table``) replace the dataset's rows of ``results.<results_table>`` with
        ``frame``, keeping file and database in step: ``final`` is replaced only once the
        database is open for writing (a busy database leaves the old file), and put back when
        a statement fails."""
        with self.writer() as con:
            with _backup(final) as backup:
                os.replace(staged, final)
                try:
                    with _transaction(con):
                        self._create_parquet_view(con, schema, name, final)
                        if results_table is not None:
                            assert frame is not None, "results_table needs the frame"
                            self._replace_result_rows(con, results_table, schema, frame)
                except BaseException:
                    if backup is not None:
                        os.replace(backup, final)
                    else:
                        final.unlink(missing_ok=True)
                    raise

    def create_parquet_view(self, schema: str, name: str, parquet: Path) -> None:
        with self.writer() as con:
            self._create_parquet_view(con, schema, name, parquet)

    @staticmethod
    def _create_parquet_view(con: duckdb.DuckDBPyConnection, schema: str, name: str, parquet: Path) -> None:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
        con.execute(
            f"CREATE OR REPLACE VIEW {quote(schema)}.{quote(name)} AS "
            f"SELECT * FROM read_parquet({sql_string(str(parquet.resolve()))})"
        )

    def replace_result_rows(self, table: str, dataset: str, frame: pd.DataFrame) -> None:
        """Replace the rows of ``dataset`` in ``results.<table>`` with ``frame`` (plus a
        ``dataset`` column), creating the table on first use. A schema change (new columns)
        rebuilds the table, keeping other datasets' rows where columns agree."""
        with self.writer() as con, _transaction(con):
            self._replace_result_rows(con, table, dataset, frame)

    @staticmethod
    def _replace_result_rows(con: duckdb.DuckDBPyConnection, table: str, dataset: str, frame: pd.DataFrame) -> None:
        frame = frame.copy()
        frame.insert(0, "dataset", dataset)
        target = f"{quote(RESULTS_SCHEMA)}.{quote(table)}"
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
                con.execute(f"DELETE FROM {target} WHERE dataset = ?", [dataset])
                con.execute(f"INSERT INTO {target} SELECT * FROM incoming")
        else:
            con.execute(f"CREATE TABLE {target} AS SELECT * FROM incoming")
        con.unregister("incoming")


@contextmanager
def _backup(path: Path) -> Iterator[Path | None]:
    """A hard link to the current ``path`` (``None`` when there is none), so it can be put back;
    named and locked like ``tagrec_models.storage.atomic``'s temporary files, so one left by a
    killed process is swept and a live one is not."""
    if not path.exists():
        yield None
        return
    backup = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    os.link(path, backup)
    handle = os.open(backup, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield backup
    finally:
        try:
            backup.unlink(missing_ok=True)
        finally:
            os.close(handle)


@contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One DuckDB transaction: committed when the block succeeds, rolled back when it fails."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")

"""Guards the DuckDB store: Parquet-backed views, per-dataset result rows, and the write lock."""

from __future__ import annotations

import threading

import duckdb
import pandas as pd
import pytest

from tagrec_models.storage.atomic import write_parquet
from tagrec_models.storage.duckdb_store import DatabaseBusyError, DuckDBStore


def test_view_reads_the_parquet_file(tmp_path):
    store = DuckDBStore(tmp_path / "t.duckdb")
    path = write_parquet(pd.DataFrame({"a": [1, 2, 3]}), tmp_path / "x.parquet")
    store.create_parquet_view("my data", "x", path)
    with store.reader() as con:
        assert con.execute('SELECT sum(a) FROM "my data".x').fetchone()[0] == 6


def test_result_rows_are_replaced_per_dataset(tmp_path):
    store = DuckDBStore(tmp_path / "t.duckdb")
    store.replace_result_rows("scores", "a", pd.DataFrame({"m": ["x"], "f1": [0.1]}))
    store.replace_result_rows("scores", "b", pd.DataFrame({"m": ["y"], "f1": [0.2]}))
    store.replace_result_rows("scores", "a", pd.DataFrame({"m": ["z", "w"], "f1": [0.3, 0.4]}))
    with store.reader() as con:
        rows = con.execute("SELECT dataset, m FROM results.scores ORDER BY m").fetchall()
    assert rows == [("a", "w"), ("b", "y"), ("a", "z")]


def test_new_result_columns_rebuild_the_table_and_keep_other_datasets(tmp_path):
    store = DuckDBStore(tmp_path / "t.duckdb")
    store.replace_result_rows("scores", "a", pd.DataFrame({"m": ["x"]}))
    store.replace_result_rows("scores", "b", pd.DataFrame({"m": ["y"], "extra": [1.0]}))
    with store.reader() as con:
        frame = con.execute("SELECT * FROM results.scores ORDER BY dataset").df()
    assert list(frame.columns) == ["dataset", "m", "extra"]
    assert list(frame["dataset"]) == ["a", "b"]


def test_writers_in_two_threads_take_turns(tmp_path):
    store = DuckDBStore(tmp_path / "t.duckdb")
    errors: list[BaseException] = []

    def write(name: str) -> None:
        try:
            for i in range(5):
                store.replace_result_rows("t", name, pd.DataFrame({"i": [i]}))
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with store.reader() as con:
        assert con.execute("SELECT count(*) FROM results.t").fetchone()[0] == 2


def test_a_foreign_writer_gives_a_clear_error(tmp_path):
    path = tmp_path / "t.duckdb"
    duckdb.connect(str(path)).close()
    store = DuckDBStore(path)
    # A second read-write connection inside this process is allowed by DuckDB, so simulate
    # a foreign process by holding the file open read-only and writing from a subprocess.
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb,time; c=duckdb.connect({str(path)!r}); time.sleep(20)"],
    )
    try:
        import time

        time.sleep(1.5)
        with pytest.raises(DatabaseBusyError, match="another process holds it"):
            with store.writer():
                pass
    finally:
        holder.kill()
        holder.wait()

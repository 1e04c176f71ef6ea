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


HOLDER = (
    "import duckdb, sys\n"
    "con = duckdb.connect(sys.argv[1])\n"
    "print('holding', flush=True)\n"
    "sys.stdin.readline()  # until told to let go\n"
)


@pytest.fixture()
def holder(tmp_path):
    """Another process that holds ``t.duckdb`` open for writing until ``release()``."""
    import subprocess
    import sys

    path = tmp_path / "t.duckdb"
    duckdb.connect(str(path)).close()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"

    def release() -> None:
        proc.stdin.write("go\n")
        proc.stdin.flush()
        proc.wait(timeout=30)

    proc.release = release
    proc.path = path
    yield proc
    proc.kill()
    proc.wait()


def test_a_foreign_writer_gives_a_clear_error_after_a_bounded_wait(holder):
    store = DuckDBStore(holder.path, busy_timeout_s=0.5)
    for open_it in (store.writer, store.reader):
        with pytest.raises(DatabaseBusyError, match=r"another process holds it .*waited 0.5 s"):
            with open_it():
                pass


def test_readers_and_writers_wait_for_a_foreign_holder_and_say_so(holder):
    told: list[str] = []

    def on_wait(message: str) -> None:
        told.append(message)
        holder.release()  # the other program closes its session while we wait

    for open_it in ("reader", "writer"):
        store = DuckDBStore(holder.path, busy_timeout_s=120, log=on_wait)
        with getattr(store, open_it)() as con:
            assert con.execute("SELECT 42").fetchone() == (42,)
        if open_it == "reader":
            assert told == [f"{holder.path} is held by another process; waiting up to 120 s for it"]


def test_publish_leaves_parquet_and_database_in_step_when_the_write_fails(holder, tmp_path):
    final = tmp_path / "tables" / "photos.parquet"
    old = pd.DataFrame({"photo_id": ["a"]})
    new = pd.DataFrame({"photo_id": ["a", "b"]})
    write_parquet(old, final)
    staged = tmp_path / "tables" / "staged.parquet"
    # The database is busy: the old file stays, the new one is not moved into place.
    new.to_parquet(staged, index=False)
    with pytest.raises(DatabaseBusyError):
        DuckDBStore(holder.path, busy_timeout_s=0.3).publish_parquet("toy", "photos", staged, final)
    pd.testing.assert_frame_equal(pd.read_parquet(final), old)
    holder.release()
    store = DuckDBStore(holder.path)
    store.publish_parquet("toy", "photos", staged, final, "leaderboard", old)
    # The results write fails after the file was replaced (a results frame that already has a
    # ``dataset`` column is refused): the old file comes back and the database keeps its rows.
    write_parquet(old, final)
    new.to_parquet(staged, index=False)
    with pytest.raises(ValueError, match="dataset"):
        store.publish_parquet("toy", "photos", staged, final, "leaderboard", pd.DataFrame({"dataset": [1]}))
    pd.testing.assert_frame_equal(pd.read_parquet(final), old)
    with store.reader() as con:
        assert con.execute("SELECT count(*) FROM results.leaderboard").fetchone() == (1,)
    assert sorted(p.name for p in final.parent.iterdir()) == ["photos.parquet"]

"""Guards the demo's closing output (``pipelines.demo.summary``) on a small materialised data
home: each dataset's results tables are printed, the closing hint names the tables that dataset
really has (Corel5k has no paper-1 table) with a query that runs, and a process that runs the
pipeline ends without nanobind's "leaked instances" noise (pipelines/shutdown.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipelines.demo import closing_hint, summary
from tagrec_models import reporting
from tagrec_models.leaderboard import leaderboard_table
from tagrec_models.storage.atomic import write_parquet
from tagrec_models.storage.duckdb_store import DuckDBStore
from test_leaderboard import runs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def home(data_home) -> Path:
    """openclipart with papers 1 and 3 and a leaderboard; corel5k (no users) with paper 3 and a
    leaderboard only; both with their filtered assignments as a view over Parquet."""
    store = DuckDBStore(data_home / "tagrec.duckdb")
    test = runs({("mp", 0): 0.3, ("mp", 1): 0.4, ("jec", 0): 0.5, ("jec", 1): 0.6})
    val = runs({("mp", 0): 0.2, ("mp", 1): 0.3, ("jec", 0): 0.4, ("jec", 1): 0.5}, scenarios=("all",))
    for dataset in ("openclipart", "corel5k"):
        assignments = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "photo_id": ["p1", "p2", "p3"],
                                    "tag": ["sun", "sea", "sun"]})
        parquet = write_parquet(assignments, data_home / "datasets" / dataset / "tables" / "filtered_assignments.parquet")
        store.create_parquet_view(dataset, "filtered_assignments", parquet)
        store.replace_result_rows("paper3_results", dataset, reporting.paper3_table(test))
        store.replace_result_rows("leaderboard", dataset, leaderboard_table(
            test, val, {"mp": ["paper3"], "jec": ["paper3"]}, {"mp": False, "jec": False}))
    store.replace_result_rows("paper1_results", "openclipart", reporting.paper1_table(test))
    return data_home


def test_closing_hint_names_the_tables_the_dataset_has(home):
    corel5k = summary("corel5k")
    assert "### results.paper3_results" in corel5k and "paper1" not in corel5k
    hint = corel5k.rstrip().splitlines()[-2:]
    assert hint[0] == "Results of corel5k in DuckDB: results.paper3_results, results.leaderboard. Query them:"
    assert hint[1].endswith(" sql \"SELECT * FROM results.paper3_results WHERE dataset = 'corel5k'\"")
    openclipart = summary("openclipart")
    assert ("Results of openclipart in DuckDB: results.paper1_results, results.paper3_results, "
            "results.leaderboard. Query them:") in openclipart
    assert "FROM results.paper1_results WHERE dataset = 'openclipart'" in openclipart


def test_closing_hint_query_runs(home):
    command = closing_hint("corel5k", ["paper3_results"], home).splitlines()[-1]
    query = command.split(' sql "', 1)[1].rstrip('"')
    done = subprocess.run([sys.executable, "-m", "tagrec_models", "sql", "--home", str(home), query],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "(4 rows)" in done.stdout  # 2 methods x 2 scenarios
    assert "--home " + str(home) in command  # not the default ./data: the hint says where


def test_closing_hint_without_results():
    assert closing_hint("flickr", [], Path("data")) == "No results table holds rows of flickr yet."


def test_demo_process_ends_without_leak_noise(home, openclipart_sample):
    """What the demo does, small: load its definitions, materialise an asset through the
    project's IO manager (Parquet + DuckDB), print the summary, exit; nanobind (DuckDB's
    binding) reports objects still alive at exit on stderr."""
    script = (
        "import dagster as dg\n"
        "from pipelines.definitions import defs\n"
        "from pipelines.demo import summary\n"
        "job = defs.resolve_job_def('openclipart_all')\n"
        "ingest = [dg.AssetKey(['openclipart', n]) for n in ('photos', 'photo_tags', 'photo_groups', 'images', 'skipped_files')]\n"
        "result = job.execute_in_process(asset_selection=ingest,\n"
        f"    run_config={{'ops': {{'openclipart__ingest': {{'config': {{'folder': {str(openclipart_sample)!r}}}}}}}}})\n"
        "assert result.success\n"
        "print(summary('corel5k'))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "TAGREC_HOME": str(home)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "results.paper3_results" in done.stdout
    assert "leaked" not in done.stderr, done.stderr[-2000:]


def test_records_still_construct_and_check_after_the_release():
    """The exit-time release (pipelines/shutdown.py) keeps what Dagster's compiled record
    constructors look up: records built afterwards (by a later exit handler) still work."""
    import dagster as dg

    from pipelines import shutdown
    from pipelines.definitions import defs

    defs.resolve_job_def("openclipart_all")  # compiles constructors from tagrec's frames
    assert shutdown.release_captured_frames() > 0
    spec = dg.AssetCheckSpec("nonempty", asset=dg.AssetKey(["openclipart", "train"]), description="d")
    assert spec.asset_key == dg.AssetKey(["openclipart", "train"])
    column = dg.TableColumn(name="f1@5", type="float64", description="F1")
    assert dg.TableSchema(columns=[column]).columns[0].name == "f1@5"
    with pytest.raises(Exception, match="asset_key|AssetKey|CheckError"):
        dg.AssetCheckSpec("bad", asset=42)  # the checks still run

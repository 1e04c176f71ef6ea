"""Guards ``tagrec sql``, the README's way into the DuckDB database: every query of the README's
DuckDB section runs against a data home with the real results tables, statements come from
arguments, stdin or the prompt, the database stays read-only, and a missing database or a bad
statement gives a clear error and exit status."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tagrec_models import reporting
from tagrec_models.experiment import train_model, tuning_rows
from tagrec_models.leaderboard import leaderboard_table
from tagrec_models.sql_shell import interactive, open_read_only, run_statements, statement_complete
from tagrec_models.storage.atomic import write_parquet
from tagrec_models.storage.duckdb_store import DuckDBStore
from test_leaderboard import runs
from test_tuning import split as tuning_split

REPO = Path(__file__).resolve().parents[1]


def readme_duckdb_sql() -> str:
    """The SQL block of the README's "Querying results with DuckDB" section."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Querying results with DuckDB", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sql\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the README's DuckDB section should hold one SQL block"
    return blocks[0]


@pytest.fixture()
def home(tmp_path) -> Path:
    """A data home holding what the README queries, written the way the assets write it: the
    results tables from the library's table functions and a split as a view over Parquet."""
    test = runs({("mp", 0): 0.3, ("mp", 1): 0.4, ("pitf", 0): 0.5, ("pitf", 1): 0.6})
    val = runs({("mp", 0): 0.2, ("mp", 1): 0.3, ("pitf", 0): 0.4, ("pitf", 1): 0.5}, scenarios=("all",))
    store = DuckDBStore(tmp_path / "tagrec.duckdb")
    store.replace_result_rows("paper1_results", "openclipart", reporting.paper1_table(test, ["mp", "pitf"]))
    store.replace_result_rows("paper1_results_runs", "openclipart", test)
    store.replace_result_rows("leaderboard", "openclipart", leaderboard_table(
        test, val, {"mp": ["paper1"], "pitf": ["paper1"]}, {"mp": False, "pitf": True}))
    # results.tuning as the tuning asset writes it: MP-u tuned for real on the contract data.
    data, _ = tuning_split()
    trained = train_model("mp_u", "openclipart", data, tmp_path / "models", seeds=(0,), n_trials=2)
    store.replace_result_rows("tuning", "openclipart", tuning_rows([trained]).drop(columns="dataset"))
    train = test[["method"]].rename(columns={"method": "tag"}).assign(user_id="u1", photo_id="p1")
    parquet = write_parquet(train, tmp_path / "datasets" / "openclipart" / "tables" / "train.parquet")
    store.create_parquet_view("openclipart", "train", parquet)
    return tmp_path


def tagrec_sql(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tagrec_models", "sql", *args], input=stdin,
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_every_readme_query_runs(home):
    sql = readme_duckdb_sql()
    with open_read_only(home / "tagrec.duckdb") as con:
        out = io.StringIO()
        assert run_statements(con, sql, out) == sql.count(";")  # every statement of the section
    printed = out.getvalue()
    assert "pitf" in printed and "paper1" in printed and "(2 rows)" in printed


def test_queries_as_arguments_and_on_stdin(home):
    done = tagrec_sql("--home", str(home), 'SELECT method, "f1@5" FROM results.leaderboard ORDER BY rank; SELECT 42 AS answer')
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[1].split() == ["pitf", "0.275"]
    assert "answer" in done.stdout and "42" in done.stdout
    piped = tagrec_sql("--home", str(home), "--csv", stdin=readme_duckdb_sql())
    assert piped.returncode == 0, piped.stderr
    assert "rank,method,papers,val_f1@5,f1@5,ndcg@10" in piped.stdout


def test_the_database_is_read_only_and_errors_say_why(home, tmp_path):
    write = tagrec_sql("--home", str(home), "CREATE TABLE scratch (a INTEGER)")
    assert write.returncode == 1 and "read-only" in write.stderr
    unknown = tagrec_sql("--home", str(home), "SELECT * FROM results.no_such_table")
    assert unknown.returncode == 1 and "no_such_table" in unknown.stderr
    missing = tagrec_sql("--home", str(tmp_path / "empty"), "SELECT 1")
    assert missing.returncode == 2 and "materialise a dataset first" in missing.stderr


def test_prompt_runs_a_statement_when_a_line_ends_with_a_semicolon(home):
    assert not statement_complete("SELECT 1")
    assert not statement_complete("SELECT 1 -- a comment;")
    assert statement_complete("SELECT 1; -- done")
    out, err = io.StringIO(), io.StringIO()
    lines = ["SELECT count(*) AS n\n", "FROM results.paper1_results_runs;\n", "SELECT nonsense;\n",
             ".quit\n", "SELECT 'never run';\n"]
    with open_read_only(home / "tagrec.duckdb") as con:
        status = interactive(con, iter(lines), out, err, csv=False, max_rows=100)
    assert status == 1  # one statement failed; the prompt went on
    assert "\n80\n(1 row)" in out.getvalue()  # 2 methods x 2 seeds x 2 scenarios x 10 k
    assert "nonsense" in err.getvalue()
    assert "never run" not in out.getvalue()


def test_long_results_are_cut_at_max_rows(home):
    with duckdb.connect(str(home / "tagrec.duckdb"), read_only=True) as con:
        out = io.StringIO()
        run_statements(con, "SELECT * FROM results.paper1_results_runs", out, max_rows=3)
    assert out.getvalue().rstrip().endswith("(80 rows, first 3 shown; --max-rows 0 shows all)")

"""Guards the column descriptions of the results tables: every column of every results table the
openclipart graph writes (built here by the library's own table functions) has a meaning in
``tagrec_models.reporting_columns``, and the IO manager puts those meanings into the column
schema the Dagster UI shows."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from assets.io_manager import TagrecIOManager
from assets.table_schema import UNDESCRIBED, column_schema_metadata
from paper2_data import known_signal
from tagrec_models import reporting
from tagrec_models.data import TrainingData
from tagrec_models.features.vlad import VladConfig
from tagrec_models.leaderboard import leaderboard_table
from tagrec_models.studies.sweep_tables import lambda_table, n_tags_table, stage_table
from tagrec_models.reporting_columns import describe_column, undescribed_columns
from test_leaderboard import runs
from test_paper2_sweep_tables import _stage_descriptors


@pytest.fixture(scope="module")
def results_tables() -> dict[str, pd.DataFrame]:
    """Every results table of the openclipart graph, from the functions its assets call."""
    test = runs({("mp", 0): 0.3, ("mp", 1): 0.4, ("pitf", 0): 0.5, ("pitf", 1): 0.6})
    val = runs({("mp", 0): 0.2, ("mp", 1): 0.3, ("pitf", 0): 0.4, ("pitf", 1): 0.5}, scenarios=("all",))
    data, held_out, side = known_signal(seed=1, n_images=120, n_test=20, n_val=20)
    fit_data = TrainingData(train=data.train, side=side)
    ccs_columns = ["method", *(f"ccs@{k}" for k in range(1, 21)), "ccs@20_std"]  # assets/models.py ccs_asset
    return {
        "paper1_results": reporting.paper1_table(test),
        "paper2_results": reporting.paper2_table(test, k=10),
        "paper3_results": reporting.paper3_table(test, k=5),
        "paper3_ccs": pd.DataFrame(columns=ccs_columns),
        "leaderboard": leaderboard_table(test, val, {"mp": ["paper1"], "pitf": ["paper1"]},
                                         {"mp": False, "pitf": True}),
        "paper2_lambda_sweep": lambda_table(fit_data, data.val, held_out, side, lambdas=(0.2, 0.4)),
        "paper2_stage_selection": stage_table(_stage_descriptors(side), fit_data, data.val, side,
                                              vlad=VladConfig(n_words=4, seed=0)),
        "paper2_n_tags": n_tags_table(fit_data, data.val, held_out, side, models=["ug_nw", "noug_nw"]),
        "runs": test,  # results.<table>_runs in DuckDB
    }


def test_every_results_column_is_described(results_tables):
    missing = {name: undescribed_columns(table.columns) for name, table in results_tables.items()}
    assert not {name: cols for name, cols in missing.items() if cols}, (
        "add these columns to tagrec_models/reporting_columns.py")


def test_descriptions_follow_the_column_grammar():
    assert describe_column("f1@5") == "F1@5: F1 of the averaged P@5 and R@5 over the test posts (paper 1, eq. 12)"
    assert "validation posts" in describe_column("val_f1@5")
    assert describe_column("f1@5_std").startswith("Sample standard deviation over seeds (ddof=1) of f1@5: F1@5")
    assert "new_images" in describe_column("f1@5_new_images")
    assert "first 7 canonical pairs" in describe_column("ccs@7")
    assert "validation posts" in describe_column("val_retrieval_map")
    assert describe_column("no_such_column") is None
    assert describe_column("val_no_such_column") is None


def test_column_schema_metadata_describes_each_column(results_tables):
    schema = column_schema_metadata(results_tables["leaderboard"])["dagster/column_schema"]
    columns = {c.name: c for c in schema.columns}
    assert list(columns) == list(results_tables["leaderboard"].columns)
    assert columns["n_plus@5"].description == describe_column("n_plus@5")
    assert columns["chosen_on_validation"].type == "bool"
    unknown = column_schema_metadata(pd.DataFrame({"mystery": [1]}))["dagster/column_schema"]
    assert unknown.columns[0].description == UNDESCRIBED


def test_io_manager_puts_descriptions_on_results_tables_only(tmp_path, results_tables):
    paper1 = results_tables["paper1_results"]

    @dg.asset(key=["openclipart", "paper1_results"], metadata={"results_table": "paper1_results"})
    def results_asset() -> pd.DataFrame:
        return paper1

    @dg.asset(key=["openclipart", "train"])
    def plain_asset() -> pd.DataFrame:
        return pd.DataFrame({"user_id": ["u"], "photo_id": ["p"], "tag": ["t"]})

    result = dg.materialize([results_asset, plain_asset], resources={"io_manager": TagrecIOManager(root=str(tmp_path))})
    schemas = {e.asset_key.path[-1]: e.materialization.metadata["dagster/column_schema"].schema
               for e in result.get_asset_materialization_events()}
    described = {c.name: c.description for c in schemas["paper1_results"].columns}
    assert list(described) == list(paper1.columns)
    assert all(text and text != UNDESCRIBED for text in described.values()), described
    assert described["f1@5"] == describe_column("f1@5")
    assert all(c.description is None for c in schemas["train"].columns)

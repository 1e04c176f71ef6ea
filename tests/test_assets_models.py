"""Guards the whole openclipart asset graph on the real 49-photo sample: features, every
model asset of the three papers (tiny settings, two tuning trials, two seeds), the three results
tables and results.tuning, which land in DuckDB with lineage to every model."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import pytest

from assets.datasets import OPENCLIPART
from assets.factory import dataset_assets
from assets.papers import dataset_methods, shape_of
from tagrec_models.papers import paper_methods
from tagrec_models.recommenders.registry import get_recommender
from test_assets_pipeline import needs_wordnet, resources

RECIPE = {"core_users": 2, "core_tags": 2, "test_posts": 1, "val_posts": 1}


def run_config(sample: Path) -> dict:
    ops = {
        "openclipart__ingest": {"config": {"folder": str(sample)}},
        "openclipart__preprocess": {"config": RECIPE},
        "openclipart__splits": {"config": RECIPE},
        "openclipart__features": {"config": {"stages": ["stage3", "stage5"], "grid": 3}},
        "openclipart__vlad": {"config": {"n_words": 4}},
    }
    for method in dataset_methods(OPENCLIPART):
        small = {k: list(v) if isinstance(v, tuple) else v  # the launchpad takes lists
                 for k, v in get_recommender(method).contract_overrides.items()}
        ops[f"openclipart__model_{method}"] = {"config": {"seeds": [0, 1], "params": small,
                                                          "n_trials": 2, "retune_trials": 2}}
    return {"ops": ops}


@needs_wordnet
@pytest.mark.slow
def test_every_openclipart_asset_materialises(tmp_path, openclipart_sample):
    result = dg.materialize(
        dataset_assets(OPENCLIPART),
        selection=dg.AssetSelection.groups("openclipart"),
        resources=resources(tmp_path),
        run_config=run_config(openclipart_sample),
        raise_on_error=False,
    )
    failures = [e.event_specific_data.error.to_string() for e in result.all_events
                if e.event_type_value == "STEP_FAILURE"]
    assert result.success, failures[:2]
    assert all(e.passed for e in result.get_asset_check_evaluations())
    with duckdb.connect(str(tmp_path / "tagrec.duckdb"), read_only=True) as con:
        for table, methods in paper_methods(shape_of(OPENCLIPART)).items():
            rows = con.execute(
                f"SELECT DISTINCT method FROM results.{table}_results WHERE dataset = 'openclipart'"
            ).fetchall()
            assert {r[0] for r in rows} == set(methods), table
        leaderboard = con.execute(
            "SELECT method, rank, \"val_f1@5\", \"f1@5\", chosen_on_validation FROM results.leaderboard "
            "WHERE dataset = 'openclipart' ORDER BY rank").df()
        tuning = con.execute("SELECT * FROM results.tuning WHERE dataset = 'openclipart'").df()
    every_method = set(dataset_methods(OPENCLIPART))
    assert set(leaderboard["method"]) == every_method
    # What was tuned is visible: trials for every method, one chosen per (method, family).
    assert set(tuning["method"]) == every_method
    chosen = tuning[tuning["chosen"]].groupby(["method", "family"]).size()
    assert (chosen == 1).all() and len(chosen) == 2 * len(every_method)
    assert list(leaderboard["rank"]) == list(range(1, len(every_method) + 1))
    assert leaderboard["f1@5"].is_monotonic_decreasing
    assert leaderboard["chosen_on_validation"].sum() == 1
    plots = {e.asset_key.path[-1]: {k for k in e.materialization.metadata if k.startswith("plot")}
             for e in result.get_asset_materialization_events()}
    for table in ("paper1_results", "paper2_results", "paper3_results", "paper3_ccs", "leaderboard"):
        assert plots[table], f"{table} has no plot in its metadata"

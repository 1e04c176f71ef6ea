"""Guards the whole openclipart asset graph on the real 49-photo sample: features, every
model asset of the three papers (tiny settings, two tuning trials, two seeds), the three results
tables and results.tuning, which land in DuckDB with lineage to every model and describe every
column in the UI."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from assets.datasets import OPENCLIPART
from assets.features import all_shards_tags
from assets.factory import dataset_assets
from assets.papers import dataset_methods, shape_of
from assets.table_schema import UNDESCRIBED
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
    # Issue 12: a second split, each model tuned and fitted on it with the same small settings.
    ops["openclipart__repeated_splits"] = {"config": {
        **RECIPE, "n_splits": 2, "seeds": [0], "n_trials": 1, "retune_trials": 2,
        "params_json": json.dumps({m: {k: list(v) if isinstance(v, tuple) else v
                                       for k, v in get_recommender(m).contract_overrides.items()}
                                   for m in dataset_methods(OPENCLIPART)}),
        "significance": {"n_resamples": 200}}}
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
        tags=all_shards_tags(OPENCLIPART),
    )
    failures = [e.event_specific_data.error.to_string() for e in result.all_events
                if e.event_type_value == "STEP_FAILURE"]
    assert result.success, failures[:2]
    evaluations = result.get_asset_check_evaluations()
    # The leakage guards (issue 15) warn on openclipart, whose category folders spell its tags.
    assert all(e.passed for e in evaluations if e.severity == dg.AssetCheckSeverity.ERROR)
    assert {"groups_spell_held_out_tags", "held_out_near_duplicates"} <= {e.check_name for e in evaluations}
    with duckdb.connect(str(tmp_path / "tagrec.duckdb"), read_only=True) as con:
        for table, methods in paper_methods(shape_of(OPENCLIPART)).items():
            rows = con.execute(
                f"SELECT DISTINCT method FROM results.{table}_results WHERE dataset = 'openclipart'"
            ).fetchall()
            assert {r[0] for r in rows} == set(methods), table
        leaderboard = con.execute(
            "SELECT method, rank, \"val_f1@5\", \"f1@5\", chosen_on_validation FROM results.leaderboard "
            "WHERE dataset = 'openclipart' ORDER BY rank").df()
        leakage = con.execute(
            "SELECT method, groups_spell_test_tags, test_near_duplicates, \"f1@5_tags_not_in_groups\", "
            "n_test_posts_tags_not_in_groups FROM results.leaderboard WHERE dataset = 'openclipart'"
        ).df().set_index("method")
        tuning = con.execute("SELECT * FROM results.tuning WHERE dataset = 'openclipart'").df()
        # Issue 12: every row has its interval and its test against the validation-chosen best.
        uncertainty = con.execute(
            "SELECT method, \"f1@5\", \"f1@5_ci_low\", \"f1@5_ci_high\", p_vs_best, tied_with_best, "
            "chosen_on_validation FROM results.leaderboard WHERE dataset = 'openclipart'").df()
        per_post = con.execute(
            "SELECT method, seed, split, count(*) AS n FROM results.per_post WHERE dataset = 'openclipart' "
            "AND metric = 'f1@5' GROUP BY ALL").df()
        paper1_p = con.execute("SELECT p_vs_best FROM results.paper1_results WHERE dataset = 'openclipart'").df()
        repeated = con.execute("SELECT * FROM results.repeated_splits WHERE dataset = 'openclipart'").df()
        splits = con.execute("SELECT DISTINCT split FROM results.per_post WHERE dataset = 'openclipart'").df()
    every_method = set(dataset_methods(OPENCLIPART))
    assert set(leaderboard["method"]) == every_method
    # What was tuned is visible: trials for every method, one chosen per (method, family).
    assert set(tuning["method"]) == every_method
    chosen = tuning[tuning["chosen"]].groupby(["method", "family"]).size()
    assert (chosen == 1).all() and len(chosen) == 2 * len(every_method)
    assert list(leaderboard["rank"]) == list(range(1, len(every_method) + 1))
    assert leaderboard["f1@5"].is_monotonic_decreasing
    assert leaderboard["chosen_on_validation"].sum() == 1
    assert uncertainty[["f1@5_ci_low", "f1@5_ci_high", "p_vs_best", "tied_with_best"]].notna().all().all()
    assert (uncertainty["f1@5_ci_low"] <= uncertainty["f1@5"] + 1e-9).all()
    assert (uncertainty["f1@5"] <= uncertainty["f1@5_ci_high"] + 1e-9).all()
    best = uncertainty[uncertainty["chosen_on_validation"]].iloc[0]
    assert best["p_vs_best"] == 1.0 and best["tied_with_best"]
    # One row per (method, seed, split, test post) for F1@5: two seeds, the same posts for all.
    assert set(per_post["method"]) == every_method and (per_post["seed"].nunique() == 2)
    assert per_post["n"].nunique() == 1 and per_post["n"].iloc[0] > 0
    assert paper1_p["p_vs_best"].notna().any()
    # Repeated splits: every method over both splits, its pooled interval and its test.
    assert set(repeated["method"]) == every_method and (repeated["n_splits"] == 2).all()
    assert repeated[["f1@5", "f1@5_ci_low", "f1@5_ci_high", "p_vs_best", "tied_with_best"]].notna().all().all()
    assert sorted(splits["split"]) == [0, 1]
    # Leakage columns (issue 15): the sample's folders spell some test tags; only group-aware
    # rows get the score on the posts whose folders spell none.
    assert 0 < leakage["groups_spell_test_tags"].iloc[0] <= 1
    assert leakage["test_near_duplicates"].between(0, 1).all()
    content = [m for m in every_method if "groups" not in get_recommender(m).needs]
    assert leakage.loc[content, "f1@5_tags_not_in_groups"].isna().all()
    if leakage["n_test_posts_tags_not_in_groups"].iloc[0] > 0:
        assert leakage.drop(index=content)["f1@5_tags_not_in_groups"].notna().all()
    plots = {e.asset_key.path[-1]: {k for k in e.materialization.metadata if k.startswith("plot")}
             for e in result.get_asset_materialization_events()}
    for table in ("paper1_results", "paper2_results", "paper3_results", "paper3_ccs", "leaderboard"):
        assert plots[table], f"{table} has no plot in its metadata"
    # Every results table shows each column's meaning in the UI (assets/table_schema.py).
    results_assets = {key.path[-1] for a in dataset_assets(OPENCLIPART)
                      for key, metadata in a.metadata_by_key.items() if "results_table" in metadata}
    assert {"paper1_results", "paper2_lambda_sweep", "leaderboard", "paper3_ccs"} <= results_assets
    for event in result.get_asset_materialization_events():
        if event.asset_key.path[-1] in results_assets:
            schema = event.materialization.metadata["dagster/column_schema"].schema
            undescribed = [c.name for c in schema.columns if not c.description or c.description == UNDESCRIBED]
            assert not undescribed, (event.asset_key.path[-1], undescribed)

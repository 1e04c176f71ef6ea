"""Guards paper 2's parameter-study assets on the real openclipart sample: the stage, lambda and
number-of-tags sweeps materialise from the splits, conv maps and VLAD codes, land in
``results.*`` in DuckDB for the dataset, and the stage sweep agrees with the vlad asset."""

from __future__ import annotations

import dagster as dg
import duckdb
import pytest

from assets.datasets import OPENCLIPART
from assets.features import all_shards_tags
from assets.factory import dataset_assets
from assets.paper2_sweeps import paper2_sweep_assets
from tagrec_models.studies.sweeps import LAMBDAS
from test_assets_pipeline import needs_wordnet, resources

RECIPE = {"core_users": 2, "core_tags": 2, "test_posts": 1, "val_posts": 1}
STAGES = ["stage3", "stage5"]


@needs_wordnet
@pytest.mark.slow
def test_paper2_sweeps_materialise_into_duckdb(tmp_path, openclipart_sample):
    sweeps = [a.key for a in paper2_sweep_assets(OPENCLIPART)]
    result = dg.materialize(
        dataset_assets(OPENCLIPART),
        selection=dg.AssetSelection.assets(*sweeps).upstream().required_multi_asset_neighbors(),
        resources=resources(tmp_path),
        tags=all_shards_tags(OPENCLIPART),
        run_config={"ops": {
            "openclipart__ingest": {"config": {"folder": str(openclipart_sample)}},
            "openclipart__preprocess": {"config": RECIPE},
            "openclipart__splits": {"config": RECIPE},
            "openclipart__features": {"config": {"stages": STAGES, "grid": 3}},
            "openclipart__vlad": {"config": {"n_words": 4}},
            "openclipart__paper2_n_tags": {"config": {"k_max": 5}},
        }},
        raise_on_error=False,
    )
    failures = [e.event_specific_data.error.to_string() for e in result.all_events
                if e.event_type_value == "STEP_FAILURE"]
    assert result.success, failures[:2]
    stage_meta = result.asset_materializations_for_node("openclipart__paper2_stage_selection")[0].metadata
    assert stage_meta["agrees_with_vlad_asset"].value is True
    assert stage_meta["vlad_settings"].value["n_words"] == 4
    with duckdb.connect(str(tmp_path / "tagrec.duckdb"), read_only=True) as con:
        lam = con.execute("SELECT lam, k, val_ndcg, test_ndcg, chosen FROM results.paper2_lambda_sweep "
                          "WHERE dataset = 'openclipart'").df()
        stage = con.execute("SELECT stage, k, val_retrieval_map, chosen FROM results.paper2_stage_selection "
                            "WHERE dataset = 'openclipart'").df()
        n_tags = con.execute("SELECT model, k, test_f1 FROM results.paper2_n_tags WHERE dataset = 'openclipart'").df()
    # The sample's vocabulary may hold fewer than 10 tags: metrics stop once every tag is ranked.
    top = min(10, int(lam["k"].max()))
    assert sorted(lam["lam"].unique()) == list(LAMBDAS) and len(lam) == len(LAMBDAS) * top
    at_top = lam[lam["k"] == top]
    assert at_top["chosen"].sum() == 1
    assert at_top.loc[at_top["chosen"], "val_ndcg"].iloc[0] == at_top["val_ndcg"].max()
    assert set(stage["stage"]) == set(STAGES) and stage[stage["k"] == top]["chosen"].sum() == 1
    assert set(n_tags["model"]) == {"ug_nw", "ug_nonw", "noug_nw", "noug_nonw"} and n_tags["k"].max() == 5

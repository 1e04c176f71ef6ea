"""Guards the partitioned image features (issue 14): a photo's shard is a stable function of its
id, a shard re-extracted after new photos arrive computes only those and keeps the old rows,
the shards gathered in the splits' order equal one pass over every image, and through Dagster
one run materialises every shard (the demo's way) while a run of one shard touches only it."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from assets.datasets import OPENCLIPART
from assets.factory import dataset_assets
from assets.features import all_shards_tags
from tagrec_models.features.device import DeviceConfig
from tagrec_models.features.extraction import ExtractionConfig, extract_features
from tagrec_models.features.shards import (
    assemble_shards,
    extract_shard,
    gather_rows,
    shard_members,
    shard_names,
    shard_of,
)
from test_assets_pipeline import needs_wordnet, resources

# Colour statistics and patches only: exact, and fast (no CNN).
LOWLEVEL = ExtractionConfig(cnn=False, stages=(), patch_sizes=(50,))


def fixture_images(sample: Path, n: int) -> tuple[list[str], list[str]]:
    paths = sorted(str(p) for p in sample.rglob("*.png"))[:n]
    return [f"img{i:02d}" for i in range(len(paths))], paths


def test_shard_names_sort_and_shard_of_is_a_fixed_hash():
    assert shard_names(3) == ["shard00", "shard01", "shard02"]
    assert shard_names(120)[-1] == "shard119"
    # BLAKE2b-64 of the id, big-endian, modulo n: worked out once with hashlib and fixed here,
    # so a change of the hash (which would move every photo) fails.
    assert [shard_of(p, 4) for p in ("a", "b", "photo-1", "photo-2")] == ["shard03", "shard01", "shard00", "shard01"]
    ids = [f"p{i}" for i in range(200)]
    members = [shard_members(ids, 4, s) for s in shard_names(4)]
    assert sorted(i for m in members for i in m) == list(range(200))  # every photo in one shard
    assert all(len(m) > 20 for m in members)
    with pytest.raises(ValueError, match="unknown shard"):
        shard_members(ids, 4, "shard07")


def test_gather_rows_places_every_row_once(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    np.save(a / "x.npy", np.array([[1, 1], [2, 2], [3, 3]]))
    np.save(b / "x.npy", np.array([[7, 7]]))
    out = tmp_path / "out"
    out.mkdir()
    gather_rows([(a, np.array([2, 0]), np.array([0, 3])), (b, np.array([0]), np.array([1])),
                 (a, np.array([1]), np.array([2]))], 4, out, ["x"])
    assert np.load(out / "x.npy").tolist() == [[3, 3], [7, 7], [2, 2], [1, 1]]
    with pytest.raises(ValueError, match="no source"):
        gather_rows([(a, np.array([0]), np.array([0]))], 2, out, ["x"])
    with pytest.raises(ValueError, match="twice"):
        gather_rows([(a, np.array([0, 1]), np.array([0, 0]))], 1, out, ["x"])


def test_a_new_batch_extracts_only_itself_and_shards_equal_one_pass(tmp_path, openclipart_sample):
    ids, paths = fixture_images(openclipart_sample, 12)
    one_pass = extract_features(paths, tmp_path / "one_pass", LOWLEVEL)
    first = extract_shard("shard00", ids[:8], paths[:8], tmp_path / "s0", LOWLEVEL)
    assert (first.n_extracted, first.n_reused) == (8, 0)
    again = extract_shard("shard00", ids[:8], paths[:8], tmp_path / "s0", LOWLEVEL)
    assert (again.n_extracted, again.n_reused) == (0, 8)
    # A new batch: two photos join the shard (one sorts before the old ones), one leaves.
    batch = [ids[10], *ids[1:8], ids[11]]
    grown = extract_shard("shard00", batch, [paths[ids.index(p)] for p in batch], tmp_path / "s0", LOWLEVEL)
    assert (grown.n_extracted, grown.n_reused) == (2, 7)
    other = extract_shard("shard01", [ids[0], *ids[8:10]], [paths[0], *paths[8:10]], tmp_path / "s1", LOWLEVEL)
    files = assemble_shards([grown, other], ids, tmp_path / "all")
    for name in ("ch64", "cm225", "patches_50"):
        assert np.array_equal(np.load(files[name]), np.load(one_pass.files[name])), name
    index = pd.read_parquet(files["index"])
    assert index["path"].tolist() == paths and index["row"].tolist() == list(range(12))
    # Other settings: nothing is reused, and shards of mixed settings are refused.
    changed = extract_shard("shard01", [ids[0]], [paths[0]], tmp_path / "s1",
                            ExtractionConfig(cnn=False, stages=(), patch_sizes=(40,)))
    assert changed.n_reused == 0
    with pytest.raises(ValueError, match="other settings"):
        assemble_shards([grown, changed], ids[1:8] + ids[:1], tmp_path / "mixed")
    with pytest.raises(ValueError, match="in no shard"):
        assemble_shards([grown], ids, tmp_path / "missing")


RECIPE = {"core_users": 2, "core_tags": 2, "test_posts": 1, "val_posts": 1}


@needs_wordnet
def test_one_run_materialises_every_shard_and_a_shard_run_only_its_own(tmp_path, openclipart_sample):
    config = {"ops": {
        "openclipart__ingest": {"config": {"folder": str(openclipart_sample)}},
        "openclipart__preprocess": {"config": RECIPE}, "openclipart__splits": {"config": RECIPE},
        "openclipart__features": {"config": {"stages": ["stage5"], "grid": 2, "device": "cpu"}},
    }}
    assets = dataset_assets(OPENCLIPART)
    target = dg.AssetSelection.assets(dg.AssetKey(["openclipart", "cnn_embedding"]))
    result = dg.materialize(assets, selection=target.upstream().required_multi_asset_neighbors(),
                            resources=resources(tmp_path), run_config=config, tags=all_shards_tags(OPENCLIPART))
    assert result.success
    shard_events = [e.materialization for e in result.get_asset_materialization_events()
                    if e.asset_key.path[-1] == "feature_shards"]
    assert sorted(m.partition for m in shard_events) == shard_names(OPENCLIPART.feature_shards)
    embedding = {e.asset_key.path[-1]: e for e in result.get_asset_materialization_events()}["cnn_embedding"]
    n_images = embedding.materialization.metadata["n_images"].value
    assert sum(int(m.metadata["n_images"].value) for m in shard_events[:1]) == n_images  # the run's total

    # One shard again (what a backfill's run does): only its partition, nothing extracted anew.
    one = dg.materialize(assets, selection=dg.AssetSelection.assets(dg.AssetKey(["openclipart", "feature_shards"])),
                         resources=resources(tmp_path), run_config={"ops": {"openclipart__features": config["ops"]["openclipart__features"]}},
                         partition_key="shard01")
    (event,) = one.get_asset_materialization_events()
    assert event.materialization.partition == "shard01"
    assert event.materialization.metadata["n_extracted"].value == 0
    assert event.materialization.metadata["n_reused"].value > 0


def test_the_demo_runs_every_shard_only_where_its_job_has_them():
    from pipelines.demo import defs, every_shard

    job = defs.resolve_job_def("openclipart_all")
    assert every_shard(job, "openclipart") == all_shards_tags(OPENCLIPART) == {
        "dagster/asset_partition_range_start": "shard00", "dagster/asset_partition_range_end": "shard03"}
    splits_only = dg.AssetSelection.assets(dg.AssetKey(["openclipart", "train"])).upstream().required_multi_asset_neighbors()
    subset = job.get_subset(asset_selection=set(splits_only.resolve(defs.resolve_asset_graph())))
    assert every_shard(subset, "openclipart") == {}


def test_a_shard_stored_before_cnn_stages_had_its_own_file_is_extracted_again(tmp_path, openclipart_sample):
    """Shards written when cnn.npy held the multi-stage concatenation have no cnn_stages.npy:
    with the same settings, nothing of them is reused (cnn.npy would be the wrong array)."""
    ids, paths = fixture_images(openclipart_sample, 3)
    config = ExtractionConfig(stages=(), embedding_stages=("stage6",), lowlevel=False, patch_sizes=(),
                              device=DeviceConfig(device="cpu", num_workers=0))
    first = extract_shard("shard00", ids, paths, tmp_path / "s0", config)
    assert "cnn_stages" in first.arrays and (first.n_extracted, first.n_reused) == (3, 0)
    assert (extract_shard("shard00", ids, paths, tmp_path / "s0", config).n_reused) == 3
    (tmp_path / "s0" / "cnn_stages.npy").unlink()
    again = extract_shard("shard00", ids, paths, tmp_path / "s0", config)
    assert (again.n_extracted, again.n_reused) == (3, 0) and "cnn_stages" in again.arrays


def test_a_dataset_s_own_feature_defaults_reach_its_launchpad():
    """Corel5k's features default to the backbone its validation chose (DatasetSpec.feature_defaults),
    the other datasets keep the shared default, and the launchpad says why."""
    import dagster as dg

    from pipelines.definitions import defs

    def backbone_field(dataset):
        schema = defs.get_assets_def(dg.AssetKey([dataset, "feature_shards"])).op.config_schema
        return schema.config_type.fields["backbone"]

    assert backbone_field("openclipart").default_value == "efficientnet_lite0"
    corel = backbone_field("corel5k")
    assert corel.default_value == "efficientnet_lite2"
    assert "validation" in corel.description
    schema = defs.get_assets_def(dg.AssetKey(["corel5k", "feature_shards"])).op.config_schema
    stages = schema.config_type.fields["embedding_stages"]
    assert stages.default_value == ["stage5", "stage6"] and "cnn_stages" in stages.description

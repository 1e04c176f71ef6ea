"""Guards a bring-your-own dataset through Dagster: a folder under <data home>/byo/ becomes a
dataset whose ingest, vocabulary, preprocessing and splits materialise with their checks, the
Definitions get its asset group and `<name>_all` job, and bad folders fail naming them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from assets.datasets import BUILTIN_DATASETS, folder_datasets
from assets.factory import dataset_assets
from test_assets_pipeline import materialize_group, needs_wordnet, resources
from test_sources_folder import BROKEN_PNG, build_byo_folder, real_posts
from tagrec_models.sources.folder import DATASETS_ENV, FolderDatasetError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def byo_home(tmp_path, openclipart_sample) -> Path:
    """A data home with one dataset folder, ``byo/mine``: every post of the openclipart sample
    plus a row whose image does not decode; small core sizes, as the sample is small."""
    home = tmp_path / "home"
    folder = build_byo_folder(
        home / "byo" / "mine",
        real_posts(openclipart_sample),
        [{"photo_id": "broken", "owner": "ann", "tags": "sunset"}],
    )
    (folder / "images" / "broken.png").write_bytes(BROKEN_PNG)
    (folder / "dataset.json").write_text(
        json.dumps(
            {
                "description": "The openclipart sample as a bring-your-own folder.",
                "recipe_overrides": {"core_users": 2, "core_tags": 2, "test_posts": 1, "val_posts": 1},
            }
        )
    )
    return home


def test_a_folder_under_byo_is_a_dataset_spec(byo_home):
    (spec,) = folder_datasets(byo_home, None)
    assert (spec.name, spec.source, spec.has_users, spec.has_groups) == ("mine", "folder", True, True)
    assert spec.recipe == "openclipart_default"
    assert spec.recipe_overrides["core_users"] == 2
    assert spec.folder == str((byo_home / "byo" / "mine").resolve())


def test_a_name_clashing_with_a_built_in_dataset_is_an_error(byo_home):
    folder = byo_home / "byo" / "mine"
    for builtin in BUILTIN_DATASETS:
        with pytest.raises(FolderDatasetError, match=f"'{builtin.name}' is a built-in dataset"):
            folder_datasets(byo_home, f"{builtin.name}={folder}")


@needs_wordnet
def test_byo_ingest_to_splits_materialises_with_checks(byo_home, openclipart_sample):
    (spec,) = folder_datasets(byo_home, None)
    result = materialize_group(spec, byo_home)
    assert result.success
    checks = {(e.asset_key.path[-1], e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        ("filtered_assignments", "core_property"): True,
        ("filtered_assignments", "nonempty"): True,
        ("train", "disjoint_parts"): True,
        ("train", "heldout_seen_in_train"): True,
        ("test", "groups_spell_held_out_tags"): False,  # the sample's groups are openclipart's category folders, which spell its tags (issue 15)
    }
    sample_photos = len(real_posts(openclipart_sample))
    with duckdb.connect(str(byo_home / "tagrec.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM mine.photos").fetchone()[0] == sample_photos
        assert con.execute("SELECT count(*) FROM mine.photo_groups").fetchone()[0] > 0
        skipped = con.execute("SELECT row, photo_id, reason FROM mine.skipped_rows").fetchall()
        assert len(skipped) == 1
        assert skipped[0][:2] == (sample_photos + 1, "broken")
        assert "does not decode" in skipped[0][2]
        parts = dict(con.execute(
            "SELECT 'train', count(*) FROM mine.train UNION ALL SELECT 'test', count(*) FROM mine.test"
        ).fetchall())
        assert parts["train"] > parts["test"] > 0


def test_a_bad_posts_file_fails_the_ingest_naming_it(byo_home):
    (spec,) = folder_datasets(byo_home, None)
    posts = byo_home / "byo" / "mine" / "posts.csv"
    posts.write_text("photo_id,tag\n1,sunset\n")
    result = dg.materialize(
        dataset_assets(spec),
        selection=dg.AssetSelection.assets(dg.AssetKey(["mine", "photos"])).required_multi_asset_neighbors(),
        resources=resources(byo_home),
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert str(posts) in message and "lacks required column(s) ['owner', 'tags']" in message
    assert not (byo_home / "datasets" / "mine" / "tables").exists()


def test_the_definitions_get_the_byo_group_and_job(byo_home):
    """``pipelines.definitions`` discovers the folder at import (a fresh interpreter, because
    the datasets are found once per process) and builds its whole graph and job."""
    script = (
        "from pipelines.definitions import defs\n"
        "job = defs.resolve_job_def('mine_all')\n"
        "keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}\n"
        "print(job.name, 'mine/skipped_rows' in keys, 'mine/train' in keys, "
        "any(k.startswith('mine/model_') for k in keys))\n"
    )
    env = {**os.environ, "TAGREC_HOME": str(byo_home)}
    env.pop(DATASETS_ENV, None)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["mine_all", "True", "True", "True"]


def test_an_unreadable_posts_file_fails_only_its_own_dataset(byo_home):
    """A Latin-1 posts file under byo/ must not break the Definitions (so the openclipart demo
    and the UI still load): its dataset is registered and its ingest fails naming the file."""
    bad = byo_home / "byo" / "latin"
    (bad / "images").mkdir(parents=True)
    (bad / "posts.csv").write_bytes("photo_id,owner,tags\n1,Jos\xe9,caf\xe9\n".encode("latin-1"))
    script = (
        "from pipelines.definitions import defs\n"
        "print(sorted(j.name for j in defs.resolve_all_job_defs() if j.name.endswith('_all')))\n"
    )
    env = {**os.environ, "TAGREC_HOME": str(byo_home)}
    env.pop(DATASETS_ENV, None)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "'latin_all'" in done.stdout and "'mine_all'" in done.stdout and "'openclipart_all'" in done.stdout
    spec = next(s for s in folder_datasets(byo_home, None) if s.name == "latin")
    result = dg.materialize(
        dataset_assets(spec),
        selection=dg.AssetSelection.assets(dg.AssetKey(["latin", "photos"])).required_multi_asset_neighbors(),
        resources=resources(byo_home),
        raise_on_error=False,
    )
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert f"{bad / 'posts.csv'} cannot be read as CSV (UTF-8)" in message

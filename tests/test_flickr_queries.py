"""Guards the per-query Flickr crawl (issue 14): query keys parse into the crawl they mean and
a folder of their own, each dynamic partition of ``flickr/crawl_by_query`` crawls only its
query against the local Flickr-compatible server, the ingest merges every partition's crawl
(a photo in two groups is one photo with both groups), and the re-crawl schedule asks for one
run per partition."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from assets.datasets import FLICKR
from assets.factory import dataset_assets
from assets.ingest import FLICKR_QUERIES
from assets.io_manager import TagrecIOManager
from assets.resources import DataHomeResource, FlickrResource
from flickr_server import TEST_KEY, TEST_SECRET, flickr_server  # noqa: F401 (fixture)
from tagrec_models.sources.flickr.errors import FlickrConfigError
from tagrec_models.sources.flickr.queries import parse_query, query_folder, query_spec

TABLES = [dg.AssetKey(["flickr", n]) for n in ("photos", "photo_tags", "photo_groups", "images", "skipped_files")]


def test_query_keys_mean_one_listing_and_a_folder_each(tmp_path):
    base = {"per_page": 7}
    group = query_spec("group:34427469792@N01", **base)
    assert (group.group_ids, group.tags, group.text, group.per_page) == (("34427469792@N01",), (), None, 7)
    tags = query_spec("tags: cat, dog ,", **base)
    assert (tags.group_ids, tags.tags, tags.text) == ((), ("cat", "dog"), None)
    text = query_spec("text:red bicycle", **base)
    assert (text.group_ids, text.tags, text.text) == ((), (), "red bicycle")
    assert parse_query("TAGS:cat,dog").key == "tags:cat,dog"
    folders = {query_folder(tmp_path, k) for k in ("text:a/b", "text:a b", "group:1@N01")}
    assert len(folders) == 3 and all(f.parent == tmp_path / "queries" for f in folders)
    assert query_folder(tmp_path, "text:a/b").name.startswith("text-a-b-")
    with pytest.raises(FlickrConfigError, match="names the listing"):
        query_spec("group:1@N01", group_ids=("2@N01",))
    for bad in ("cat", "group:", "album:1", "tags:,"):
        with pytest.raises(FlickrConfigError):
            parse_query(bad)


def resources(home: Path, server) -> dict:
    return {
        "io_manager": TagrecIOManager(root=str(home)),
        "data_home": DataHomeResource(root=str(home)),
        "flickr": FlickrResource(api_key=TEST_KEY, api_secret=TEST_SECRET, rest_url=server.rest_url,
                                 calls_per_hour=10**7),
    }


def test_each_query_partition_crawls_its_group_and_the_ingest_merges_them(tmp_path, flickr_server):
    server = flickr_server
    photos_of = {g: {p.photo_id for p in server.photos if g in p.group_ids} for g in server.groups}
    # Two pools that share a photo (the fixture has symlinked files: one photo, two folders).
    shared = sorted((a, b) for a in server.groups for b in server.groups if a < b and photos_of[a] & photos_of[b])
    a, b = shared[0]
    keys = [f"group:{a}", f"group:{b}"]
    assets = dataset_assets(FLICKR)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(FLICKR_QUERIES.name, keys)
        crawled = {}
        for query in keys:
            result = dg.materialize(assets, selection=[dg.AssetKey(["flickr", "crawl_by_query"])],
                                    resources=resources(tmp_path, server), instance=instance, partition_key=query,
                                    run_config={"ops": {"flickr__crawl_by_query": {"config": {"per_page": 4}}}})
            assert result.success
            (event,) = result.get_asset_materialization_events()
            assert event.materialization.partition == query
            crawled[query] = event.materialization.metadata["photos"].value
        tables = dg.materialize(assets, selection=TABLES, resources=resources(tmp_path, server), instance=instance)
        assert tables.success
        schedule = dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime(2026, 11, 26, 3, 30))
        from pipelines.definitions import flickr_query_recrawl_daily

        requests = list(flickr_query_recrawl_daily(schedule))
    assert sorted(r.partition_key for r in requests) == sorted(keys)
    folder = tmp_path / "sources" / "flickr" / "default"
    assert sorted(p.name for p in (folder / "queries").iterdir()) == sorted(query_folder(folder, k).name for k in keys)
    photos = pd.read_parquet(tmp_path / "datasets" / "flickr" / "tables" / "photos.parquet")
    groups = pd.read_parquet(tmp_path / "datasets" / "flickr" / "tables" / "photo_groups.parquet")
    assert photos["photo_id"].is_unique
    in_a = set(groups.loc[groups["group_id"] == a, "photo_id"])
    in_b = set(groups.loc[groups["group_id"] == b, "photo_id"])
    assert in_a | in_b <= set(photos["photo_id"])
    # Each partition crawled its own pool; a photo in both pools is one row of photos.
    assert len(photos) == len(in_a | in_b) <= crawled[keys[0]] + crawled[keys[1]]
    assert crawled[keys[0]] == len(in_a) and crawled[keys[1]] == len(in_b)

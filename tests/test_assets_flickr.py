"""Guards the Flickr assets: the crawl asset against the local Flickr-compatible server, the
re-crawl job adding only new photos, a missing key failing clearly, and the key and secret
never reaching asset metadata, the run log or the data home."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd

from assets.datasets import FLICKR
from assets.factory import dataset_assets
from assets.io_manager import TagrecIOManager
from assets.resources import DataHomeResource, FlickrResource
from flickr_server import TEST_KEY, TEST_SECRET, flickr_server, http_error  # noqa: F401 (fixture)

CRAWL_AND_TABLES = dg.AssetSelection.assets(
    *[dg.AssetKey(["flickr", n]) for n in ("crawl", "photos", "photo_tags", "photo_groups", "images", "skipped_files")]
)


def run(home: Path, server, mode: str = "crawl", key: str = TEST_KEY, secret: str = TEST_SECRET, **flickr):
    groups = sorted(server.groups)
    return dg.materialize(
        dataset_assets(FLICKR),
        selection=CRAWL_AND_TABLES,
        resources={
            "io_manager": TagrecIOManager(root=str(home)),
            "data_home": DataHomeResource(root=str(home)),
            "flickr": FlickrResource(
                api_key=key, api_secret=secret, rest_url=server.rest_url, calls_per_hour=10**7, **flickr
            ),
        },
        run_config={
            "ops": {
                "flickr__crawl": {"config": {"group_ids": groups, "per_page": 4, "mode": mode}},
            }
        },
        raise_on_error=False,
    )


def materialized_photos(result) -> int:
    event = next(
        e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "crawl"
    )
    return event.materialization.metadata["photos"].value


def test_crawl_then_recrawl_adds_only_new_photos(tmp_path, flickr_server):
    server = flickr_server
    server.show_first(20)
    first = run(tmp_path, server)
    assert first.success
    before = materialized_photos(first)
    assert 0 < before

    server.show_first(len(server.photos))
    second = run(tmp_path, server, mode="recrawl")
    assert second.success
    crawl_event = next(
        e for e in second.get_asset_materialization_events() if e.asset_key.path[-1] == "crawl"
    ).materialization.metadata
    assert crawl_event["rounds"].value == 2
    assert crawl_event["photos"].value == before + crawl_event["new_photos"].value
    assert crawl_event["new_photos"].value > 0

    table = pd.read_parquet(tmp_path / "datasets" / "flickr" / "tables" / "photos.parquet")
    assert table["photo_id"].is_unique and len(table) == crawl_event["photos"].value

    # No secret anywhere: metadata, run log, files under the data home.
    for result in (first, second):
        for event in result.all_events:
            text = str(event)
            assert TEST_KEY not in text and TEST_SECRET not in text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert TEST_KEY.encode() not in data and TEST_SECRET.encode() not in data, path


def test_missing_credentials_fail_naming_the_variables(tmp_path, flickr_server):
    result = run(tmp_path, flickr_server, key="", secret="")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "FLICKR_API_KEY" in failure.event_specific_data.error.to_string()
    assert not (tmp_path / "sources" / "flickr").exists()


def test_a_wrong_key_is_a_permanent_error_naming_the_method(tmp_path, flickr_server):
    result = run(tmp_path, flickr_server, key="not-the-key")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.to_string()
    assert "flickr." in message and "not-the-key" not in message


def test_an_image_outage_is_a_clear_failure_naming_the_photo_and_url(tmp_path, flickr_server):
    server = flickr_server
    victim = min(p.photo_id for p in server.photos)
    server.add_fault(http_error(503, target="image", times=50, match={"photo_id": victim}))
    result = run(tmp_path, server, max_attempts=2, retry_base_delay_s=0.01)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    error = failure.event_specific_data.error
    assert error.cls_name == "Failure"  # not a wrapped ImageDownloadError stack trace
    url = server.image_url(server.photo(victim), "z")
    assert f"image of photo {victim} at {url} failed: gave up after 2 attempts; last: HTTP 503" in error.message
    assert "resumes where it stopped" in error.message
    metadata = failure.event_specific_data.user_failure_data.metadata
    assert metadata["photo_id"].value == victim and metadata["url"].value == url

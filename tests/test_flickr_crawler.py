"""Guards the Flickr crawler against the local server: the ingest tables it builds, broken
images and bad records recorded (never dropped silently), clear errors, a crawl killed at any
step (or by SIGKILL) resuming to exactly the uninterrupted result without re-requesting a
finished page, re-crawls adding only new photos, and no secret in any file or log."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from flickr_server import (  # noqa: F401  (flickr_server is a fixture)
    TEST_KEY,
    TEST_SECRET,
    FakeTime,
    cut_image,
    flickr_clean_tag,
    flickr_fail,
    flickr_server,
    http_error,
    missing_field,
    replaced_image,
    truncated_image,
)

from tagrec_models.sources.flickr import (
    ClientConfig,
    CrawlSpec,
    CrawlStateError,
    FlickrClient,
    FlickrConfigError,
    FlickrCredentials,
    FlickrPermanentError,
    FlickrRetriesExhausted,
    ImageConfig,
    ImageDownloadError,
    ImageFetcher,
    RetryPolicy,
    crawl,
    load_ingest_tables,
    load_skips,
    recrawl,
)
from tagrec_models.sources.tables import IMAGE_BROKEN, IMAGE_OK

REPO = Path(__file__).resolve().parents[1]
POOLS = "flickr.groups.pools.getPhotos"
SEARCH = "flickr.photos.search"
CONTEXTS = "flickr.photos.getAllContexts"


class Killed(Exception):
    """Raised from ``on_step`` to stop a crawl the way a dying process would."""


def make_client(server, fake: FakeTime, **config) -> FlickrClient:
    config.setdefault("calls_per_hour", 1e12)
    config.setdefault("retry", RetryPolicy(max_attempts=4))
    return FlickrClient(
        FlickrCredentials(TEST_KEY, TEST_SECRET),
        ClientConfig(rest_url=server.rest_url, **config),
        clock=fake.clock,
        sleep=fake.sleep,
    )


def make_fetcher(fake: FakeTime) -> ImageFetcher:
    return ImageFetcher(ImageConfig(timeout_s=5, retry=RetryPolicy(max_attempts=4)), sleep=fake.sleep)


def run(kind, spec, server, crawl_dir, fake=None, **kw):
    fake = fake or FakeTime()
    return kind(spec, make_client(server, fake), crawl_dir, fetcher=make_fetcher(fake), **kw)


def snapshot(crawl_dir: Path) -> dict[str, pd.DataFrame]:
    """The ingest tables with image paths relative to the crawl directory, row order kept."""
    tables = load_ingest_tables(crawl_dir)
    images = tables.images.copy()
    images["path"] = images["path"].map(
        lambda p: None if pd.isna(p) else str(Path(p).relative_to(Path(crawl_dir).resolve()))
    )
    return {
        "photos": tables.photos,
        "photo_tags": tables.photo_tags,
        "photo_groups": tables.photo_groups,
        "images": images,
        "skips": load_skips(crawl_dir),
    }


def assert_same_tables(left: dict[str, pd.DataFrame], right: dict[str, pd.DataFrame]) -> None:
    for name in left:
        pd.testing.assert_frame_equal(left[name], right[name], obj=name)


def finished_pages(crawl_dir: Path) -> list[tuple[int, str, int]]:
    out = []
    for path in sorted((crawl_dir / "pages").glob("r*/*/p*.json")):
        out.append((int(path.parent.parent.name[1:]), path.parent.name, int(path.stem[1:])))
    return out


def listing_requests(server, query: str, page: int) -> int:
    if query == "search":
        return server.count(SEARCH, page=page)
    return server.count(POOLS, group_id=query.removeprefix("group-"), page=page)


def expected_ids(server, spec: CrawlSpec) -> set[str]:
    wanted = {flickr_clean_tag(t) for t in spec.tags}
    out = set()
    for photo in server.visible():
        in_group = any(g in photo.group_ids for g in spec.group_ids)
        tagged = bool(wanted & {flickr_clean_tag(t) for t in photo.raw_tags})
        if in_group or tagged:
            out.add(photo.photo_id)
    return out


# -- what a crawl stores ------------------------------------------------------------------------


def test_crawl_builds_the_ingest_tables(flickr_server, tmp_path):
    server = flickr_server
    arrows, containers = server.group_by_name("shapes/arrows"), server.group_by_name("containers")
    spec = CrawlSpec(group_ids=(arrows.group_id, containers.group_id), tags=("pattern",), per_page=4)
    summary = run(crawl, spec, server, tmp_path / "crawl")
    tables = load_ingest_tables(tmp_path / "crawl")
    ids = expected_ids(server, spec)
    assert set(tables.photos["photo_id"]) == ids and len(ids) == 3 + 2 + 9
    assert summary.complete and summary.rounds == 1 and summary.photos == len(ids)
    assert (summary.images_ok, summary.images_broken, summary.skipped) == (len(ids), 0, 0)
    assert summary.api_calls[CONTEXTS] == len(ids)  # one getAllContexts per photo, no repeats
    for row in tables.photos.itertuples():
        photo = server.photo(row.photo_id)
        assert (row.owner, row.title, row.license, row.source) == (photo.owner, photo.title, "9", "flickr")
        assert row.date_uploaded == pd.Timestamp(photo.date_uploaded, unit="s", tz="UTC")
        assert row.url == server.image_url(photo, "z")
        tags = tables.photo_tags[tables.photo_tags["photo_id"] == row.photo_id]
        assert list(tags["raw_tag"]) == [flickr_clean_tag(t) for t in photo.raw_tags]
        assert list(tags["tag"]) == list(tags["raw_tag"])  # already lower case
        groups = tables.photo_groups[tables.photo_groups["photo_id"] == row.photo_id]
        assert sorted(groups["group_id"]) == sorted(photo.group_ids)  # every pool, not only crawled
        image = tables.images[tables.images["photo_id"] == row.photo_id].iloc[0]
        assert image["status"] == IMAGE_OK and image["reason"] == ""
        assert image["sha256"] == hashlib.sha256(photo.png.read_bytes()).hexdigest()
        assert (image["width"], image["height"]) == (photo.width, photo.height)
        assert Path(image["path"]).is_absolute() and Path(image["path"]).read_bytes() == photo.png.read_bytes()
    in_two = tables.photo_groups.groupby("photo_id").size()
    assert set(in_two[in_two == 2].index) == {p.photo_id for p in server.photos if len(p.group_ids) == 2}


def test_raw_tags_from_getinfo_keep_the_authors_spelling(flickr_server, tmp_path):
    server = flickr_server
    group = server.group_by_name("science/medicine")
    spec = CrawlSpec(group_ids=(group.group_id,), fetch_raw_tags=True, download_images=False)
    run(crawl, spec, server, tmp_path / "c")
    tables = load_ingest_tables(tmp_path / "c")
    tags = tables.photo_tags.set_index("photo_id")
    siringa = next(p for p in server.photos if p.title == "siringa")
    assert tags.loc[siringa.photo_id, "raw_tag"] == "architetto francesco rollandin"
    assert tags.loc[siringa.photo_id, "tag"] == "architetto francesco rollandin"
    assert server.count("flickr.photos.getInfo") == len(tables.photos) == 3
    assert tables.images.empty and server.count("image") == 0


def test_broken_images_are_recorded_with_their_reason(flickr_server, tmp_path):
    server = flickr_server
    group = server.group_by_name("special/patterns")
    members = sorted(p.photo_id for p in server.photos if group.group_id in p.group_ids)
    truncated, missing, cut, limited = members[:4]
    server.add_fault(
        truncated_image(300, match={"photo_id": truncated}),
        http_error(404, target="image", match={"photo_id": missing}),
        cut_image(100, match={"photo_id": cut}),  # an outage, not a broken file: retried
        http_error(429, retry_after=3, target="image", match={"photo_id": limited}),
    )
    fake = FakeTime()
    summary = run(crawl, CrawlSpec(group_ids=(group.group_id,)), server, tmp_path / "c", fake=fake)
    images = load_ingest_tables(tmp_path / "c").images.set_index("photo_id")
    assert len(images) == len(members) and summary.images_broken == 2
    row = images.loc[truncated]
    assert row["status"] == IMAGE_BROKEN and row["reason"].startswith("does not decode")
    data = server.photo(truncated).png.read_bytes()[:300]
    assert Path(row["path"]).read_bytes() == data and row["sha256"] == hashlib.sha256(data).hexdigest()
    assert pd.isna(row["width"])
    row = images.loc[missing]
    assert (row["status"], row["reason"]) == (IMAGE_BROKEN, "HTTP 404") and pd.isna(row["path"])
    assert images.loc[cut, "status"] == IMAGE_OK and server.count("image", photo_id=cut) == 2
    assert images.loc[limited, "status"] == IMAGE_OK and 3.0 in fake.sleeps


def decompression_bomb_png() -> bytes:
    """A real PNG of 8000 x 8000 one-bit pixels (64 Mpx) that compresses to a few kilobytes."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def test_an_image_over_max_pixels_is_broken_with_its_reason_not_decoded(flickr_server, tmp_path):
    server = flickr_server
    spec = CrawlSpec(tags=("container",))
    victim = sorted(expected_ids(server, spec))[0]
    bomb = decompression_bomb_png()
    assert len(bomb) < 100_000
    server.add_fault(replaced_image(bomb, match={"photo_id": victim}))
    summary = run(crawl, spec, server, tmp_path / "c")
    images = load_ingest_tables(tmp_path / "c").images.set_index("photo_id")
    row = images.loc[victim]
    assert row["status"] == IMAGE_BROKEN and pd.isna(row["width"])
    assert row["reason"] == "too large to decode safely: 8000x8000 = 64,000,000 pixels > max_pixels 50,000,000"
    assert row["sha256"] == hashlib.sha256(bomb).hexdigest()
    assert (summary.images_ok, summary.images_broken) == (1, 1)
    # Not a passing failure: a later crawl does not ask for it again.
    server.reset_log()
    run(crawl, spec, server, tmp_path / "c")
    assert server.count("image") == 0


def test_a_truncated_download_is_asked_for_again_by_the_next_crawl(flickr_server, tmp_path):
    """A one-off truncated transfer is retried on the next crawl (and re-crawl) until it
    decodes, up to MAX_IMAGE_DOWNLOADS downloads; a 404 is the answer and is not retried."""
    server = flickr_server
    group = server.group_by_name("special/patterns")
    members = sorted(p.photo_id for p in server.photos if group.group_id in p.group_ids)
    once, always, missing = members[:3]
    server.add_fault(
        truncated_image(300, match={"photo_id": once}),
        truncated_image(300, times=50, match={"photo_id": always}),
        http_error(404, target="image", match={"photo_id": missing}, times=50),
    )
    spec = CrawlSpec(group_ids=(group.group_id,))
    first = run(crawl, spec, server, tmp_path / "c")
    assert first.images_broken == 3
    second = run(crawl, spec, server, tmp_path / "c")
    images = load_ingest_tables(tmp_path / "c").images.set_index("photo_id")
    assert images.loc[once, "status"] == IMAGE_OK and second.images_retried == 2
    assert images.loc[once, "sha256"] == hashlib.sha256(server.photo(once).png.read_bytes()).hexdigest()
    assert Path(images.loc[once, "path"]).read_bytes() == server.photo(once).png.read_bytes()
    third = run(recrawl, spec, server, tmp_path / "c")
    images = load_ingest_tables(tmp_path / "c").images.set_index("photo_id")
    assert third.images_retried == 1 and images.loc[always, "reason"].endswith("(gave up after 3 downloads)")
    assert (images.loc[missing, "status"], images.loc[missing, "reason"]) == (IMAGE_BROKEN, "HTTP 404")
    assert server.count("image", photo_id=always) == 3 and server.count("image", photo_id=missing) == 1
    server.reset_log()
    assert run(recrawl, spec, server, tmp_path / "c").images_retried == 0 and server.count("image") == 0


@pytest.mark.parametrize("listing", ["pool", "search"])
def test_a_photo_skipped_for_a_missing_field_is_listed_again_by_the_next_recrawl(flickr_server, tmp_path, listing):
    server = flickr_server
    if listing == "pool":
        spec, method = CrawlSpec(group_ids=(server.group_by_name("special/patterns").group_id,), per_page=4), POOLS
    else:
        spec, method = CrawlSpec(tags=("pattern",), per_page=4), SEARCH
    run(crawl, spec, server, tmp_path / "whole")
    members = sorted(expected_ids(server, spec))  # ids grow with upload dates
    # The one-off fault hits the first listing request: put its photo on page 1 (pools list
    # the newest first, the search the oldest first).
    flaky = members[-2] if listing == "pool" else members[1]
    broken = members[4]
    server.add_fault(
        missing_field("dateupload", photo_id=flaky, method=method),
        missing_field("owner", photo_id=broken, method=method, times=50),
    )
    run(crawl, spec, server, tmp_path / "c")
    assert set(load_skips(tmp_path / "c")["photo_id"]) == {flaky, broken}
    for _ in range(3):
        run(recrawl, spec, server, tmp_path / "c")
    photos = load_ingest_tables(tmp_path / "c").photos
    assert set(photos["photo_id"]) == set(members) - {broken}
    skips = load_skips(tmp_path / "c")
    assert list(skips["photo_id"]) == [broken] * 3  # one per round it was listed, then for good
    assert skips["reason"].iloc[-1] == "missing field 'owner' (in 3 rounds)"
    server.reset_log()
    run(recrawl, spec, server, tmp_path / "c")
    assert server.count(CONTEXTS) == 0


def test_bad_records_and_deleted_photos_are_skips_not_silent_drops(flickr_server, tmp_path):
    server = flickr_server
    group = server.group_by_name("special/patterns")
    members = sorted(p.photo_id for p in server.photos if group.group_id in p.group_ids)
    no_date, deleted = members[0], members[1]
    server.add_fault(
        missing_field("dateupload", photo_id=no_date, method=POOLS),
        flickr_fail(1, "Photo not found", method=CONTEXTS, match={"photo_id": deleted}),
    )
    run(crawl, CrawlSpec(group_ids=(group.group_id,)), server, tmp_path / "c")
    tables = load_ingest_tables(tmp_path / "c")
    assert set(tables.photos["photo_id"]) == set(members) - {no_date, deleted}
    skips = load_skips(tmp_path / "c").set_index("photo_id")["reason"]
    assert skips[no_date] == "missing field 'dateupload'"
    assert "getAllContexts(photo_id='%s')" % deleted in skips[deleted] and "Photo not found" in skips[deleted]


def test_unknown_group_stops_the_crawl_with_a_clear_error(flickr_server, tmp_path):
    server = flickr_server
    good = server.group_by_name("containers")
    spec = CrawlSpec(group_ids=(good.group_id, "999@N99"))
    with pytest.raises(FlickrPermanentError, match=r"group_id='999@N99'.*Group not found"):
        run(crawl, spec, server, tmp_path / "c")
    with pytest.raises(CrawlStateError, match="not finished"):
        load_ingest_tables(tmp_path / "c")
    partial = load_ingest_tables(tmp_path / "c", require_complete=False)
    assert len(partial.photos) == 2  # the good group's finished page is kept
    assert server.count(POOLS, group_id="999@N99") == 1  # permanent: not retried


def test_spec_and_directory_misuse_get_clear_errors(flickr_server, tmp_path):
    with pytest.raises(FlickrConfigError, match="nothing to crawl"):
        CrawlSpec()
    with pytest.raises(FlickrConfigError, match="per_page"):
        CrawlSpec(tags=("a",), per_page=0)
    with pytest.raises(FlickrConfigError, match="image_size"):
        CrawlSpec(tags=("a",), image_size="url_zz")
    with pytest.raises(FlickrConfigError, match="one string"):
        CrawlSpec(group_ids="123@N01")
    with pytest.raises(CrawlStateError, match="no Flickr crawl"):
        load_ingest_tables(tmp_path / "empty")
    run(crawl, CrawlSpec(tags=("container",)), flickr_server, tmp_path / "c")
    with pytest.raises(CrawlStateError, match=r"another spec \(tags: stored \['container'\], given \['pattern'\]\)"):
        run(crawl, CrawlSpec(tags=("pattern",)), flickr_server, tmp_path / "c")


def test_finished_crawl_is_a_noop(flickr_server, tmp_path):
    spec = CrawlSpec(tags=("pattern",), per_page=4)
    run(crawl, spec, flickr_server, tmp_path / "c")
    before = snapshot(tmp_path / "c")
    flickr_server.reset_log()
    summary = run(crawl, spec, flickr_server, tmp_path / "c")
    assert flickr_server.log == [] and summary.pages_fetched == 0 and summary.pages_reused == 3
    assert_same_tables(before, snapshot(tmp_path / "c"))


def test_outage_outlasting_retries_stops_and_resumes_without_refetching(flickr_server, tmp_path):
    server = flickr_server
    spec = CrawlSpec(tags=("pattern",), per_page=4)
    server.add_fault(http_error(500, times=50, method=SEARCH, match={"page": 2}))
    fake = FakeTime()
    client = make_client(server, fake, retry=RetryPolicy(max_attempts=2))
    with pytest.raises(FlickrRetriesExhausted, match="page='2'"):
        crawl(spec, client, tmp_path / "c", fetcher=make_fetcher(fake))
    assert finished_pages(tmp_path / "c") == [(0, "search", 1)]
    server.faults.clear()
    crawl(spec, client, tmp_path / "c", fetcher=make_fetcher(fake))
    assert server.count(SEARCH, page=1) == 1 and server.count(SEARCH, page=2) == 3
    assert len(load_ingest_tables(tmp_path / "c").photos) == 9


def test_image_outage_outlasting_retries_stops_the_crawl_instead_of_recording_broken(flickr_server, tmp_path):
    server = flickr_server
    spec = CrawlSpec(tags=("container",))
    victim = sorted(expected_ids(server, spec))[1]
    server.add_fault(http_error(503, target="image", times=50, match={"photo_id": victim}))
    with pytest.raises(ImageDownloadError, match=f"photo {victim}.*gave up after 4 attempts; last: HTTP 503"):
        run(crawl, spec, server, tmp_path / "c")
    server.faults.clear()
    summary = run(crawl, spec, server, tmp_path / "c")
    assert (summary.images_ok, summary.images_broken) == (2, 0)


def test_limits_and_min_upload_date(flickr_server, tmp_path):
    server = flickr_server
    shapes = server.group_by_name("shapes")
    members = sorted((p for p in server.photos if shapes.group_id in p.group_ids), key=lambda p: p.date_uploaded)
    since = members[len(members) // 2].date_uploaded
    spec = CrawlSpec(group_ids=(shapes.group_id,), tags=("pattern",), min_upload_date=since, per_page=5)
    run(crawl, spec, server, tmp_path / "since", fake=FakeTime())
    photos = load_ingest_tables(tmp_path / "since").photos
    assert (photos["date_uploaded"] >= pd.Timestamp(since, unit="s", tz="UTC")).all()
    assert set(photos["photo_id"]) >= {p.photo_id for p in members if p.date_uploaded >= since}
    assert all(e.params["min_upload_date"] == str(since) for e in server.log if e.method == SEARCH)
    server.reset_log()
    limited = CrawlSpec(group_ids=(shapes.group_id,), tags=("pattern",), per_page=5, max_pages=2, download_images=False)
    summary = run(crawl, limited, server, tmp_path / "pages")
    assert server.count(POOLS) == 2 and server.count(SEARCH) == 2 and summary.photos <= 20
    budget = CrawlSpec(group_ids=(shapes.group_id,), tags=("pattern",), per_page=5, max_photos=7, download_images=False)
    summary = run(crawl, budget, server, tmp_path / "budget")
    assert summary.photos == 7 and summary.complete


# -- killed and resumed -------------------------------------------------------------------------


def killer(at: int):
    counter = itertools.count(1)

    def on_step(name: str) -> None:
        if next(counter) == at:
            raise Killed(name)

    return on_step


KILL_SPECS = {
    "groups+search": lambda s: CrawlSpec(
        group_ids=(s.group_by_name("special/patterns").group_id,), tags=("container",), per_page=4
    ),
    "photo budget": lambda s: CrawlSpec(
        group_ids=(s.group_by_name("special/patterns").group_id,), tags=("container",), per_page=4, max_photos=6
    ),
}


@pytest.mark.parametrize("which", sorted(KILL_SPECS))
def test_killed_at_every_step_resumes_to_the_uninterrupted_result(flickr_server, tmp_path, which):
    server = flickr_server
    spec = KILL_SPECS[which](server)
    steps: list[str] = []
    run(crawl, spec, server, tmp_path / "whole", on_step=steps.append)
    whole = snapshot(tmp_path / "whole")
    assert len(steps) > 10 and any(s.startswith("image") for s in steps)
    for at in range(1, len(steps) + 1):
        crawl_dir = tmp_path / f"killed-{at}"
        server.reset_log()
        with pytest.raises(Killed):
            run(crawl, spec, server, crawl_dir, on_step=killer(at))
        done_before = finished_pages(crawl_dir)
        run(crawl, spec, server, crawl_dir)
        assert_same_tables(whole, snapshot(crawl_dir))
        for _, query, page in done_before:
            assert listing_requests(server, query, page) == 1, (at, query, page)
        stored_before = {
            p["photo_id"]
            for _, query, page in done_before
            for p in json.loads((crawl_dir / "pages" / "r0000" / query / f"p{page:06d}.json").read_text())["photos"]
        }
        for photo_id in stored_before:
            assert server.count(CONTEXTS, photo_id=photo_id) == 1
            assert server.count("image", photo_id=photo_id) == 1


def test_sigkill_midway_then_resume(flickr_server, tmp_path):
    """A real process killed with SIGKILL at an arbitrary moment (no clean-up runs)."""
    server = flickr_server
    spec = CrawlSpec(group_ids=(server.group_by_name("shapes").group_id,), tags=("pattern",), per_page=3)
    run(crawl, spec, server, tmp_path / "whole")
    whole = snapshot(tmp_path / "whole")
    server.reset_log()
    script = (
        "import json, os, sys\n"
        "from tagrec_models.sources.flickr import *\n"
        "client = FlickrClient(FlickrCredentials(os.environ['FLICKR_API_KEY'], os.environ['FLICKR_API_SECRET']),\n"
        "                      ClientConfig(rest_url=sys.argv[1], calls_per_hour=30000))\n"
        "crawl(CrawlSpec(**json.loads(sys.argv[3])), client, sys.argv[2])\n"
    )
    spec_json = json.dumps({"group_ids": list(spec.group_ids), "tags": list(spec.tags), "per_page": spec.per_page})
    env = dict(os.environ, PYTHONPATH=str(REPO), FLICKR_API_KEY=TEST_KEY, FLICKR_API_SECRET=TEST_SECRET)
    crawl_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-c", script, server.rest_url, str(crawl_dir), spec_json], cwd=REPO, env=env
    )
    try:
        deadline = time.monotonic() + 60
        while server.count(CONTEXTS) < 8 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the crawl finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    done_before = finished_pages(crawl_dir)
    assert done_before, "no page was finished before the kill"
    run(crawl, spec, server, crawl_dir)
    assert_same_tables(whole, snapshot(crawl_dir))
    for _, query, page in done_before:
        assert listing_requests(server, query, page) == 1


WRITE_FAILS_MIDWAY = (
    "import json, os, resource, signal, sys\n"
    "from tagrec_models.sources.flickr import *\n"
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[4]), int(sys.argv[4])))\n"
    "client = FlickrClient(FlickrCredentials(os.environ['FLICKR_API_KEY'], os.environ['FLICKR_API_SECRET']),\n"
    "                      ClientConfig(rest_url=sys.argv[1], calls_per_hour=30000))\n"
    "crawl(CrawlSpec(**json.loads(sys.argv[3])), client, sys.argv[2])\n"
)


def test_an_image_write_cut_midway_is_never_reused_as_a_finished_file(flickr_server, tmp_path):
    """The process dies inside the image write (a file-size limit cuts it after 20 kB, as a
    full disk or a kill would): the resumed crawl must download the image again, never take a
    half-written file under the image's final name as finished."""
    server = flickr_server
    spec = CrawlSpec(group_ids=(server.group_by_name("buildings/homes").group_id,))
    (photo,) = [p for p in server.photos if spec.group_ids[0] in p.group_ids]
    limit = 20_000
    assert photo.png.stat().st_size > 2 * limit
    run(crawl, spec, server, tmp_path / "whole")
    crawl_dir = tmp_path / "cut"
    env = dict(os.environ, PYTHONPATH=str(REPO), FLICKR_API_KEY=TEST_KEY, FLICKR_API_SECRET=TEST_SECRET)
    done = subprocess.run(
        [sys.executable, "-c", WRITE_FAILS_MIDWAY, server.rest_url, str(crawl_dir),
         json.dumps({"group_ids": list(spec.group_ids)}), str(limit)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode != 0 and "File too large" in done.stderr, done.stderr[-2000:]
    assert server.count("image", photo_id=photo.photo_id) == 2
    assert not list((crawl_dir / "images").glob(f"{photo.photo_id}.*"))  # no partial final file
    run(crawl, spec, server, crawl_dir)
    assert_same_tables(snapshot(tmp_path / "whole"), snapshot(crawl_dir))
    assert server.count("image", photo_id=photo.photo_id) == 3
    assert not [p for p in crawl_dir.rglob("*.tmp")]


# -- re-crawls ----------------------------------------------------------------------------------


def test_recrawl_adds_only_photos_uploaded_since_the_cursor(flickr_server, tmp_path):
    server = flickr_server
    spec = CrawlSpec(group_ids=(server.group_by_name("shapes").group_id,), tags=("shape",), per_page=4)
    server.show_first(25)
    first = run(crawl, spec, server, tmp_path / "c")
    ids_first = expected_ids(server, spec)
    assert first.photos == len(ids_first) > 0
    cursor = first.cursors["search"]["date_uploaded"]
    assert cursor == max(server.photo(i).date_uploaded for i in ids_first if "shape" in server.photo(i).raw_tags)

    server.show_first(len(server.photos))  # the rest is "uploaded" now
    server.reset_log()
    second = run(recrawl, spec, server, tmp_path / "c")
    ids_all = expected_ids(server, spec)
    tables = load_ingest_tables(tmp_path / "c")  # IngestTables refuses duplicate photo ids
    assert set(tables.photos["photo_id"]) == ids_all
    assert second.new_photos == len(ids_all - ids_first) > 0 and second.rounds == 2
    # The search asked only from the cursor on; no old photo was fetched again.
    searches = [e.params for e in server.log if e.method == SEARCH]
    assert searches and all(p["min_upload_date"] == str(cursor) for p in searches)
    assert {e.params["photo_id"] for e in server.log if e.method == CONTEXTS} == ids_all - ids_first
    # The pool (newest first) was read only until its first old photo.
    pool_pages = len({e.params["page"] for e in server.log if e.method == POOLS})
    full_pool_pages = -(-sum(1 for p in server.photos if spec.group_ids[0] in p.group_ids) // spec.per_page)
    assert pool_pages < full_pool_pages

    # Same data as one crawl of everything, up to row order.
    run(crawl, spec, server, tmp_path / "fresh")
    fresh = load_ingest_tables(tmp_path / "fresh")
    for name in ("photos", "photo_tags", "photo_groups"):
        left, right = getattr(tables, name), getattr(fresh, name)
        key = list(left.columns)
        pd.testing.assert_frame_equal(
            left.sort_values(key).reset_index(drop=True), right.sort_values(key).reset_index(drop=True)
        )

    server.reset_log()
    third = run(recrawl, spec, server, tmp_path / "c")
    assert third.new_photos == 0 and third.photos == len(ids_all) and third.rounds == 3
    assert server.count(CONTEXTS) == 0 and server.count("image") == 0


def test_recrawl_killed_midway_resumes_with_its_stored_cursor(flickr_server, tmp_path):
    server = flickr_server
    spec = CrawlSpec(group_ids=(server.group_by_name("special/patterns").group_id,), tags=("shape",), per_page=3)
    server.show_first(40)
    run(crawl, spec, server, tmp_path / "whole")
    run(crawl, spec, server, tmp_path / "killed")
    server.show_first(len(server.photos))
    steps: list[str] = []
    run(recrawl, spec, server, tmp_path / "whole", on_step=steps.append)
    assert len(steps) > 6
    with pytest.raises(Killed):
        run(recrawl, spec, server, tmp_path / "killed", on_step=killer(len(steps) // 2))
    # Resuming is a plain crawl() (or recrawl()): it finishes the round that was cut short.
    summary = run(crawl, spec, server, tmp_path / "killed")
    assert summary.rounds == 2
    assert_same_tables(snapshot(tmp_path / "whole"), snapshot(tmp_path / "killed"))
    state = json.loads((tmp_path / "killed" / "state.json").read_text())
    assert state["rounds"][1]["cursors"] == json.loads((tmp_path / "whole" / "state.json").read_text())["rounds"][1]["cursors"]


def sorted_tables(crawl_dir: Path) -> dict[str, pd.DataFrame]:
    """The ingest tables up to row order (image paths relative to the crawl directory)."""
    out = {}
    for name, frame in snapshot(crawl_dir).items():
        if name == "skips":
            continue
        out[name] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    return out


CAPS = {
    "max_photos": {"max_photos": 4},  # with 3 per page: 2 photos listed on page 2 and dropped
    "max_pages": {"max_pages": 1},
    "both": {"max_photos": 4, "max_pages": 2},
}


@pytest.mark.parametrize("cap", sorted(CAPS))
@pytest.mark.parametrize("listing", ["pool", "search"])
def test_capped_crawl_then_uncapped_recrawls_converge_to_one_uncapped_crawl(flickr_server, tmp_path, cap, listing):
    """A round cut by max_photos / max_pages must not move the cursor past what it left out:
    the search past photos listed but dropped by the budget, the pool (newest first) past the
    pages it never read."""
    server = flickr_server
    fields = (
        {"group_ids": (server.group_by_name("shapes").group_id,)}
        if listing == "pool"
        else {"tags": ("shape", "unsorted", "pattern", "jigsaw")}
    )
    spec = CrawlSpec(per_page=3, download_images=False, **fields)
    run(crawl, spec, server, tmp_path / "whole")
    whole = sorted_tables(tmp_path / "whole")
    assert len(whole["photos"]) >= 11
    capped = CrawlSpec(per_page=3, download_images=False, **fields, **CAPS[cap])
    first = run(crawl, capped, server, tmp_path / "c")
    assert first.photos < len(whole["photos"])
    run(recrawl, spec, server, tmp_path / "c")
    for name, frame in sorted_tables(tmp_path / "c").items():
        pd.testing.assert_frame_equal(frame, whole[name], obj=name)
    server.reset_log()
    again = run(recrawl, spec, server, tmp_path / "c")
    assert again.new_photos == 0 and server.count(CONTEXTS) == 0


@pytest.mark.slow
def test_recrawl_killed_at_every_step_resumes_to_the_uninterrupted_result(flickr_server, tmp_path):
    server = flickr_server
    spec = CrawlSpec(group_ids=(server.group_by_name("shapes").group_id,), tags=("shape",), per_page=4)
    server.show_first(25)
    run(crawl, spec, server, tmp_path / "base")
    server.show_first(len(server.photos))
    steps: list[str] = []
    whole_dir = tmp_path / "whole"
    shutil.copytree(tmp_path / "base", whole_dir)
    run(recrawl, spec, server, whole_dir, on_step=steps.append)
    whole = snapshot(whole_dir)
    for at in range(1, len(steps) + 1):
        crawl_dir = tmp_path / f"killed-{at}"
        shutil.copytree(tmp_path / "base", crawl_dir)
        server.reset_log()
        with pytest.raises(Killed):
            run(recrawl, spec, server, crawl_dir, on_step=killer(at))
        done_before = [p for p in finished_pages(crawl_dir) if p[0] == 1]
        # crawl() finishes the cut round and never starts another (a recrawl() would start
        # round 2 when the kill came after round 1 was marked complete).
        run(crawl, spec, server, crawl_dir)
        assert_same_tables(whole, snapshot(crawl_dir))
        for _, query, page in done_before:
            assert listing_requests(server, query, page) == 1, (at, query, page)


# -- secrets ------------------------------------------------------------------------------------


def test_no_secret_in_crawl_files_or_logs(flickr_server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    lines: list[str] = []
    flickr_server.add_fault(http_error(500, method=SEARCH))
    spec = CrawlSpec(tags=("container",), fetch_raw_tags=True)
    summary = run(crawl, spec, flickr_server, tmp_path / "c", log=lines.append)
    assert summary.photos == 2 and lines
    seen = [caplog.text, *lines, repr(summary), repr(spec)]
    for path in (tmp_path / "c").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert TEST_KEY.encode() not in data and TEST_SECRET.encode() not in data, path
    assert all(TEST_KEY not in s and TEST_SECRET not in s for s in seen)

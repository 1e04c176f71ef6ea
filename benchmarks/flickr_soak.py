"""Fault-and-kill soak of the Flickr crawl through Dagster itself (`make soak`).

Each trial crawls the project's local Flickr test server (``tests/flickr_server.py``, the real
openclipart sample, 127.0.0.1 only) into a fresh crawl folder with `dagster asset materialize`
in its own process, under random transient faults (HTTP 500/429, malformed JSON, Flickr's
transient error codes, slow answers, connections cut mid-image), SIGKILLs the run process
group at random moments a random number of times, and runs the crawl again until it succeeds.
The ``pool_watch`` sensor is ticked while a run waits, as the Dagster daemon would. It prints:

* photos recovered: photos in the final tables / photos one fault-free crawl gets (expect 100%)
* duplicates: photo rows beyond one per photo id across every finished page (expect 0)
* re-requested pages: listing pages finished before a kill and asked for again after it (0)
* stuck runs: runs that never finished or stayed STARTED / queued at the end (expect 0)

Bounded: ``--trials`` (default 4) and ``--minutes`` (default 15: later trials are skipped).
Everything is written under ``--home`` (default: a new temporary folder, removed at the end
unless ``--keep``).

    python benchmarks/flickr_soak.py [--trials 4] [--seed 0] [--minutes 15] [--home DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import dagster as dg  # noqa: E402
from flickr_server import (  # noqa: E402
    TEST_KEY,
    TEST_SECRET,
    FlickrTestServer,
    cut_image,
    dagster_environment,
    flickr_fail,
    http_error,
    malformed_json,
    slow,
)

POOLS = "flickr.groups.pools.getPhotos"
SEARCH = "flickr.photos.search"
CONTEXTS = "flickr.photos.getAllContexts"
GROUPS = ("shapes", "special/patterns")
TAGS = ("jigsaw",)
PER_PAGE = 3
RUN_LIMIT_S = 300  # a run that has not finished by then counts as stuck


def crawl_config(crawl_name: str, group_ids: tuple[str, ...]) -> dict:
    return {"ops": {"flickr__crawl": {"config": {
        "crawl_name": crawl_name, "group_ids": list(group_ids), "tags": list(TAGS), "per_page": PER_PAGE,
    }}}}


def environment(home: Path, server: FlickrTestServer) -> dict[str, str]:
    return dagster_environment(home, server, retry_base_delay_s=0.05)


def start_run(home: Path, server: FlickrTestServer, crawl_name: str, group_ids: tuple[str, ...]) -> subprocess.Popen:
    dagster = Path(sys.executable).parent / "dagster"
    return subprocess.Popen(
        [str(dagster), "asset", "materialize", "-m", "pipelines.definitions", "--select", "flickr/crawl",
         "--config-json", json.dumps(crawl_config(crawl_name, group_ids))],
        cwd=REPO, env=environment(home, server), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def random_faults(rng: random.Random) -> list:
    """Transient faults only (each within the client's retries): every photo must come back."""
    faults = []
    for _ in range(rng.randint(2, 6)):
        method = rng.choice([POOLS, SEARCH, CONTEXTS])
        kind = rng.choice(["500", "429", "malformed", "transient_code", "slow", "cut"])
        times = rng.randint(1, 3)
        if kind == "500":
            faults.append(http_error(500, method=method, times=times))
        elif kind == "429":
            faults.append(http_error(429, retry_after=1, method=method, times=1))
        elif kind == "malformed":
            faults.append(malformed_json(method=method, times=times))
        elif kind == "transient_code":
            faults.append(flickr_fail(105, "Service currently unavailable", method=method, times=times))
        elif kind == "slow":
            faults.append(slow(0.5, method=method, times=times))
        else:
            faults.append(cut_image(200, times=times))
    # Every photo's contexts call is a little slow, so that a crawl lasts long enough to be
    # killed in the middle.
    faults.append(slow(0.15, method=CONTEXTS, times=1000))
    return faults


def finished_pages(crawl_dir: Path) -> set[tuple[str, int]]:
    return {(path.parent.name, int(path.stem[1:])) for path in (crawl_dir / "pages").glob("r*/*/p*.json")}


def page_requests(server: FlickrTestServer, since: int) -> list[tuple[str, int]]:
    out = []
    for entry in server.log[since:]:
        if entry.method == POOLS:
            out.append((f"group-{entry.params.get('group_id')}", int(entry.params.get("page", 1))))
        elif entry.method == SEARCH:
            out.append(("search", int(entry.params.get("page", 1))))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--max-kills", type=int, default=2, help="SIGKILLs per trial at most")
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep --home (a temporary one is removed)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    home = args.home or Path(tempfile.mkdtemp(prefix="tagrec-soak-"))
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster" / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home / "dagster")

    from pipelines.instance import ready_instance
    from pipelines.monitoring import pool_watch
    from tagrec_models.sources.flickr import (
        ClientConfig, CrawlSpec, FlickrClient, FlickrCredentials, crawl, load_ingest_tables,
    )

    instance = ready_instance()
    deadline = time.monotonic() + args.minutes * 60
    totals = {"expected": 0, "recovered": 0, "duplicates": 0, "rerequested": 0, "stuck": 0, "kills": 0, "runs": 0}
    server = FlickrTestServer(REPO / "tests" / "fixtures" / "openclipart").start()
    try:
        group_ids = tuple(server.group_by_name(name).group_id for name in GROUPS)
        client = FlickrClient(FlickrCredentials(TEST_KEY, TEST_SECRET),
                              ClientConfig(rest_url=server.rest_url, calls_per_hour=10**7))
        spec = CrawlSpec(group_ids=group_ids, tags=TAGS, per_page=PER_PAGE)
        reference = crawl(spec, client, home / "reference")
        expected = set(load_ingest_tables(home / "reference").photos["photo_id"])
        print(f"soak: {args.trials} trials, reference crawl {reference.photos} photos; home {home}", flush=True)

        for trial in range(args.trials):
            if time.monotonic() > deadline:
                print(f"soak: time bound reached; {trial} of {args.trials} trials run", flush=True)
                break
            crawl_name = f"trial{trial:02d}"
            crawl_dir = home / "sources" / "flickr" / crawl_name
            server.faults.clear()
            server.reset_log()
            server.add_fault(*random_faults(rng))
            kills = rng.randint(0, args.max_kills)
            rerequested = stuck = 0
            previous_kill: tuple[set, int] | None = None
            for attempt in range(kills + 1):
                proc = start_run(home, server, crawl_name, group_ids)
                totals["runs"] += 1
                started = time.monotonic()
                kill_after = rng.uniform(0.3, 4.0) if attempt < kills else None
                calls_before = server.count(CONTEXTS)
                began_calls = None
                while proc.poll() is None:
                    if time.monotonic() - started > RUN_LIMIT_S:
                        stuck += 1
                        break
                    # Tick the sensor as the daemon would: dead runs released, waits reported.
                    pool_watch(dg.build_sensor_context(instance=instance))
                    if kill_after is not None:
                        # Kill only once this run is crawling (its first contexts call).
                        if began_calls is None and server.count(CONTEXTS) > calls_before:
                            began_calls = time.monotonic()
                        if began_calls is not None and time.monotonic() - began_calls >= kill_after:
                            break
                    time.sleep(0.25)
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
                    if kill_after is not None:
                        totals["kills"] += 1
                        done = finished_pages(crawl_dir)
                        since = len(server.log)
                        # The next run must not ask again for a page finished before the kill.
                        after_kill = (done, since)
                else:
                    after_kill = None
                if previous_kill is not None:
                    done, since = previous_kill
                    rerequested += sum(1 for page in page_requests(server, since) if page in done)
                previous_kill = after_kill
            pool_watch(dg.build_sensor_context(instance=instance))
            pages = [json.loads(p.read_text()) for p in sorted((crawl_dir / "pages").glob("r*/*/p*.json"))]
            ids = [photo["photo_id"] for page in pages for photo in page["photos"]]
            duplicates = len(ids) - len(set(ids))
            try:
                recovered = set(load_ingest_tables(crawl_dir).photos["photo_id"]) & expected
            except Exception as error:  # an unfinished crawl: report it, go on
                print(f"  trial {trial}: tables not readable: {error}", flush=True)
                recovered = set()
            totals["expected"] += len(expected)
            totals["recovered"] += len(recovered)
            totals["duplicates"] += duplicates
            totals["rerequested"] += rerequested
            totals["stuck"] += stuck
            print(f"  trial {trial}: {kills} kill(s), {len(recovered)}/{len(expected)} photos, "
                  f"{duplicates} duplicates, {rerequested} re-requested pages, {stuck} stuck", flush=True)
        unfinished = instance.get_runs(filters=dg.RunsFilter(statuses=[
            dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING,
            dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED]))
        totals["stuck"] += len(unfinished)
    finally:
        server.stop()
        if args.home is None and not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    share = 100.0 * totals["recovered"] / totals["expected"] if totals["expected"] else 0.0
    print(
        f"photos recovered: {share:.1f}% ({totals['recovered']}/{totals['expected']}), "
        f"duplicates: {totals['duplicates']}, re-requested pages: {totals['rerequested']}, "
        f"stuck runs: {totals['stuck']} ({totals['runs']} runs, {totals['kills']} SIGKILLs)"
    )
    ok = share == 100.0 and totals["duplicates"] == totals["rerequested"] == totals["stuck"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

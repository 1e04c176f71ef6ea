"""Guards the Dagster instance's recovery from killed runs: a crawl SIGKILLed inside Dagster
(`dagster asset materialize`) must not block later crawls (the pool_watch sensor marks the dead
run failed and frees its `flickr` pool slot), a step waiting for a pool says so at INFO with
the blocking run's id, the instance settings enable Dagster's run monitoring, and processes
opening a fresh DAGSTER_HOME at once all get a working instance."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.events import DagsterEventType
from flickr_server import dagster_environment, flickr_server, slow  # noqa: F401 (fixture)

from pipelines.monitoring import pool_watch
from tagrec_models.sources.flickr import load_ingest_tables

REPO = Path(__file__).resolve().parents[1]
CONTEXTS = "flickr.photos.getAllContexts"


def test_instance_settings_enable_run_monitoring_and_slot_freeing():
    settings = yaml.safe_load((REPO / "dagster.yaml").read_text())
    monitoring = settings["run_monitoring"]
    assert monitoring["enabled"] is True and monitoring["max_resume_run_attempts"] == 0
    assert 0 < monitoring["free_slots_after_run_end_seconds"] <= 60
    assert 0 < monitoring["poll_interval_seconds"] <= 60
    from pipelines.definitions import defs

    assert defs.resolve_sensor_def("pool_watch").default_status == dg.DefaultSensorStatus.RUNNING


OPEN_INSTANCE = (
    "import sys, time\n"
    "from pipelines.instance import ready_instance\n"
    "while time.time() < float(sys.argv[1]): time.sleep(0.002)  # open it together\n"
    "instance = ready_instance()\n"
    "print(len(instance.get_runs()), flush=True)\n"
)


def test_processes_opening_a_fresh_dagster_home_at_once_all_succeed(tmp_path):
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO)}
    start = str(time.time() + 4)  # after both processes have imported Dagster
    procs = [
        subprocess.Popen([sys.executable, "-c", OPEN_INSTANCE, start], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "0", err[-2000:]


# -- a crawl killed inside Dagster -------------------------------------------------------------


def materialize(home: Path, server, group_id: str) -> subprocess.Popen:
    """`dagster asset materialize` of flickr/crawl in its own process group."""
    config = {"ops": {"flickr__crawl": {"config": {"group_ids": [group_id], "per_page": 3}}}}
    env = dagster_environment(home, server)
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "pipelines.definitions",
         "--select", "flickr/crawl", "--config-json", json.dumps(config)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )


def wait_for(condition, what: str, proc: subprocess.Popen, limit_s: float = 240):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"{what}: the process ended first:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


@pytest.mark.slow
def test_a_crawl_killed_inside_dagster_does_not_block_the_next_one(tmp_path, flickr_server):
    server = flickr_server
    home = tmp_path / "home"
    (home / "dagster").mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster" / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home / "dagster")  # this process reads the same instance
    try:
        instance = dg.DagsterInstance.get()
        storage = instance.event_log_storage
        group = server.group_by_name("shapes")
        server.add_fault(slow(1.0, method=CONTEXTS, times=1000))  # a long crawl, to be killed

        first = materialize(home, server, group.group_id)
        try:
            holders = wait_for(lambda: storage.get_concurrency_info("flickr").claimed_slots,
                               "the first crawl to hold the flickr slot", first)
            wait_for(lambda: server.count(CONTEXTS) >= 2, "the first crawl to be under way", first)
            os.killpg(first.pid, signal.SIGKILL)
        finally:
            first.kill()
            first.wait(timeout=30)
        dead_run = holders[0].run_id
        assert instance.get_run_by_id(dead_run).status == dg.DagsterRunStatus.STARTED  # stuck

        second = materialize(home, server, group.group_id)
        try:
            pending = wait_for(
                lambda: [p for p in storage.get_concurrency_info("flickr").pending_steps
                         if p.run_id != dead_run],
                "the second crawl to wait for the flickr slot", second,
            )
            waiting_run = pending[0].run_id
            server.faults.clear()
            result = pool_watch(dg.build_sensor_context(instance=instance))
            assert "1 waiting step(s) reported, 1 dead run(s) released" in result.skip_message
            out, _ = second.communicate(timeout=300)
            assert second.returncode == 0, out[-3000:]
        finally:
            second.kill()
            second.wait(timeout=30)

        dead = instance.get_run_by_id(dead_run)
        assert dead.status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(waiting_run).status == dg.DagsterRunStatus.SUCCESS
        said = [
            r.event_log_entry
            for r in instance.get_records_for_run(waiting_run, of_type=DagsterEventType.ENGINE_EVENT).records
        ]
        assert any(
            e.level == logging.INFO
            and e.message == f"step flickr__crawl is waiting for a slot of pool 'flickr', held by run {dead_run} (step flickr__crawl)"
            for e in said
        ), [e.message for e in said]
        assert storage.get_concurrency_info("flickr").claimed_slots == []
        photos = load_ingest_tables(home / "sources" / "flickr" / "default").photos
        assert set(photos["photo_id"]) == {p.photo_id for p in server.photos if group.group_id in p.group_ids}
    finally:
        os.environ.pop("DAGSTER_HOME", None)


def test_assets_that_write_the_duckdb_database_queue_in_its_pool():
    from assets.datasets import FLICKR, OPENCLIPART
    from assets.factory import dataset_assets

    pools = {a.node_def.name: a.op.pool for spec in (OPENCLIPART, FLICKR) for a in dataset_assets(spec)}
    for writer in ("ingest", "tag_mapping", "assignments", "preprocess", "splits",
                   "paper1_results", "paper3_ccs", "paper2_lambda_sweep", "leaderboard"):
        assert pools[f"openclipart__{writer}"] == "duckdb", writer
    assert pools["flickr__ingest"] == "duckdb" and pools["flickr__crawl"] == "flickr"


def test_every_pool_a_step_queues_on_is_one_a_deployment_sets():
    """deploy/README.md sets each of ``assets.common.POOLS`` once on PostgreSQL (a pool first used
    by two runs at once races in Dagster's storage): a new pool must join that list."""
    from assets.common import POOLS
    from pipelines.definitions import defs

    used = {node.pool for a in defs.resolve_asset_graph().assets_defs
            for node in a.node_def.iterate_op_defs() if node.pool}
    assert used == set(POOLS)
    readme = (REPO / "deploy" / "README.md").read_text()
    for pool in POOLS:
        assert f"dagster instance concurrency set {pool}" in readme, pool

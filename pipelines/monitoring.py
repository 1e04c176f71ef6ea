"""Runs whose worker died, and steps waiting for a concurrency pool, made visible and undone.

A run whose process is SIGKILLed (or whose machine lost power) stays STARTED and keeps the
concurrency slots its steps claimed: every later step of the same pool (``flickr``: one crawl
per API key; ``gpu``; ``duckdb``) then waits for ever, logging only at DEBUG. Dagster's run
monitoring (``dagster.yaml``) can tell a dead run worker only where the run launcher can check
its health, which the default launcher (and ``dagster asset materialize``, which runs in its
own process) cannot; its ``free_slots_after_run_end_seconds`` then frees the slots of a run
once it is marked finished. This module supplies the missing half for a one-machine
deployment, with Dagster's own instance API:

* ``release_dead_runs``: a STARTED run whose worker process (the pid of its ``RUN_START``
  event) no longer exists on this machine is marked failed (``report_run_failed``, with the
  reason) and its concurrency slots are freed (``free_concurrency_slots_for_run``).
* ``report_blocked_steps``: every step waiting for a pool slot gets one INFO engine event in
  its own run's log naming the pool and the run (and step) that holds the slot.

The ``pool_watch`` sensor (on by default, every 30 s under the Dagster daemon that ``make ui``
starts) runs both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import dagster as dg
from dagster._core.events import DagsterEventType

Log = Callable[[str], None]
WATCH_INTERVAL_S = 30


@dataclass(frozen=True)
class BlockedStep:
    run_id: str
    step_key: str
    pool: str
    holders: tuple[tuple[str, str], ...]  # (run id, step key) of each claimed slot

    def message(self) -> str:
        held = ", ".join(f"run {run_id} (step {step})" for run_id, step in self.holders)
        return f"step {self.step_key} is waiting for a slot of pool '{self.pool}', held by {held}"


def _process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process on this machine (a zombie counts as dead: it has
    exited and only waits for its parent to collect it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of the process that started the run (its ``RUN_START`` event), if recorded."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_START, limit=1).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.pid is not None:
            return int(event.pid)
    return None


def release_dead_runs(instance: dg.DagsterInstance, log: Log | None = None) -> list[str]:
    """Mark failed every STARTED run whose worker process is gone, and free its pool slots;
    returns their run ids."""
    say = log or (lambda message: None)
    released = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        pid = run_worker_pid(instance, run.run_id)
        if pid is None or _process_alive(pid):
            continue
        message = (
            f"run worker process {pid} of run {run.run_id} no longer exists (killed or crashed); "
            "marking the run failed and freeing its concurrency slots"
        )
        held = _slots_held(instance, run.run_id)
        instance.report_run_failed(run, message)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        freed = ", ".join(f"pool '{pool}' (step {step})" for pool, step in held) or "none held"
        say(f"{message}; slots freed: {freed}")
        released.append(run.run_id)
    return released


def _slots_held(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    return [
        (pool, slot.step_key)
        for pool in sorted(storage.get_concurrency_keys())
        for slot in storage.get_concurrency_info(pool).claimed_slots
        if slot.run_id == run_id
    ]


def blocked_steps(instance: dg.DagsterInstance) -> list[BlockedStep]:
    """Every step waiting for a pool slot, with the runs and steps holding that pool's slots."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    out = []
    for pool in sorted(storage.get_concurrency_keys()):
        info = storage.get_concurrency_info(pool)
        holders = tuple(sorted((slot.run_id, slot.step_key) for slot in info.claimed_slots))
        for pending in info.pending_steps:
            if pending.assigned_timestamp is None:
                others = tuple(h for h in holders if h[0] != pending.run_id) or holders
                out.append(BlockedStep(pending.run_id, pending.step_key, pool, others))
    return out


def report_blocked_steps(instance: dg.DagsterInstance, log: Log | None = None) -> list[BlockedStep]:
    """Write one INFO engine event into each waiting step's run naming what blocks it (once
    per distinct message); returns the steps newly reported."""
    say = log or (lambda message: None)
    reported = []
    for blocked in blocked_steps(instance):
        run = instance.get_run_by_id(blocked.run_id)
        if run is None or run.is_finished:
            continue
        message = blocked.message()
        earlier = instance.get_records_for_run(blocked.run_id, of_type=DagsterEventType.ENGINE_EVENT).records
        if any(r.event_log_entry.message == message for r in earlier):
            continue
        instance.report_engine_event(message, run, step_key=blocked.step_key)
        say(f"run {blocked.run_id}: {message}")
        reported.append(blocked)
    return reported


@dg.sensor(
    name="pool_watch",
    minimum_interval_seconds=WATCH_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Says at INFO, in the waiting run's log, which run holds the pool slot a step waits "
        "for; marks failed the runs whose worker process died (SIGKILL, crash) and frees their "
        "pool slots, so a killed crawl never blocks the next one."
    ),
)
def pool_watch(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    reported = report_blocked_steps(context.instance, context.log.info)
    released = release_dead_runs(context.instance, context.log.info)
    return dg.SkipReason(
        f"{len(reported)} waiting step(s) reported, {len(released)} dead run(s) released"
    )

"""The Dagster instance under ``$DAGSTER_HOME``, made ready once before any work starts.

Two processes that open a fresh ``DAGSTER_HOME`` at the same moment both try to create the
SQLite tables and one crashes ("table runs already exists"). ``ready_instance`` opens the
instance under an exclusive file lock in ``DAGSTER_HOME``, so the first process creates the
storage and the others find it made; ``make dagster-home`` runs ``dagster instance migrate``
for the same reason before anything else starts.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import dagster as dg

LOCK_FILE = ".tagrec-instance.lock"


def ready_instance() -> dg.DagsterInstance:
    """``DagsterInstance.get()``, its storage created (or found) under a lock shared by every
    tagrec process of this ``DAGSTER_HOME``."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return dg.DagsterInstance.get()  # Dagster's own error names the variable
    Path(home).mkdir(parents=True, exist_ok=True)
    with open(Path(home) / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            instance = dg.DagsterInstance.get()
            # Touch every storage so that each one's tables exist before the lock is let go.
            instance.get_runs(limit=1)
            instance.event_log_storage.get_concurrency_keys()
            instance.schedule_storage.all_instigator_state() if instance.schedule_storage else None
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return instance

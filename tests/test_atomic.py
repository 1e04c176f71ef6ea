"""Guards the atomic writes (tagrec_models.storage.atomic): a writer SIGKILLed mid-write leaves
no half-written file under the real name, and its temporary file is removed by the next write
of the same target (or a folder sweep), while a live writer's temporary file is left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tagrec_models.storage.atomic import atomic_path, sweep_stale_temps, write_bytes

REPO = Path(__file__).resolve().parents[1]

KILLED_WRITER = """
import sys, time
from tagrec_models.storage.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    with tmp.open("wb") as handle:
        handle.write(b"half of it")
        handle.flush()
        print("writing", flush=True)
        time.sleep(60)
"""


def kill_mid_write(target: Path) -> None:
    """A real process that dies by SIGKILL inside ``atomic_path`` (no clean-up runs)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(target)],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)


def temps(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


def test_a_killed_writer_leaves_no_final_file_and_its_temp_is_swept_by_the_next_write(tmp_path):
    target = tmp_path / "table.parquet"
    kill_mid_write(target)
    assert not target.exists() and len(temps(tmp_path)) == 1
    write_bytes(target, b"whole")
    assert target.read_bytes() == b"whole" and temps(tmp_path) == []


def test_a_folder_sweep_removes_only_dead_writers_temps(tmp_path):
    kill_mid_write(tmp_path / "sub" / "a.json")
    (dead,) = temps(tmp_path / "sub")
    with atomic_path(tmp_path / "sub" / "b.json") as live:
        live.write_bytes(b"in progress")
        assert sweep_stale_temps(tmp_path, recursive=True) == [dead]
        assert live.exists()  # its writer holds the lock: not touched
        # Another write of the same target while this one runs keeps this one's file too.
        write_bytes(tmp_path / "sub" / "b.json", b"other")
        assert live.exists()
    assert (tmp_path / "sub" / "b.json").read_bytes() == b"in progress"
    assert temps(tmp_path / "sub") == []

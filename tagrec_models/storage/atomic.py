"""Atomic file writes: a crash mid-write never leaves a half-written file under the real name,
and the temporary file a killed writer leaves behind is removed by the next write.

Every write goes to a uniquely named temporary file beside the target
(``.<name>.<random>.tmp``, same folder, so the final ``os.replace`` is atomic) which the writer
holds an exclusive ``flock`` on until it is moved into place. A process killed mid-write
(SIGKILL: no clean-up runs) leaves its temporary file, but the kernel drops its lock, so a
later writer can tell a dead writer's leftover (lock free: removed) from a live writer's file
(lock held: left alone) without guessing from ages. ``atomic_path`` sweeps the leftovers of
its own target before writing; ``sweep_stale_temps`` sweeps a whole folder (a crawl does it
when it starts).
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from contextlib import contextmanager
from glob import escape
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

TEMP_SUFFIX = ".tmp"


def _temp_pattern(path: Path) -> str:
    return f".{escape(path.name)}.*{TEMP_SUFFIX}"


def _remove_if_abandoned(candidate: Path) -> bool:
    """Delete ``candidate`` when no live writer holds its lock; ``True`` when deleted."""
    try:
        handle = os.open(candidate, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False  # gone already, or not a plain file we made
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False  # a live writer is still on it
            raise
        try:
            candidate.unlink()
        except FileNotFoundError:
            return False
        return True
    finally:
        os.close(handle)


def sweep_stale_temps(folder: str | Path, *, recursive: bool = False) -> list[Path]:
    """Remove the temporary files that killed writers left in ``folder`` (and its sub-folders
    when ``recursive``); files of writers still running are kept. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = f".*{TEMP_SUFFIX}"
    candidates = folder.rglob(pattern) if recursive else folder.glob(pattern)
    return [path for path in sorted(candidates) if _remove_if_abandoned(path)]


def _locked_temp(path: Path) -> tuple[Path, int]:
    """A new temporary file beside ``path`` and an open descriptor holding its lock."""
    while True:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        fcntl.flock(fd, fcntl.LOCK_EX)
        # A sweeper may have taken the file in the instant between its creation and our lock:
        # then it is unlinked and we start again with a new name.
        try:
            if os.stat(tmp_name).st_ino == os.fstat(fd).st_ino:
                return Path(tmp_name), fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def staged_path(path: str | Path) -> Iterator[Path]:
    """Yield a locked temporary path beside ``path`` that the caller moves into place itself
    (``os.replace``) when everything else it depends on has succeeded; whatever is left of it
    is deleted on exit. Leftovers of earlier writers of ``path`` that were killed are removed
    first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in sorted(path.parent.glob(_temp_pattern(path))):
        _remove_if_abandoned(leftover)
    tmp, fd = _locked_temp(path)
    try:
        yield tmp
    finally:
        try:
            if tmp.exists():
                tmp.unlink()
        finally:
            os.close(fd)  # releases the lock


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it into place, else delete it.
    Leftovers of earlier writers of ``path`` that were killed are removed first."""
    with staged_path(path) as tmp:
        yield tmp
        os.replace(tmp, path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_parquet(frame: pd.DataFrame, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return Path(path)


def write_npy(array: np.ndarray, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        with tmp.open("wb") as handle:
            np.save(handle, array, allow_pickle=False)
    return Path(path)

"""Shared fixtures: the real openclipart sample shipped in tests/fixtures, the Corel5k folder
beside the project, and a temporary data home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


def corel5k_path() -> Path:
    return Path(os.environ.get("TAGREC_COREL5K", REPO.parent / "shared" / "data" / "corel5k"))


@pytest.fixture(scope="session")
def openclipart_sample() -> Path:
    """A real 50-image openclipart sample: ``svg/<category>/...`` and ``png/`` at the same
    paths, three of them symlinked into a second category."""
    return FIXTURES / "openclipart"


@pytest.fixture(scope="session")
def corel5k_dir() -> Path:
    path = corel5k_path()
    if not (path / "corel5k_words.txt").exists():
        pytest.skip(f"Corel5k not found at {path} (set TAGREC_COREL5K)")
    return path


@pytest.fixture()
def data_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("TAGREC_HOME", str(home))
    return home

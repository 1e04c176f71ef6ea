"""The Dagster UI in a real browser (issue 7): materialise the openclipart sample into a fresh
instance, start ``dagster dev`` on it, check the asset graph over GraphQL (every asset has a
description; the materialised ones show their runs) and render the asset-group page in
headless Chromium, saving the screenshot (``TAGREC_SCREENSHOT``, default
``.artifacts/ui_asset_graph.png``). Needs ``chromium`` (``make test-ui`` installs it)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from test_assets_pipeline import needs_wordnet

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = Path(os.environ.get("TAGREC_SCREENSHOT", REPO / ".artifacts" / "ui_asset_graph.png"))

MATERIALISE = """
import dagster as dg
from pipelines.definitions import defs
job = defs.resolve_job_def("openclipart_all")
recipe = {"core_users": 2, "core_tags": 2, "test_posts": 1, "val_posts": 1}
upstream = dg.AssetSelection.assets(dg.AssetKey(["openclipart", "train"])).upstream()
selection = upstream.required_multi_asset_neighbors().resolve(defs.resolve_asset_graph())
result = job.execute_in_process(
    instance=dg.DagsterInstance.get(),
    asset_selection=sorted(selection),
    run_config={"ops": {"openclipart__preprocess": {"config": recipe},
                        "openclipart__splits": {"config": recipe}}},
)
assert result.success
"""

ASSETS_QUERY = """
{ assetNodes(group: {groupName: "openclipart", repositoryName: "__repository__",
                     repositoryLocationName: "pipelines.definitions"}) {
    assetKey { path } description
    assetMaterializations(limit: 1) { runId }
} }
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        body = json.load(answer)
    assert "errors" not in body, body["errors"]
    return body["data"]


def wait_until_up(port: int, server: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, "dagster dev exited early"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"dagster dev did not answer on port {port} within {seconds} s")


@pytest.fixture()
def ui_home(tmp_path, openclipart_sample) -> dict:
    home = tmp_path / "home"
    corpus = home / "sources" / "openclipart" / "usr" / "share" / "openclipart"
    shutil.copytree(openclipart_sample, corpus, symlinks=True)
    (home / "dagster").mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster" / "dagster.yaml")
    return {**os.environ, "TAGREC_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}


@needs_wordnet
@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test-ui installs it)")
def test_asset_graph_renders_in_a_real_browser(ui_home, tmp_path):
    subprocess.run([sys.executable, "-c", MATERIALISE], env=ui_home, cwd=REPO, check=True, timeout=600)
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster")), "dev", "-w", "workspace.yaml",
         "-h", "127.0.0.1", "-p", str(port)],
        env=ui_home, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        wait_until_up(port, server)
        graphql(port, "mutation { setNuxSeen }")  # else a welcome pop-up covers the graph
        nodes = graphql(port, ASSETS_QUERY)["assetNodes"]
        by_name = {n["assetKey"]["path"][-1]: n for n in nodes}
        assert {"photos", "train", "patches", "vlad", "model_cnn_permlp", "paper1_results",
                "paper2_results", "paper3_results", "leaderboard"} <= set(by_name)
        assert all(n["description"] for n in nodes), [k for k, n in by_name.items() if not n["description"]]
        assert by_name["train"]["assetMaterializations"], "the materialised split does not show in the UI"
        assert not by_name["leaderboard"]["assetMaterializations"]

        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        SCREENSHOT.unlink(missing_ok=True)
        subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
             f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1400,900",
             "--virtual-time-budget=20000", f"--screenshot={SCREENSHOT}",
             f"http://127.0.0.1:{port}/asset-groups/openclipart"],
            check=True, timeout=180, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with Image.open(SCREENSHOT) as shot:
            assert shot.size == (1400, 900)
            # a rendered graph has many colours; a blank or error page has a handful
            colours = shot.convert("RGB").getcolors(maxcolors=1 << 20)
            assert colours is not None and len(colours) > 200, len(colours or [])
    finally:
        stop(server)


def stop(server: subprocess.Popen) -> None:
    """SIGTERM to dagster dev's process group (webserver, daemon, code server), SIGKILL to
    whatever is still there after 30 s: a slow shutdown must not fail the test."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)

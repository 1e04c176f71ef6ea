"""Guards the deployment variants (issue 14) without servers: `dagster definitions validate`
passes for the local definitions and for the Celery and Kubernetes ones, the production
instance settings (deploy/dagster.yaml) are valid Dagster instance config with PostgreSQL
storage and the three pools, the Kubernetes definitions load with dagster-k8s and ask for a
GPU exactly on the feature and torch-training steps, and the Helm values parse."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DAGSTER = Path(sys.executable).parent / "dagster"


def validate(tmp_path: Path, *target: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster"), "TAGREC_HOME": str(tmp_path / "home")}
    (tmp_path / "dagster").mkdir(exist_ok=True)
    return subprocess.run([str(DAGSTER), "definitions", "validate", *target], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_local_definitions_validate(tmp_path):
    result = validate(tmp_path, "-w", "workspace.yaml")
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("module", ["pipelines.cluster", "pipelines.k8s"])
def test_deploy_definitions_validate(tmp_path, module):
    pytest.importorskip("dagster_k8s")
    if module == "pipelines.cluster":
        pytest.importorskip("dagster_celery")
    result = validate(tmp_path, "-m", module)
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_production_instance_config_is_valid_with_postgres_storage(monkeypatch):
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config

    for name, value in {"DAGSTER_PG_HOST": "db", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_DB": "dagster",
                        "DAGSTER_PG_USER": "dagster", "DAGSTER_PG_PASSWORD": "secret"}.items():
        monkeypatch.setenv(name, value)
    config, _ = dagster_instance_config(str(REPO / "deploy"), "dagster.yaml")
    assert set(config["storage"]) == {"postgres"}
    assert config["run_monitoring"]["enabled"] is True
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    # The storage's own schema (what DagsterPostgresStorage is built from), offline.
    postgres = pytest.importorskip("dagster_postgres")
    checked = process_config(postgres.DagsterPostgresStorage.config_type(), config["storage"]["postgres"])
    assert checked.success, checked.errors
    assert checked.value["postgres_db"]["scheme"] == "postgresql+psycopg2"


def test_k8s_definitions_ask_for_a_gpu_on_feature_and_training_steps():
    pytest.importorskip("dagster_k8s")
    import dagster as dg
    from dagster_k8s.job import get_user_defined_k8s_config

    from pipelines.k8s import defs
    from tagrec_models.recommenders.registry import get_recommender

    job = defs.resolve_job_def("openclipart_all_k8s")
    assert job.executor_def.name == "tagrec_k8s"
    gpu_steps, other = set(), set()
    for node in job.graph.node_dict.values():
        config = get_user_defined_k8s_config(node.definition.tags)
        limits = (config.container_config.get("resources") or {}).get("limits") or {}
        (gpu_steps if limits.get("nvidia.com/gpu") == "1" else other).add(node.name)
    assert "openclipart__features" in gpu_steps
    models = {n.split("__model_")[1] for n in job.graph.node_dict if "__model_" in n}
    accelerated = {m for m in models if get_recommender(m).accelerated}
    assert accelerated and {f"openclipart__model_{m}" for m in accelerated} <= gpu_steps
    assert {f"openclipart__model_{m}" for m in models - accelerated} <= other
    assert "openclipart__ingest" in other and "openclipart__feature_arrays" in other
    assert dg.AssetKey(["openclipart", "feature_shards"]) in defs.resolve_asset_graph().get_all_asset_keys()


def test_helm_values_and_dockerfile_are_consistent():
    values = yaml.safe_load((REPO / "deploy" / "helm-values.yaml").read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "pipelines.k8s"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert "'.[deploy]'" in dockerfile and "pipelines.k8s" in dockerfile

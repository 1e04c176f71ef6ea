"""Definitions for Kubernetes (issue 14; ``deploy/README.md``): every step a Kubernetes Job.

Loadable and validated by ``tests/test_deploy.py``, but NOT run on a cluster here (no cluster
and no Docker on the machine this was written on). The same assets and resources as
``pipelines.definitions``; each dataset's ``<dataset>_all_k8s`` job runs its steps with
``dagster_k8s.k8s_job_executor``, one pod per step from the image of ``deploy/Dockerfile``.
The feature shards and the torch training steps carry the ``dagster-k8s/config`` tag of
``assets.common.GPU_STEP_TAGS`` (one ``nvidia.com/gpu`` each); every other step gets the
modest default below. The data home must be shared storage mounted at the same path in every
pod (``TAGREC_HOME``; ``deploy/helm-values.yaml`` mounts a ReadWriteMany volume).
"""

from __future__ import annotations

import dagster as dg
from dagster_k8s import k8s_job_executor

from assets.datasets import DATASETS
from pipelines import shutdown
from pipelines.definitions import all_assets, dataset_selection, shared_resources
from tagrec_models.paths import default_home

DATA_VOLUME = "tagrec-data"
DATA_MOUNT = "/data/tagrec"

# Every step pod mounts the shared data home (the PVC deploy/helm-values.yaml declares).
STEP_POD = {
    "container_config": {"resources": {"requests": {"cpu": "1", "memory": "4Gi"}}},
    "pod_spec_config": {"volumes": [{"name": DATA_VOLUME,
                                     "persistentVolumeClaim": {"claimName": DATA_VOLUME}}]},
}


def k8s() -> dg.ExecutorDefinition:
    return k8s_job_executor.configured({
        "job_namespace": "tagrec",
        "max_concurrent": 8,
        "env_vars": [f"TAGREC_HOME={DATA_MOUNT}"],
        "volume_mounts": [{"name": DATA_VOLUME, "mount_path": DATA_MOUNT}],
        "step_k8s_config": STEP_POD,
    }, name="tagrec_k8s")


defs = dg.Definitions(
    assets=all_assets(),
    jobs=[dg.define_asset_job(name=f"{spec.name}_all_k8s", selection=dataset_selection(spec.name),
                              executor_def=k8s(),
                              description=f"Every asset of {spec.name}, one Kubernetes Job per step "
                              "(GPU steps ask for nvidia.com/gpu).")
          for spec in DATASETS],
    resources=shared_resources(str(default_home())),
)
shutdown.register()

"""Definitions for running tagrec on a Celery cluster (issue 14; ``deploy/README.md``).

The same assets and resources as ``pipelines.definitions``, with jobs whose steps run on
``dagster-celery`` workers (a Redis or RabbitMQ broker) instead of in one process:

* ``<dataset>_all_celery``: every asset of the dataset; each step is a Celery task, so steps
  that do not depend on each other (models, results tables) run on different workers.
* ``<dataset>_feature_shards_celery``: the feature shards alone. Backfill it from the UI
  (one run per shard, ``BackfillPolicy.multi_run(1)``) and the shards spread over the workers;
  then materialise the rest, which reads every shard.

The broker and result backend come from ``TAGREC_CELERY_BROKER`` and
``TAGREC_CELERY_BACKEND`` (default: Redis on 127.0.0.1), the instance (PostgreSQL, pools,
run queue) from ``$DAGSTER_HOME/dagster.yaml`` (``deploy/dagster.yaml``), and every worker
must see the data home (``TAGREC_HOME``: a shared file system; see ``deploy/README.md``).
Needs the ``deploy`` extra (``pip install -e '.[deploy]'``); ``make test-cluster`` runs it for
real on this machine.
"""

from __future__ import annotations

import os

import dagster as dg
from dagster_celery import celery_executor

from assets.datasets import DATASETS
from pipelines import shutdown
from pipelines.definitions import all_assets, dataset_selection, shared_resources
from tagrec_models.paths import default_home

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_BACKEND = "redis://127.0.0.1:6379/1"


def celery() -> dg.ExecutorDefinition:
    """The Celery executor on the configured broker; one task per step, acknowledged late so a
    worker that dies mid-step does not lose it silently."""
    return celery_executor.configured({
        "broker": os.environ.get("TAGREC_CELERY_BROKER", DEFAULT_BROKER),
        "backend": os.environ.get("TAGREC_CELERY_BACKEND", DEFAULT_BACKEND),
        "config_source": {"worker_prefetch_multiplier": 1, "task_acks_late": True},
    }, name="tagrec_celery")


def celery_jobs(executor: dg.ExecutorDefinition) -> list[dg.UnresolvedAssetJobDefinition]:
    jobs = []
    for spec in DATASETS:
        jobs.append(dg.define_asset_job(
            name=f"{spec.name}_all_celery", selection=dataset_selection(spec.name),
            executor_def=executor,
            description=f"Every asset of {spec.name}, one Celery task per step."))
        jobs.append(dg.define_asset_job(
            name=f"{spec.name}_feature_shards_celery",
            selection=dg.AssetSelection.assets(dg.AssetKey([spec.name, "feature_shards"])),
            executor_def=executor,
            description=f"The feature shards of {spec.name}; backfill it to spread shards over workers."))
    return jobs


defs = dg.Definitions(
    assets=all_assets(),
    jobs=celery_jobs(celery()),
    resources=shared_resources(str(default_home())),
)
shutdown.register()

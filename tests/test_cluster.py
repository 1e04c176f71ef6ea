"""Guards the distributed deployment end to end (issue 14, ``make test-cluster``): real
PostgreSQL (runs, event log, schedules, pools) and Redis on 127.0.0.1, two ``dagster-celery``
workers; the openclipart fixture is prepared, its feature shards run as one run per shard (what a
backfill does) with two runs at a time, then the assets after them (gathered features, VLAD, three
models). Steps must have run in both worker processes, and every result must equal the
in-process run's. Needs the servers and the ``deploy`` extra, so it is marked ``cluster`` and
stays out of ``make test``."""

from __future__ import annotations

import os
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("dagster_celery")
pytest.importorskip("dagster_postgres")

import dagster as dg  # noqa: E402

from assets.datasets import OPENCLIPART  # noqa: E402
from assets.factory import dataset_assets  # noqa: E402
from assets.features import FEATURE_OUTPUTS, all_shards_tags  # noqa: E402
from cluster_servers import finish, launch, running_cluster  # noqa: E402
from tagrec_models.features.shards import shard_names  # noqa: E402
from test_assets_pipeline import needs_wordnet, resources  # noqa: E402

pytestmark = [pytest.mark.cluster, needs_wordnet]

DATASET = "openclipart"
RECIPE = {"core_users": 2, "core_tags": 2, "test_posts": 1, "val_posts": 1}
MODELS = ("ug_nw", "knn_voting", "jec")
PREPARED = [f"{DATASET}/{n}" for n in ("photos", "photo_tags", "photo_groups", "images", "skipped_files",
                                      "tag_mapping", "assignments", "filtered_assignments", "preprocess_stats",
                                      "train", "val", "test")]
AFTER = [f"{DATASET}/{n}" for n in (*FEATURE_OUTPUTS, "vlad", *(f"model_{m}" for m in MODELS))]
ARRAYS = ("cnn", "ch64", "cm225", "patches_75", "local_stage3", "local_stage5", "vlad")


def run_config(sample: Path) -> dict:
    from tagrec_models.recommenders.registry import get_recommender

    ops = {
        f"{DATASET}__ingest": {"config": {"folder": str(sample)}},
        f"{DATASET}__preprocess": {"config": RECIPE},
        f"{DATASET}__splits": {"config": RECIPE},
        f"{DATASET}__features": {"config": {"stages": ["stage3", "stage5"], "grid": 3, "device": "cpu"}},
        f"{DATASET}__vlad": {"config": {"n_words": 4}},
    }
    for m in MODELS:
        small = {k: list(v) if isinstance(v, tuple) else v for k, v in get_recommender(m).contract_overrides.items()}
        ops[f"{DATASET}__model_{m}"] = {"config": {"seeds": [0], "params": small, "n_trials": 2, "retune_trials": 2}}
    return {"ops": ops}


def subset(config: dict, assets: list[str]) -> dict:
    """The run config of the ops a run selects (Dagster refuses config for ops not in it)."""
    wanted = {a.split("/")[1] for a in assets}
    ops = {}
    for op, value in config["ops"].items():
        name = op.split("__", 1)[1]
        if (name in wanted or (name == "ingest" and "photos" in wanted) or (name == "features" and "feature_shards" in wanted)
                or (name == "splits" and "train" in wanted) or (name == "preprocess" and "filtered_assignments" in wanted)):
            ops[op] = value
    return {"ops": ops}


def in_process(home: Path, config: dict) -> dg.ExecuteInProcessResult:
    keys = [dg.AssetKey(a.split("/")) for a in (*PREPARED, f"{DATASET}/feature_shards", *AFTER)]
    return dg.materialize(dataset_assets(OPENCLIPART), selection=keys, resources=resources(home),
                          run_config=config, tags=all_shards_tags(OPENCLIPART))


def step_pids(instance: dg.DagsterInstance, run_ids: list[str]) -> dict[str, set[int]]:
    """The PID of the process that ran each step (the STEP_START event's), from PostgreSQL."""
    pids: dict[str, set[int]] = {}
    for run_id in run_ids:
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START):
            pids.setdefault(entry.step_key, set()).add(entry.dagster_event.pid)
    return pids


def test_celery_cluster_matches_the_in_process_run(openclipart_sample):
    started = time.perf_counter()
    config = run_config(openclipart_sample)
    with tempfile.TemporaryDirectory(prefix="tagrec-cluster-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)  # PostgreSQL runs as the postgres user when the test runs as root
        with running_cluster(root / "cluster") as cluster:
            servers_s = time.perf_counter() - started
            prepared = finish(launch(cluster, f"{DATASET}_all_celery", PREPARED, run_config=subset(config, PREPARED)))
            runs = [prepared]
            shards = shard_names(OPENCLIPART.feature_shards)
            shard_config = subset(config, [f"{DATASET}/feature_shards"])
            for pair in (shards[:2], shards[2:]):  # a backfill's runs, two at a time
                procs = [launch(cluster, f"{DATASET}_feature_shards_celery", [f"{DATASET}/feature_shards"],
                                tags={"dagster/partition": s}, run_config=shard_config) for s in pair]
                runs += [finish(p) for p in procs]
            runs.append(finish(launch(cluster, f"{DATASET}_all_celery", AFTER, run_config=subset(config, AFTER))))
            cluster_s = time.perf_counter() - started
            os.environ.update({k: v for k, v in cluster.env.items() if k.startswith(("DAGSTER_", "TAGREC_"))})
            with dg.DagsterInstance.get() as instance:
                assert type(instance.run_storage).__name__ == "PostgresRunStorage"
                pids = step_pids(instance, runs)
                records = {r: instance.get_run_by_id(r) for r in runs}
            workers = cluster.worker_pids()
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in records.values())
        used = set().union(*pids.values())
        assert used <= workers, f"steps ran outside the workers: {pids} vs {workers}"
        assert len(used) == 2, f"steps ran in one worker only: {pids}"
        assert len(pids[f"{DATASET}__features"]) >= 1  # the four shard runs' steps

        local = root / "local"
        assert in_process(local, config).success
        cluster_home = root / "cluster" / "home"
        for name in ARRAYS:
            a = np.load(cluster_home / "datasets" / DATASET / "features" / f"{name}.npy")
            b = np.load(local / "datasets" / DATASET / "features" / f"{name}.npy")
            assert a.dtype == b.dtype and np.array_equal(a, b), name
        for table in ("train", "val", "test", "filtered_assignments"):
            pd.testing.assert_frame_equal(pd.read_parquet(cluster_home / "datasets" / DATASET / "tables" / f"{table}.parquet"),
                                          pd.read_parquet(local / "datasets" / DATASET / "tables" / f"{table}.parquet"))
        for m in MODELS:
            trained = [pickle.loads((home / "datasets" / DATASET / "objects" / f"model_{m}.pkl").read_bytes())
                       for home in (cluster_home, local)]
            # Every trial's setting and score; fit_seconds is a wall time, and NaN never equals itself.
            scores = [[{k: v for k, v in row.items() if k != "fit_seconds"} for row in t.validation] for t in trained]
            assert scores[0] == scores[1], m
            assert trained[0].validation_scores == trained[1].validation_scores, m
        print(f"\ncluster test: servers up in {servers_s:.0f} s, cluster runs done at {cluster_s:.0f} s, "
              f"total {time.perf_counter() - started:.0f} s; steps per worker pid: "
              f"{ {pid: sorted(k for k, v in pids.items() if pid in v) for pid in used} }")

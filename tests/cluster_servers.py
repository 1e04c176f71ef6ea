"""Real servers for ``make test-cluster`` (issue 14): PostgreSQL, Redis and two ``dagster-celery``
workers on 127.0.0.1, each started from its Debian or Python binary in a temporary folder and
stopped by its own PID (never by name). Also the run driver: ``python tests/cluster_servers.py
run <job> <asset,...> [<tags json>]`` launches one run of ``pipelines.cluster`` on the instance
under ``$DAGSTER_HOME`` (its steps go to the Celery workers) and prints the run id.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
PG_USER = "tagrec"
PG_DB = "dagster"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin() -> Path:
    """The folder of ``initdb``/``postgres``: Debian keeps them per major version."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise FileNotFoundError("PostgreSQL is not installed (apt-get install -y postgresql)")
    return found[-1].parent


def _as_postgres_user() -> dict:
    """PostgreSQL refuses to run as root: as root the server runs as the Debian ``postgres``
    user (the same PID, no wrapper process between)."""
    return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}


def _wait(predicate, what: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        if predicate():
            return
        time.sleep(0.3)
    raise TimeoutError(f"{what} was not ready after {timeout:.0f} s")


def _stop(proc: subprocess.Popen, sig: int, timeout: float = 30.0) -> None:
    """Signal one process we started, by its PID, and wait; SIGKILL if it does not stop."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@dataclass
class Cluster:
    root: Path
    pg_port: int = 0
    redis_port: int = 0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """What every process of the cluster sees: the instance (deploy/dagster.yaml on this
        PostgreSQL), the broker, the data home and the Celery worker settings module."""
        return {
            **os.environ,
            "DAGSTER_HOME": str(self.root / "dagster_home"),
            "TAGREC_HOME": str(self.root / "home"),
            "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(self.pg_port),
            "DAGSTER_PG_DB": PG_DB, "DAGSTER_PG_USER": PG_USER, "DAGSTER_PG_PASSWORD": "unused-trust-auth",
            "TAGREC_CELERY_BROKER": f"redis://127.0.0.1:{self.redis_port}/0",
            "TAGREC_CELERY_BACKEND": f"redis://127.0.0.1:{self.redis_port}/1",
            "PYTHONPATH": os.pathsep.join([str(self.root / "celery_config"), str(REPO)]),
        }

    def worker_pids(self) -> set[int]:
        return {p.pid for name, p in self.procs.items() if name.startswith("worker")}


@contextmanager
def postgres(cluster: Cluster) -> Iterator[None]:
    data = cluster.root / "pg"
    sockets = cluster.root / "pg_sockets"
    os.chmod(cluster.root, 0o755)  # the postgres user must reach its folders (and the parent too)
    for folder in (data, sockets):
        folder.mkdir()
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres", "postgres")
    bindir = pg_bin()
    subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True, **_as_postgres_user())
    cluster.pg_port = free_port()
    log = open(cluster.root / "postgres.log", "w")
    proc = subprocess.Popen([str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1",
                             "-p", str(cluster.pg_port), "-k", str(sockets)],
                            stdout=log, stderr=subprocess.STDOUT, **_as_postgres_user())
    cluster.procs["postgres"] = proc
    try:
        ready = lambda: subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(cluster.pg_port)],
                                       capture_output=True).returncode == 0
        _wait(ready, "PostgreSQL", proc=proc)
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(cluster.pg_port), "-U", PG_USER, PG_DB],
                       check=True, capture_output=True)
        yield
    finally:
        _stop(proc, signal.SIGINT)  # fast shutdown: the postmaster ends its own backends
        log.close()


@contextmanager
def redis(cluster: Cluster) -> Iterator[None]:
    server = shutil.which("redis-server")
    if server is None:
        raise FileNotFoundError("redis-server is not installed (apt-get install -y redis-server)")
    cluster.redis_port = free_port()
    folder = cluster.root / "redis"
    folder.mkdir()
    log = open(cluster.root / "redis.log", "w")
    proc = subprocess.Popen([server, "--bind", "127.0.0.1", "--port", str(cluster.redis_port), "--dir", str(folder),
                             "--save", "", "--appendonly", "no", "--daemonize", "no"],
                            stdout=log, stderr=subprocess.STDOUT)
    cluster.procs["redis"] = proc

    def ready() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", cluster.redis_port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    try:
        _wait(ready, "Redis", proc=proc)
        yield
    finally:
        _stop(proc, signal.SIGTERM)
        log.close()


def write_celery_config(cluster: Cluster) -> None:
    """The module ``dagster_celery.app`` reads its broker from (what ``dagster-celery worker
    start -y`` would write), so that the workers can be started as plain ``celery`` processes
    whose PID is the one that runs the steps (``--pool solo``)."""
    folder = cluster.root / "celery_config"
    folder.mkdir()
    env = cluster.env
    (folder / "dagster_celery_config.py").write_text(
        f"broker_url = {env['TAGREC_CELERY_BROKER']!r}\n"
        f"result_backend = {env['TAGREC_CELERY_BACKEND']!r}\n"
        "worker_prefetch_multiplier = 1\n"
        "task_acks_late = True\n")


@contextmanager
def workers(cluster: Cluster, n: int = 2) -> Iterator[None]:
    celery = Path(sys.executable).parent / "celery"
    started = []
    try:
        for i in range(n):
            log = open(cluster.root / f"worker{i}.log", "w")
            proc = subprocess.Popen([str(celery), "-A", "dagster_celery.app", "worker", "--pool", "solo",
                                     "--concurrency", "1", "--prefetch-multiplier", "1", "-Q", "dagster",
                                     "-n", f"tagrec{i}@%h", "--loglevel", "INFO", "--without-gossip",
                                     "--without-mingle", "--without-heartbeat"],
                                    stdout=log, stderr=subprocess.STDOUT, env=cluster.env, cwd=REPO)
            cluster.procs[f"worker{i}"] = proc
            started.append((proc, log))
        for i, (proc, _) in enumerate(started):
            logfile = cluster.root / f"worker{i}.log"
            _wait(lambda: "ready." in logfile.read_text(errors="replace"), f"Celery worker {i}", timeout=120, proc=proc)
        yield
    finally:
        for proc, log in started:
            _stop(proc, signal.SIGTERM)  # warm shutdown: a running step finishes first
            log.close()


@contextmanager
def running_cluster(root: Path, n_workers: int = 2) -> Iterator[Cluster]:
    """PostgreSQL, Redis and ``n_workers`` Celery workers, the instance migrated; everything
    stopped (by PID) on the way out, whatever happened."""
    root.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(root=root)
    with ExitStack() as stack:
        stack.enter_context(postgres(cluster))
        stack.enter_context(redis(cluster))
        home = cluster.root / "dagster_home"
        home.mkdir()
        shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
        (cluster.root / "home").mkdir()
        write_celery_config(cluster)
        # Tables created once, before several processes open the instance at once.
        migrate = subprocess.run([str(Path(sys.executable).parent / "dagster"), "instance", "migrate"],
                                 capture_output=True, text=True, env=cluster.env, cwd=REPO)
        if migrate.returncode:
            raise RuntimeError(f"dagster instance migrate failed:\n{migrate.stderr[-3000:]}")
        # Every pool's limit set once, as deploy/README.md says (assets.common.POOLS: two runs
        # that first use a pool at the same moment race in Dagster's PostgreSQL storage).
        from assets.common import POOLS

        for pool in POOLS:
            limit = subprocess.run([str(Path(sys.executable).parent / "dagster"), "instance", "concurrency",
                                    "set", pool, "1"], capture_output=True, text=True, env=cluster.env, cwd=REPO)
            if limit.returncode:
                raise RuntimeError(f"dagster instance concurrency set {pool} 1 failed:\n{limit.stderr[-3000:]}")
        stack.enter_context(workers(cluster, n_workers))
        yield cluster


def launch(cluster: Cluster, job: str, assets: list[str], tags: dict | None = None,
           run_config: dict | None = None) -> subprocess.Popen:
    """Start one run (its own coordinator process, as a run worker would be) of ``job`` of
    ``pipelines.cluster`` for ``assets`` (``dataset/name`` keys)."""
    args = [sys.executable, str(Path(__file__).resolve()), "run", job, ",".join(assets),
            json.dumps(tags or {}), json.dumps(run_config or {})]
    return subprocess.Popen(args, env=cluster.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    """The run id a ``launch``ed run printed; its stderr in the error if it failed."""
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"run failed ({proc.returncode}):\n{err[-4000:]}")
    return out.strip().splitlines()[-1]


def _run_main(job_name: str, assets: str, tags: str, run_config: str) -> int:
    import dagster as dg
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repo = ReconstructableRepository.for_module("pipelines.cluster", "defs", working_directory=str(REPO))
    job = repo.get_reconstructable_job(job_name)
    keys = [dg.AssetKey(a.split("/")) for a in assets.split(",") if a]
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(job, instance=instance, asset_selection=keys or None,
                                tags=json.loads(tags), run_config=json.loads(run_config), raise_on_error=False)
        failures = [e.event_specific_data.error.to_string() for e in result.all_events
                    if e.event_type_value == "STEP_FAILURE"]
        if not result.success:
            print("\n".join(failures) or "run failed", file=sys.stderr)
            return 1
        print(result.run_id)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "run":
        sys.exit(_run_main(*sys.argv[2:]))
    print(__doc__, file=sys.stderr)
    sys.exit(2)

#!/usr/bin/env python
"""A real distributed Airflow 3 + MLflow cluster on this machine, for tests and `make cluster`.

What it starts (each as a child process in its own process group, logs in a temp dir):

* an MLflow tracking/registry server backed by a fresh PostgreSQL database, serving artifacts
  from ``<workdir>/mlflow-artifacts`` (``--serve-artifacts``), on a free port;
* Airflow with the CeleryExecutor: metadata in a fresh PostgreSQL database, broker on an
  empty Redis database number, Celery result backend ``db+postgresql://``;
  ``airflow db migrate``, then ``api-server``, ``scheduler``, ``dag-processor``, optionally
  ``triggerer``, and three Celery workers (concurrency 1 each): two on queue ``default``
  (score shards run on both at once), one on queue ``gpu`` (the transformer fine-tune runs
  there when ``FBK_TRAIN__GPU_QUEUE=gpu``).

DAG runs are triggered through the REST API v2 (``/api/v2``) with a JWT from the simple auth
manager's ``POST /auth/token``. Scheduling by cron and by asset events is switched off
(``[scheduler] use_job_schedule = False``) so only the runs this script triggers exist; the
chain ingest -> train -> score is driven explicitly. ``extra_env`` can switch it on
(``AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=True``), as the asset-scheduling test does: every DAG
is paused at creation, so only the DAGs a caller unpauses get cron or asset-triggered runs.

Teardown (always, in ``finally``): SIGTERM to every process group, wait, SIGKILL stragglers
(including any process that carries this cluster's marker variable), drop both databases,
flush the Redis database.

Usage::

    .venv/bin/python scripts/cluster.py run [--dags feedback_ingest,feedback_train,feedback_score]
                                            [--rows 600] [--compare] [--keep-logs]
    .venv/bin/python scripts/cluster.py serve     # start, print URLs, wait for Ctrl-C
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PG_DSN_ADMIN = dict(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
MARKER = "CLUSTER_MARKER_FBK"  # must not start with FBK_: load_settings() refuses unknown FBK_ variables
ALL_DAGS = ("feedback_ingest", "feedback_train", "feedback_score")

# Tiny training so a full chain fits in a few minutes on 2 cores.
TINY_TRAIN_ENV = {
    "FBK_TRAIN__EPOCHS": "2",
    "FBK_TRAIN__BATCH_SIZE": "16",
    "FBK_TRAIN__LEARNING_RATE": "0.003",
    "FBK_TRAIN__MAX_LENGTH": "32",
    "FBK_TRAIN__TORCH_THREADS": "1",
    "FBK_TRAIN__MIN_ROWS_PER_CLASS": "10",
    "FBK_TRAIN__MIN_SLICE_ROWS": "10",
    "FBK_TRAIN__MAX_TRAIN_SAMPLES": "400",
    "FBK_TRAIN__GOLDEN_FRACTION": "0.2",
    "FBK_TRAIN__DEV_FRACTION": "0.15",
    "FBK_TRAIN__EARLY_STOPPING_PATIENCE": "1",
    "FBK_TRAIN__DEVICE": "cpu",
    "FBK_TRAIN__BASELINE_MAX_FEATURES": "5000",
    "FBK_MLFLOW__VERIFY_TIMEOUT_S": "300",
}


class Unavailable(RuntimeError):
    """PostgreSQL or Redis cannot be reached (the message says which)."""


def _say(msg: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------
# Services the cluster needs from the machine
# ------------------------------------------------------------------------------------------


def check_services() -> None:
    """Raise :class:`Unavailable` naming PostgreSQL and/or Redis when they cannot be reached."""
    problems = []
    try:
        import psycopg2

        psycopg2.connect(connect_timeout=3, **PG_DSN_ADMIN).close()
    except Exception as exc:  # noqa: BLE001 - any failure means "unreachable" here
        problems.append(f"PostgreSQL at {PG_DSN_ADMIN['host']}:{PG_DSN_ADMIN['port']} (user postgres) is unreachable: {exc}".strip())
    try:
        import redis

        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        problems.append(f"Redis at {REDIS_HOST}:{REDIS_PORT} is unreachable: {exc}")
    if problems:
        raise Unavailable("; ".join(problems))


PREFLIGHT = r"""
import importlib.util, sys
missing = []
if importlib.util.find_spec("asyncpg") is None:
    missing.append("asyncpg is not installed: Airflow 3 opens an async SQLAlchemy engine (postgresql+asyncpg) "
                   "next to the sync one, so a PostgreSQL metadata DB needs it (add asyncpg to requirements.txt)")
try:
    from celery.backends.database import retry  # noqa: F401  (imported by the celery provider)
except ImportError:
    import celery
    missing.append(f"celery {celery.__version__} lacks celery.backends.database.retry, which "
                   "apache-airflow-providers-celery imports: CeleryExecutor/workers cannot start (pin celery<5.7, kombu<5.7)")
print("\n".join(missing))
sys.exit(1 if missing else 0)
"""


def preflight(env: dict[str, str]) -> None:
    """Python packages the distributed stack needs that the embedded one does not."""
    res = subprocess.run([sys.executable, "-c", PREFLIGHT], env=env, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise RuntimeError("distributed stack cannot start: " + (res.stdout.strip() or res.stderr[-1000:]))


def _pg_admin(sql: str) -> None:
    import psycopg2

    con = psycopg2.connect(connect_timeout=5, **PG_DSN_ADMIN)
    try:
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute(sql)
    finally:
        con.close()


def create_database(name: str) -> None:
    _pg_admin(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pick_redis_db() -> int:
    """An empty Redis database number (searched from 15 down), so nobody else's keys get flushed."""
    import redis

    for n in range(15, 0, -1):
        if redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=n).dbsize() == 0:
            return n
    raise Unavailable("Redis has no empty database number (1-15) to use as the Celery broker")


def flush_redis_db(n: int) -> None:
    import redis

    redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=n).flushdb()


# ------------------------------------------------------------------------------------------
# Processes
# ------------------------------------------------------------------------------------------


def _processes_with_marker(value: str) -> list[int]:
    """PIDs of live processes whose environment carries MARKER=value (children included)."""
    needle = f"{MARKER}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
            status = (entry / "stat").read_text()
        except OSError:
            continue
        if needle in env.split(b"\0") and ") Z " not in status:
            found.append(int(entry.name))
    return found


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pgid(self) -> int:
        return self.popen.pid  # start_new_session=True: the child leads its own group


@dataclass
class Cluster:
    """Start with :meth:`start` (or use as a context manager); always :meth:`stop`."""

    workdir: Path
    dags: tuple[str, ...] = ALL_DAGS
    extra_env: dict[str, str] = field(default_factory=dict)
    with_triggerer: bool = False
    worker_concurrency: int = 1
    default_workers: int = 2  # Celery workers on queue `default` (plus one on `gpu`)

    def __post_init__(self) -> None:
        self.id = uuid.uuid4().hex[:10]
        self.af_db = f"fbk_airflow_{self.id}"
        self.ml_db = f"fbk_mlflow_{self.id}"
        self.redis_db: int | None = None
        self.dbs_created: list[str] = []
        self.procs: list[Proc] = []
        self.logs = self.workdir / "logs"
        self.data_dir = self.workdir / "data"
        self.airflow_home = self.workdir / "airflow"
        self.artifacts = self.workdir / "mlflow-artifacts"
        self.api_port = free_port()
        self.mlflow_port = free_port()
        self.password = secrets.token_urlsafe(16)
        self._token: str | None = None

    # -- configuration ---------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FBK_", "AIRFLOW__", "AIRFLOW_"))}
        env.update(
            {
                MARKER: self.id,
                "PYTHONUNBUFFERED": "1",
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "HF_DATASETS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
                # MLflow 3.17 reads MLFLOW_DISABLE_TELEMETRY, or DO_NOT_TRACK == "true" (not "1");
                # left on, its client threads set/unset os.environ while requests iterates it
                # (KeyError '_MLFLOW_TELEMETRY_SESSION_ID' in model-version registration).
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "DO_NOT_TRACK": "true",
                "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            }
        )
        if os.environ.get("CLUSTER_PYTHONPATH"):  # e.g. an overlay with other pins, for trying them out
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ["CLUSTER_PYTHONPATH"], env.get("PYTHONPATH")]))
        return env

    def airflow_env(self) -> dict[str, str]:
        pg = f"postgres@127.0.0.1:5432/{self.af_db}"
        env = self.base_env()
        env.update(
            {
                "AIRFLOW_HOME": str(self.airflow_home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{pg}",
                "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.redis_db}",
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{pg}",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": "default",
                # Airflow 3: workers talk to the api-server's Task Execution API, never to the DB.
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__WORKERS": "1",
                # Must be identical in every component that issues or checks JWTs.
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
                "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.airflow_home / "passwords.json"),
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                # Only runs we trigger: no cron- or asset-created runs racing the test.
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.airflow_home / "logs"),
                "FBK_DATA_DIR": str(self.data_dir),
                "FBK_MLFLOW__TRACKING_URI": self.mlflow_url,
                # Artifacts through the server (--serve-artifacts), not onto the data volume.
                "FBK_MLFLOW__ARTIFACT_LOCATION": "mlflow-artifacts:/fbk",
            }
        )
        env.update(self.extra_env)
        return env

    # Secrets differ per call of airflow_env(); freeze one copy for all components.
    def _frozen_env(self) -> dict[str, str]:
        if not hasattr(self, "_env"):
            self._env = self.airflow_env()
        return self._env

    # -- lifecycle -------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        fh = open(log, "ab")
        popen = subprocess.Popen(
            argv, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=str(PROJECT_ROOT), start_new_session=True,
        )
        fh.close()
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        _say(f"started {name} (pid {popen.pid}), log {log}")
        return proc

    def start(self, timeout: float = 420) -> "Cluster":
        t0 = time.time()
        check_services()
        preflight(self.base_env())
        self.redis_db = pick_redis_db()
        for db in (self.af_db, self.ml_db):
            create_database(db)
            self.dbs_created.append(db)
        _say(f"databases {self.af_db}, {self.ml_db}; redis db {self.redis_db}")
        for d in (self.data_dir, self.airflow_home, self.artifacts):
            d.mkdir(parents=True, exist_ok=True)
        (self.airflow_home / "passwords.json").write_text(json.dumps({"admin": self.password}) + "\n")
        env = self._frozen_env()

        # MLflow migrates its own fresh database while Airflow migrates its one.
        self._spawn(
            "mlflow",
            [str(VENV_BIN / "mlflow"), "server",
             "--backend-store-uri", f"postgresql+psycopg2://postgres@127.0.0.1:5432/{self.ml_db}",
             "--artifacts-destination", str(self.artifacts), "--serve-artifacts",
             "--host", "127.0.0.1", "--port", str(self.mlflow_port), "--workers", "1"],
            self.base_env(),
        )
        migrate = self._spawn("airflow-db-migrate", [str(VENV_BIN / "airflow"), "db", "migrate"], env)
        rc = migrate.popen.wait(timeout=max(60, timeout - (time.time() - t0)))
        if rc != 0:
            raise RuntimeError(f"airflow db migrate failed (rc {rc}); see {migrate.log}:\n{self.tail(migrate)}")
        _say(f"airflow db migrate done in {time.time() - t0:.0f}s")

        af = str(VENV_BIN / "airflow")
        self._spawn("api-server", [af, "api-server", "--port", str(self.api_port), "--host", "127.0.0.1", "--workers", "1"], env)
        self._spawn("scheduler", [af, "scheduler"], env)
        self._spawn("dag-processor", [af, "dag-processor"], env)
        if self.with_triggerer:
            self._spawn("triggerer", [af, "triggerer"], env)
        for name, queue in self.worker_specs():
            wenv = dict(env, AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()))
            self._spawn(
                name,
                [af, "celery", "worker", "-q", queue, "-H", f"fbk-{name}-{self.id}@%h",
                 "-c", str(self.worker_concurrency), "--without-gossip", "--without-mingle"],
                wenv,
            )

        self._wait(lambda: self._http_ok(f"{self.mlflow_url}/health"), "MLflow server", t0, timeout)
        self._wait(lambda: self._http_ok(f"{self.api_url}/api/v2/monitor/health"), "Airflow api-server", t0, timeout)
        for dag_id in self.dags:
            self._wait(lambda d=dag_id: self._dag_known(d), f"DAG {dag_id} parsed by the dag-processor", t0, timeout)
        for name, queue in self.worker_specs():
            self._wait(lambda n=name: "ready." in self.read_log(n), f"Celery {name} on queue {queue}", t0, timeout)
        _say(f"cluster up in {time.time() - t0:.0f}s: Airflow {self.api_url}, MLflow {self.mlflow_url}")
        return self

    def _wait(self, ok, what: str, t0: float, timeout: float) -> None:
        while not ok():
            for p in self.procs:
                if p.popen.poll() is not None and p.name != "airflow-db-migrate":
                    raise RuntimeError(f"{p.name} exited with {p.popen.returncode} while waiting for {what}:\n{self.tail(p)}")
            if time.time() - t0 > timeout:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(2)

    def worker_specs(self) -> list[tuple[str, str]]:
        """(process name, queue) of every Celery worker."""
        return [(f"worker-default-{i}", "default") for i in range(1, self.default_workers + 1)] + [("worker-gpu", "gpu")]

    def executed_by(self, task_id: str) -> dict[str, list[int]]:
        """Worker process name -> map indexes of ``task_id`` it executed, from the workers' own
        logs ("Executing workload in Celery: ... TaskInstance(... task_id=..., map_index=N ...)")."""
        pattern = re.compile(rf"Executing workload in Celery: .*?task_id='{re.escape(task_id)}'.*?map_index=(-?\d+)")
        out: dict[str, list[int]] = {}
        for name, _ in self.worker_specs():
            found = sorted({int(m) for m in pattern.findall(self.read_log(name))})
            if found:
                out[name] = found
        return out

    def read_log(self, name: str) -> str:
        for p in self.procs:
            if p.name == name:
                return p.log.read_text(errors="replace") if p.log.exists() else ""
        return ""

    @staticmethod
    def tail(p: Proc, n: int = 40) -> str:
        try:
            return "\n".join(p.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, grace: float = 30) -> list[str]:
        """Tear everything down; return a list of problems (empty when clean)."""
        problems: list[str] = []
        for p in reversed(self.procs):
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pgid, signal.SIGTERM)
        deadline = time.time() + grace
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(timeout=max(0.1, deadline - time.time()))
        # Stragglers: group members and anything else carrying our marker (task runners, forks).
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pgid, signal.SIGKILL)
        for pid in _processes_with_marker(self.id):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(timeout=10)
        time.sleep(0.5)
        left = _processes_with_marker(self.id)
        if left:
            problems.append(f"processes left behind: {left}")
        for db in self.dbs_created:
            try:
                drop_database(db)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"could not drop database {db}: {exc}")
        self.dbs_created.clear()
        if self.redis_db is not None:
            try:
                flush_redis_db(self.redis_db)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"could not flush redis db {self.redis_db}: {exc}")
        _say("torn down" + (f" with problems: {problems}" if problems else " cleanly"))
        return problems

    def __enter__(self) -> "Cluster":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- REST API v2 -----------------------------------------------------------------------
    @staticmethod
    def _http_ok(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def token(self) -> str:
        if self._token is None:
            body = json.dumps({"username": "admin", "password": self.password}).encode()
            req = urllib.request.Request(f"{self.api_url}/auth/token", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                self._token = json.load(r)["access_token"]
        return self._token

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.api_url}/api/v2{path}", data=data, method=method,
            headers={"Authorization": f"Bearer {self.token()}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                raw = r.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: HTTP {exc.code}: {exc.read().decode(errors='replace')[:500]}") from None
        return json.loads(raw) if raw else None

    def _dag_known(self, dag_id: str) -> bool:
        try:
            self.api("GET", f"/dags/{dag_id}")
            return True
        except (RuntimeError, urllib.error.URLError, OSError):
            return False

    def ensure_pool(self, name: str, slots: int) -> None:
        try:
            self.api("GET", f"/pools/{name}")
        except RuntimeError:
            self.api("POST", "/pools", {"name": name, "slots": slots, "description": "fbk training on the gpu queue"})

    def trigger(self, dag_id: str, logical_date: str | None, conf: dict | None = None) -> str:
        self.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", {
            "dag_run_id": f"cluster__{dag_id}__{uuid.uuid4().hex[:6]}",
            "logical_date": logical_date, "conf": conf or {},
        })
        _say(f"triggered {dag_id} run {run['dag_run_id']} (logical date {logical_date})")
        return run["dag_run_id"]

    def wait_run(self, dag_id: str, run_id: str, timeout: float) -> dict:
        t0 = time.time()
        last = None
        while True:
            run = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] != last:
                _say(f"{dag_id}/{run_id}: {run['state']}")
                last = run["state"]
            if run["state"] in ("success", "failed"):
                break
            # Fail fast: retries are minutes apart (DAG default_args); a bounded test must not wait them out.
            bad = [ti for ti in self.task_instances(dag_id, run_id) if ti["state"] in ("up_for_retry", "failed", "upstream_failed")]
            if bad:
                raise RuntimeError(f"{dag_id} run {run_id}: task(s) {[(t['task_id'], t['state']) for t in bad]}; "
                                   f"task states: {self.task_states(dag_id, run_id)}\n{self.task_log_tail(dag_id, run_id, bad[0])}")
            for p in self.procs:
                if p.popen.poll() is not None and p.name != "airflow-db-migrate":
                    raise RuntimeError(f"{p.name} died (rc {p.popen.returncode}) during {dag_id}:\n{self.tail(p)}")
            if time.time() - t0 > timeout:
                raise TimeoutError(f"{dag_id} run {run_id} still {run['state']} after {timeout:.0f}s; "
                                   f"task states: {self.task_states(dag_id, run_id)}")
            time.sleep(3)
        run["task_instances"] = self.task_instances(dag_id, run_id)
        run["elapsed_s"] = round(time.time() - t0, 1)
        if run["state"] != "success":
            raise RuntimeError(f"{dag_id} run {run_id} {run['state']}; task states: {self.task_states(dag_id, run_id)}; "
                               f"logs under {self.airflow_home / 'logs'}")
        return run

    def task_log_tail(self, dag_id: str, run_id: str, ti: dict, n: int = 4000) -> str:
        """The error events of a task attempt's log file (the workers write them under AIRFLOW_HOME/logs)."""
        folder = self.airflow_home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={ti['task_id']}"
        if ti.get("map_index", -1) >= 0:
            folder = folder / f"map_index={ti['map_index']}"
        logs = sorted(folder.glob("attempt=*.log"))
        if not logs:
            return f"(no task log under {folder})"
        lines = [ln for ln in logs[-1].read_text(errors="replace").splitlines() if '"level":"error"' in ln or "Error" in ln]
        return f"{logs[-1]}:\n" + "\n".join(lines)[-n:]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        out = {}
        for ti in self.task_instances(dag_id, run_id):
            key = ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else "")
            out[key] = f"{ti['state']} on {ti.get('hostname') or '?'} queue={ti.get('queue')}"
        return out


# ------------------------------------------------------------------------------------------
# Data, the chain, and the comparison with an embedded run
# ------------------------------------------------------------------------------------------


def build_tiny_base_model(out: Path, texts: list[str]) -> Path:
    """A ~0.2M-parameter BERT (random init) with a WordPiece vocab from ``texts``: trains in seconds."""
    from transformers import BertModel

    from fbk_tasks.train.pretrain import small_bert_config, train_wordpiece

    out.mkdir(parents=True, exist_ok=True)
    tok = train_wordpiece(texts, vocab_size=600, out_dir=out)
    cfg = small_bert_config(len(tok), hidden=32, layers=2, heads=2, max_length=64, pad_token_id=tok.pad_token_id)
    BertModel(cfg).save_pretrained(out)
    return out


def land_reviews(data_dir: Path, rows: int, ds: str, seed: int = 11) -> Path:
    from fbk_tasks.demo.generator import generate_reviews, write_reviews

    df = generate_reviews(rows, seed=seed, ds=ds, days=1, id_prefix="clu")
    return write_reviews(df, data_dir / "landing" / f"reviews-{ds}.csv", "csv")


def tiny_env(base_model: Path, gpu_queue: bool = True) -> dict[str, str]:
    env = dict(TINY_TRAIN_ENV, FBK_TRAIN__BASE_MODEL=str(base_model), FBK_SCORE__SHARDS="4")
    if gpu_queue:
        env["FBK_TRAIN__GPU_QUEUE"] = "gpu"
    return env


def outputs_summary(data_dir: Path, tracking_uri: str | None = None, extra_env: dict | None = None) -> dict:
    """Counts that must agree between the distributed and the embedded run (in a subprocess, so
    the settings see exactly the FBK_* environment of that run)."""
    code = r"""
import json, sys
import pyarrow.dataset as pads
from fbk_tasks.settings import load_settings
from fbk_tasks.ingest.pipeline import read_ledger
s = load_settings()
led = read_ledger(s)
cols = [c for c in ("source_file", "status", "rows_read", "rows_curated", "rows_quarantined", "rows_duplicate") if c in led.columns]
out = {"ledger": sorted(json.loads(led[cols].to_json(orient="records")), key=lambda r: r.get("source_file", ""))}
for c in ("source_file",):
    for r in out["ledger"]:
        r[c] = r[c].rsplit("/", 1)[-1]
if s.curated_dir.exists():
    t = pads.dataset(s.curated_dir, format="parquet", partitioning="hive").to_table(columns=["review_id", "text", "label", "language"])
    rows = sorted(zip(*[t.column(c).to_pylist() for c in ("review_id", "text", "label", "language")]), key=lambda r: r[0])
    import hashlib
    out["curated_rows"] = len(rows)
    out["curated_sha256"] = hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()
if s.warehouse_path.exists():
    import duckdb
    con = duckdb.connect(str(s.warehouse_path), read_only=True)
    out["warehouse"] = {v: con.execute(f"SELECT count(*) FROM {v}").fetchone()[0] for v in ("reviews", "review_scores", "score_rejections")}
    con.close()
if s.mlflow.tracking_uri or (s.data_dir / "mlflow").exists():
    from mlflow import MlflowClient
    c = MlflowClient(tracking_uri=s.mlflow_tracking_uri, registry_uri=s.mlflow_registry_uri)
    try:
        mv = c.get_model_version_by_alias(s.mlflow.registered_model_name, "champion")
        out["champion"] = {"version": int(mv.version), "verdict": (mv.tags or {}).get("fbk.gate.verdict")}
    except Exception as exc:
        out["champion"] = None
        out["champion_error"] = str(exc)[:200]
print("SUMMARY=" + json.dumps(out, default=str))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FBK_")}
    env.update(extra_env or {})
    env["FBK_DATA_DIR"] = str(data_dir)
    if tracking_uri:
        env["FBK_MLFLOW__TRACKING_URI"] = tracking_uri
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=str(PROJECT_ROOT), timeout=300)
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("SUMMARY=")]
    if res.returncode != 0 or not line:
        raise RuntimeError(f"summary failed (rc {res.returncode}): {res.stderr[-2000:]}")
    return json.loads(line[-1][len("SUMMARY="):])


# The same fbk_tasks calls the DAG tasks make (and the `fbk` CLI), in one process each.
EMBEDDED_INGEST = """
from fbk_tasks.settings import load_settings
from fbk_tasks.ingest.pipeline import claim_landed_files, ingest_partition
s = load_settings()
claim_landed_files(s, "{ds}")
print(ingest_partition(s, "{ds}", run_id="embedded").summary())
"""
EMBEDDED_TRAIN = """
from fbk_tasks.settings import load_settings
from fbk_tasks.train.pipeline import run_training
print(run_training(load_settings()))
"""
EMBEDDED_SCORE = """
from fbk_tasks.settings import load_settings
from fbk_tasks.score.run import run_scoring
print(run_scoring(load_settings(), None, rescore=False, build=True))
"""


def embedded_run(data_dir: Path, landed_file: Path, ds: str, dags: tuple[str, ...], extra_env: dict, timeout: float = 900) -> dict:
    """The same inputs through the same fbk_tasks calls in plain processes (no Airflow), local SQLite MLflow."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FBK_")}
    env.update(extra_env)
    env.pop("FBK_TRAIN__GPU_QUEUE", None)
    env.update({"FBK_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "TOKENIZERS_PARALLELISM": "false"})
    dst = data_dir / "landing" / landed_file.name
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(landed_file, dst)
    steps = {"ingest": EMBEDDED_INGEST.format(ds=ds)}
    if "feedback_train" in dags:
        steps["train"] = EMBEDDED_TRAIN
    if "feedback_score" in dags:
        steps["score"] = EMBEDDED_SCORE
    t0 = time.time()
    for name, code in steps.items():
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=str(PROJECT_ROOT),
                             timeout=max(30, timeout - (time.time() - t0)))
        if res.returncode != 0:
            raise RuntimeError(f"embedded {name} failed (rc {res.returncode}):\n{res.stdout[-1500:]}\n{res.stderr[-3000:]}")
        _say(f"embedded {name}: ok ({time.time() - t0:.0f}s)")
    return outputs_summary(data_dir, extra_env={k: v for k, v in env.items() if k.startswith("FBK_")})


def run_chain(cluster: Cluster, ds: str, timeout: float = 900) -> dict[str, dict]:
    """Trigger each DAG of ``cluster.dags`` in order and wait for success (bounded in total)."""
    t0 = time.time()
    results = {}
    if "feedback_train" in cluster.dags and cluster.extra_env.get("FBK_TRAIN__GPU_QUEUE"):
        cluster.ensure_pool(cluster.extra_env["FBK_TRAIN__GPU_QUEUE"], 1)
    for dag_id in cluster.dags:
        # ingest and score are nightly: their runs carry the night's logical date; training is
        # triggered without one, as a manual retrain
        logical = {"feedback_ingest": f"{ds}T00:00:00Z", "feedback_score": f"{ds}T03:00:00Z"}.get(dag_id)
        run_id = cluster.trigger(dag_id, logical)
        left = timeout - (time.time() - t0)
        results[dag_id] = cluster.wait_run(dag_id, run_id, timeout=max(30, left))
        _say(f"{dag_id}: success in {results[dag_id]['elapsed_s']}s; tasks {cluster.task_states(dag_id, run_id)}")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="start, run the DAG chain on generated data, compare with an embedded run, tear down")
    s = sub.add_parser("serve", help="start and keep running until Ctrl-C")
    for a in (r, s):
        a.add_argument("--dags", default=",".join(ALL_DAGS), help="comma-separated DAGs to chain (those that exist)")
        a.add_argument("--rows", type=int, default=600)
        a.add_argument("--ds", default="2026-03-01")
        a.add_argument("--workdir", help="default: a new temp dir")
        a.add_argument("--triggerer", action="store_true")
    r.add_argument("--no-compare", action="store_true", help="skip the embedded comparison run")
    r.add_argument("--timeout", type=float, default=900, help="bound for the whole DAG chain (s)")
    args = p.parse_args(argv)

    def _on_term(signum, frame):  # so that `finally` tears the cluster down on SIGTERM too
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _on_term)

    present = {f.stem for f in (PROJECT_ROOT / "dags").glob("feedback_*.py")}
    dags = tuple(d for d in args.dags.split(",") if d in present)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fbk-cluster-"))
    base = None
    if "feedback_train" in dags:
        from fbk_tasks.demo.generator import generate_reviews

        texts = [str(t) for t in generate_reviews(400, seed=99, ds=args.ds)["text"]]
        base = build_tiny_base_model(workdir / "tiny-bert", texts)
    extra = tiny_env(base) if base else {}
    cluster = Cluster(workdir, dags=dags, extra_env=extra, with_triggerer=args.triggerer)
    t0 = time.time()
    try:
        cluster.start()
        landed = land_reviews(cluster.data_dir, args.rows, args.ds)
        if args.cmd == "serve":
            if extra.get("FBK_TRAIN__GPU_QUEUE"):
                cluster.ensure_pool(extra["FBK_TRAIN__GPU_QUEUE"], 1)
            _say("schedules are off in this cluster (use_job_schedule=False): trigger runs in the UI or API")
            _say(f"landed {landed}; Airflow UI {cluster.api_url} (admin / {cluster.password}), MLflow {cluster.mlflow_url}; Ctrl-C stops")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(5)
            return 0
        keep = workdir / "landed-copy" / landed.name  # same name: the source mapping is matched by it
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(landed, keep)
        run_chain(cluster, args.ds, args.timeout)
        dist = outputs_summary(cluster.data_dir, cluster.mlflow_url,
                               {k: v for k, v in cluster._frozen_env().items() if k.startswith("FBK_")})
        print(json.dumps({"distributed": dist}, indent=1))
    finally:
        problems = cluster.stop()
    if not args.no_compare:
        emb = embedded_run(workdir / "embedded", keep, args.ds, dags, extra)
        print(json.dumps({"embedded": emb}, indent=1))
        same = {k: dist.get(k) == emb.get(k) for k in ("ledger", "curated_rows", "curated_sha256", "warehouse")}
        print(json.dumps({"same": same}))
        if not all(same.values()):
            problems.append(f"distributed and embedded outputs differ: {same}")
    _say(f"done in {time.time() - t0:.0f}s; workdir {workdir}" + (f"; PROBLEMS: {problems}" if problems else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

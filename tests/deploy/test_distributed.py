"""A real distributed run: Airflow 3 with the CeleryExecutor (PostgreSQL metadata, Redis broker,
three Celery workers: two on queue `default`, one on `gpu`), an MLflow server on PostgreSQL, DAG
runs triggered through the REST API v2, outputs compared with an embedded run of the same inputs.
Score shards are executed by both default workers at the same time, and training runs on the
`default` and `gpu` workers write to the one MLflow server.

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and Redis on 127.0.0.1:6379: when
either is unreachable the test is skipped with the reason, or fails when CI=true.
Everything it starts is torn down (process groups, databases, Redis db) and checked.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DS = "2026-03-01"
ROWS = 600
CHAIN_TIMEOUT_S = 900


def _load_cluster_module():
    spec = importlib.util.spec_from_file_location("fbk_cluster", ROOT / "scripts" / "cluster.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fbk_cluster"] = module
    spec.loader.exec_module(module)
    return module


cluster_mod = _load_cluster_module()


def _unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"distributed test cannot run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def services_up():
    try:
        cluster_mod.check_services()
    except cluster_mod.Unavailable as exc:
        _unavailable(str(exc))


class _Webhook:
    """A local HTTP endpoint that records the JSON bodies POSTed to it (the alert webhook)."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, HTTPServer

        received: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.received = received
        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, match, timeout: float) -> dict | None:
        end = time.time() + timeout
        while time.time() < end:
            hit = next((a for a in self.received if match(a)), None)
            if hit is not None:
                return hit
            time.sleep(1)
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _overlap(a: dict, b: dict) -> float:
    """Seconds during which two task instances (REST API dicts) were both running."""
    from datetime import datetime

    start = max(datetime.fromisoformat(a["start_date"]), datetime.fromisoformat(b["start_date"]))
    end = min(datetime.fromisoformat(a["end_date"]), datetime.fromisoformat(b["end_date"]))
    return (end - start).total_seconds()


def test_distributed_chain_matches_embedded_run(services_up, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cluster")
    present = {p.stem for p in (ROOT / "dags").glob("feedback_*.py")}
    dags = tuple(d for d in cluster_mod.ALL_DAGS if d in present)
    assert dags[0] == "feedback_ingest"
    extra = {}
    if "feedback_train" in dags:
        from fbk_tasks.demo.generator import generate_reviews

        texts = [str(t) for t in generate_reviews(400, seed=99, ds=DS)["text"]]
        extra = cluster_mod.tiny_env(cluster_mod.build_tiny_base_model(workdir / "tiny-bert", texts))

    # Alerts go to a webhook served here; the scoring run's deadline (3 s after it was queued,
    # shorter than any scoring run on Celery) is missed on purpose: the scheduler must hand the
    # alert to the triggerer, which POSTs it.
    hook = _Webhook()
    extra = dict(extra, FBK_ALERTS__WEBHOOK_URL=hook.url, FBK_SCORE__DEADLINE_MINUTES="0.05")
    cluster = cluster_mod.Cluster(workdir, dags=dags, extra_env=extra, with_triggerer=True)
    t0 = time.time()
    problems: list[str] = []
    try:
        try:
            cluster.start()
        except RuntimeError as exc:
            if "distributed stack cannot start" in str(exc):
                pytest.fail(str(exc))  # a packaging problem of the project, never a skip
            raise
        landed = cluster_mod.land_reviews(cluster.data_dir, ROWS, DS)
        keep = workdir / "landed-copy" / landed.name
        keep.parent.mkdir()
        shutil.copy2(landed, keep)

        runs = cluster_mod.run_chain(cluster, DS, timeout=CHAIN_TIMEOUT_S)
        dist = cluster_mod.outputs_summary(
            cluster.data_dir, cluster.mlflow_url,
            {k: v for k, v in cluster._frozen_env().items() if k.startswith("FBK_")},
        )
        # Tasks really ran on the Celery workers, on the queues they were routed to.
        for dag_id, run in runs.items():
            for ti in run["task_instances"]:
                if ti["state"] == "success":
                    assert ti["queue"] in ("default", "gpu"), (dag_id, ti["task_id"], ti["queue"])
        if "feedback_train" in runs:
            by_task = {ti["task_id"]: ti for ti in runs["feedback_train"]["task_instances"]}
            assert by_task["train_transformer"]["queue"] == "gpu"
            assert by_task["train_transformer"]["state"] == "success"
            # ... and it was executed by the worker listening on `gpu`, never by the default one
            assert cluster.executed_by("train_transformer") == {"worker-gpu": [-1]}
            assert set(cluster.executed_by("train_candidate")) <= {"worker-default-1", "worker-default-2"}
            # two MLflow runs written to the server by tasks on different workers
            overlap = _overlap(by_task["train_transformer"], next(
                ti for ti in runs["feedback_train"]["task_instances"] if ti["task_id"] == "train_candidate"))
            print(f"training runs on the gpu and default workers overlapped: {overlap:.1f}s")
            assert overlap > 0, "the two training runs did not write to the MLflow server at the same time"
            # the registry lives in the MLflow server (PostgreSQL), artifacts went through it
            assert dist["champion"] and dist["champion"]["version"] >= 1, dist
            assert any(cluster.artifacts.rglob("MLmodel")), "no model artifacts under the server's --artifacts-destination"
        if "feedback_score" in runs:
            shards = [ti for ti in runs["feedback_score"]["task_instances"] if ti["task_id"] == "score_shard"]
            assert len(shards) == 4 and {ti["state"] for ti in shards} == {"success"}, shards
            # shards really shared out: both default workers executed some, none went to `gpu` ...
            by_worker = cluster.executed_by("score_shard")
            assert set(by_worker) == {"worker-default-1", "worker-default-2"}, by_worker
            assert sorted(i for idx in by_worker.values() for i in idx) == [0, 1, 2, 3], by_worker
            # ... and at the same time: a shard of one worker overlaps one of the other in time
            where = {i: w for w, idx in by_worker.items() for i in idx}
            pairs = [(a, b) for a in shards for b in shards if where[a["map_index"]] < where[b["map_index"]]]
            best = max(_overlap(a, b) for a, b in pairs)
            print(f"score shards by worker {by_worker}; longest cross-worker overlap {best:.1f}s")
            assert best > 0, [(ti["map_index"], ti["start_date"], ti["end_date"]) for ti in shards]
            wh = dist["warehouse"]
            assert wh["review_scores"] + wh["score_rejections"] == dist["curated_rows"], wh
            score_run = runs["feedback_score"]["dag_run_id"]
            alert = hook.wait_for(lambda a: a.get("kind") == "deadline_missed", timeout=120)
            assert alert is not None, (hook.received, cluster.read_log("triggerer")[-3000:])
            assert alert["dag_id"] == "feedback_score" and alert["run_id"] == score_run, alert
            assert "feedback_score not finished 0.05 min after it was queued" in alert["error"], alert
    finally:
        problems = cluster.stop()
        hook.close()
    assert not problems, problems
    assert not cluster_mod._processes_with_marker(cluster.id), "processes left behind"
    distributed_s = time.time() - t0

    emb = cluster_mod.embedded_run(workdir / "embedded", keep, DS, dags, extra)
    assert dist["ledger"] == emb["ledger"]
    assert dist["curated_rows"] == emb["curated_rows"] > 0
    assert dist["curated_sha256"] == emb["curated_sha256"]
    if "feedback_train" in dags:
        assert emb["champion"] is not None
    if "feedback_score" in dags:
        assert dist["warehouse"] == emb["warehouse"]
    print(f"distributed part {distributed_s:.0f}s, total {time.time() - t0:.0f}s")


def _wait_for_run(cluster, dag_id: str, run_type: str, timeout: float, seen: set[str] = frozenset()) -> dict:
    """The first run of ``dag_id`` of ``run_type`` (``scheduled``, ``asset_triggered``) not in ``seen``,
    created by the scheduler itself within ``timeout`` seconds."""
    deadline, runs = time.time() + timeout, []
    while time.time() < deadline:
        runs = cluster.api("GET", f"/dags/{dag_id}/dagRuns")["dag_runs"]
        hit = next((r for r in runs if r["run_type"] == run_type and r["dag_run_id"] not in seen), None)
        if hit is not None:
            return hit
        time.sleep(3)
    raise AssertionError(f"no {run_type} {dag_id} run within {timeout:.0f} s; runs: {runs}")


def _triggered_by(cluster, dag_id: str, run_id: str, source_dag: str, source_run: str) -> dict:
    """The asset event of ``source_run`` among the run's upstream events, which all come from
    ``source_dag`` (Airflow lists every event of the asset since the DAG's previous run, so an
    event emitted while the DAG was paused, e.g. by its upstream's cron run, is listed too)."""
    events = cluster.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/upstreamAssetEvents")["asset_events"]
    assert {e["source_dag_id"] for e in events} == {source_dag}, events
    mine = [e for e in events if e["source_run_id"] == source_run]
    assert len(mine) == 1, events
    return mine[0]


def test_nightly_chain_follows_its_assets_on_the_real_scheduler(services_up, tmp_path_factory, monkeypatch):
    """Data-aware scheduling by the real scheduler (cron and asset scheduling on, unlike the chain
    above), every link of the nightly chain: a manual ingestion run emits Asset('curated_reviews')
    -> the scheduler creates a feedback_score run -> its Asset('review_scores') -> a
    feedback_monitor run, which finds the drifted night and emits Asset('retrain_requested') ->
    a feedback_train run, which trains on the cluster. Each DAG is unpaused first and its own
    cron run (catchup off: the latest past slot, set 12 hours back by schedule.*_cron) is let
    finish, so that the asset-triggered runs are the only other runs: the reference night 03-01 is written to the lake directly and a
    keyword champion registered; the weekly training run may promote a tiny model over it; the
    nightly scoring run scores 03-01; then 03-02 (a new product category on 60% of rows) lands."""
    from fbk_tasks.demo.generator import DriftSpec, generate_reviews, write_reviews

    workdir = tmp_path_factory.mktemp("cluster-assets")
    texts = [str(t) for t in generate_reviews(400, seed=99, ds="2026-03-01")["text"]]
    small = {"FBK_DRIFT__REFERENCE_MAX_ROWS": "200", "FBK_DRIFT__DOMAIN_MAX_ROWS": "80", "FBK_DRIFT__MIN_BATCH_ROWS": "100",
             "FBK_DRIFT__MIN_CATEGORY_ROWS": "60", "FBK_DRIFT__DOMAIN_CV_FOLDS": "3", "FBK_DRIFT__USE_ENCODER": "false"}
    # clock slots 12 hours from now either way: each DAG's one cron run is the slot 12 hours ago (catchup
    # off), and no slot passes while the test runs, whatever the time of day
    away = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=12)
    crons = {f"FBK_SCHEDULE__{d}_CRON": f"{away.minute} {away.hour} * * *" for d in ("INGEST", "SCORE", "TRAIN")}
    extra = {"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True", **small, **crons,
             **cluster_mod.tiny_env(cluster_mod.build_tiny_base_model(workdir / "tiny-bert", texts), gpu_queue=False)}
    cluster = cluster_mod.Cluster(workdir, dags=("feedback_ingest", "feedback_train", "feedback_score", "feedback_monitor"),
                                  extra_env=extra, default_workers=1)
    t0 = time.time()
    try:
        cluster.start()
        for k, v in cluster._frozen_env().items():
            if k.startswith("FBK_"):
                monkeypatch.setenv(k, v)
        from fbk_tasks.drift.monitor import metrics_path, no_reference_path
        from fbk_tasks.drift.testing import generated_frame, write_curated_frame
        from fbk_tasks.score.testing import register_keyword_model
        from fbk_tasks.settings import load_settings

        s = load_settings()
        write_curated_frame(s, generated_frame(300, seed=1, ds="2026-03-01"), "2026-03-01")
        register_keyword_model(s)

        # 1. each DAG unpaused in chain order; its cron run (ingest: nothing landed yet) runs out
        cron = {}
        for dag_id in ("feedback_ingest", "feedback_train", "feedback_score"):
            cluster.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})
            run = _wait_for_run(cluster, dag_id, "scheduled", timeout=120)
            assert run["logical_date"].startswith(away.strftime("%Y-%m-%dT%H:%M")), run  # the slot set in the settings
            cron[dag_id] = cluster.wait_run(dag_id, run["dag_run_id"], timeout=420)
        cluster.api("PATCH", "/dags/feedback_monitor", {"is_paused": False})  # nothing runs it but the asset event
        assert cluster.api("GET", "/dags/feedback_monitor/dagRuns")["dag_runs"] == []
        train_runs = {r["dag_run_id"] for r in cluster.api("GET", "/dags/feedback_train/dagRuns")["dag_runs"]}
        print(f"cron runs done at {time.time() - t0:.0f}s: " + ", ".join(f"{d} {r['elapsed_s']}s" for d, r in cron.items()))

        # 2. the drifted night lands in its own night's folder (as for a backfill: no cron run of
        # another night can claim it) and is ingested by a manual run
        df = generate_reviews(200, seed=10, ds="2026-03-02", drift=DriftSpec(new_category=True), id_prefix="clu")
        write_reviews(df, cluster.data_dir / "landing" / "ds=2026-03-02" / "generic" / "reviews-2026-03-02.csv", "csv")
        ingest_run = cluster.trigger("feedback_ingest", "2026-03-02T00:00:00Z")
        cluster.wait_run("feedback_ingest", ingest_run, timeout=300)

        # 3. curated_reviews -> feedback_score, created by the scheduler
        score = _wait_for_run(cluster, "feedback_score", "asset_triggered", timeout=240)
        cluster.wait_run("feedback_score", score["dag_run_id"], timeout=420)
        event = _triggered_by(cluster, "feedback_score", score["dag_run_id"], "feedback_ingest", ingest_run)
        assert event["extra"]["ds"] == "2026-03-02" and event["extra"]["rows_curated"] > 0, event

        # 4. review_scores -> feedback_monitor: it checks both scored nights
        monitor = _wait_for_run(cluster, "feedback_monitor", "asset_triggered", timeout=240)
        cluster.wait_run("feedback_monitor", monitor["dag_run_id"], timeout=420)
        _triggered_by(cluster, "feedback_monitor", monitor["dag_run_id"], "feedback_score", score["dag_run_id"])
        states = cluster.task_states("feedback_monitor", monitor["dag_run_id"])
        assert states["compute_signals"].startswith("success on"), states
        assert metrics_path(s, "2026-03-02").exists() and no_reference_path(s, "2026-03-01").exists()
        assert states["emit_retrain"].startswith("success on"), states

        # 5. retrain_requested -> feedback_train, created by the scheduler, trains on the cluster
        train = _wait_for_run(cluster, "feedback_train", "asset_triggered", timeout=240, seen=train_runs)
        done = cluster.wait_run("feedback_train", train["dag_run_id"], timeout=600)
        event = _triggered_by(cluster, "feedback_train", train["dag_run_id"], "feedback_monitor", monitor["dag_run_id"])
        assert event["extra"]["ds"] == "2026-03-02" and event["extra"]["reasons"], event
        assert {ti["task_id"]: ti["state"] for ti in done["task_instances"]}["gate"] == "success"
        print(f"chain by the scheduler done at {time.time() - t0:.0f}s")
    finally:
        problems = cluster.stop()
    assert not problems, problems
    assert not cluster_mod._processes_with_marker(cluster.id), "processes left behind"


def test_teardown_leaves_nothing_when_start_fails(services_up, tmp_path, monkeypatch):
    """A start that fails half-way (here: migrate against a bad database URL) still drops the
    databases, flushes Redis and leaves no process behind."""
    cluster = cluster_mod.Cluster(tmp_path, dags=("feedback_ingest",))
    bad = dict(cluster._frozen_env(), AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://postgres@127.0.0.1:1/none")
    monkeypatch.setattr(cluster, "_env", bad, raising=False)
    with pytest.raises(RuntimeError, match="db migrate failed|distributed stack cannot start"):
        with cluster:
            pass
    assert not cluster_mod._processes_with_marker(cluster.id)
    import psycopg2

    con = psycopg2.connect(**cluster_mod.PG_DSN_ADMIN)
    try:
        with con.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname IN (%s, %s)", (cluster.af_db, cluster.ml_db))
            assert cur.fetchall() == []
    finally:
        con.close()

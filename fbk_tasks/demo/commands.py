"""`fbk demo`: several simulated nights through the real DAGs on embedded Airflow (SQLite),
a local MLflow store and a DuckDB warehouse, all under the data root."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone

from fbk_tasks.settings import PROJECT_ROOT, Settings, load_settings


def airflow_env(settings: Settings) -> dict[str, str]:
    """Environment for an embedded Airflow: SQLite metadata DB inside the data root."""
    home = settings.airflow_home
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "FBK_DATA_DIR": str(settings.data_dir),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def prepare_airflow(settings: Settings) -> None:
    """Point this process at the embedded Airflow home (before airflow is imported) and migrate it."""
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != str(settings.airflow_home):
        raise RuntimeError("airflow was imported before its home was configured")
    env = airflow_env(settings)
    os.environ.update(env)
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    _say(f"migrating the Airflow metadata DB at {settings.airflow_home / 'airflow.db'} ...")
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, env=os.environ.copy(), capture_output=True)


DEMO_MARKER = ".fbk-demo"


def reset_demo_root(settings: Settings) -> bool:
    """Give the demo an empty data root; returns whether a previous demo's data was removed.

    The demo's nights are fixed dates with fixed review ids, so a second run over the first
    one's data would find every review already curated (ingestion quarantines them as
    duplicates, and the batch gate fails the night). A root the demo wrote (it carries the
    ``.fbk-demo`` marker) is removed; a root holding anything else is refused, never deleted."""
    import shutil

    root = settings.data_dir
    removed = False
    if root.exists() and any(root.iterdir()):
        if not (root / DEMO_MARKER).exists():
            raise SystemExit(f"the data root {root} holds data the demo did not write; point FBK_DATA_DIR at an "
                             "empty folder (or remove it, e.g. `make clean` for ./data) to run the demo")
        _say(f"removing the previous demo's data under {root}")
        shutil.rmtree(root)
        removed = True
    root.mkdir(parents=True, exist_ok=True)
    (root / DEMO_MARKER).write_text("written by `fbk demo`; the next demo run removes this folder\n")
    return removed


def _say(msg: str) -> None:
    print(f"[demo {datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def _run_dag(bag, dag_id: str, ds: str) -> str:
    dag = bag.get_dag(dag_id)
    t0 = time.time()
    run = dag.test(logical_date=datetime.fromisoformat(ds).replace(tzinfo=timezone.utc))
    state = str(run.state)
    _say(f"{dag_id} ds={ds}: {state} in {time.time() - t0:.0f}s")
    if state != "success":
        failed = [ti.task_id for ti in run.get_task_instances() if ti.state != "success"]
        raise SystemExit(f"{dag_id} for {ds} did not succeed (tasks not successful: {failed}); see the log above")
    return state


# The demo keeps training small so that it finishes in minutes on two cores; any of these can
# be overridden from the environment.
DEMO_ENV = {
    "FBK_TRAIN__MAX_TRAIN_SAMPLES": "3000",
    "FBK_TRAIN__EPOCHS": "1",
    "FBK_TRAIN__MAX_LENGTH": "64",
    "FBK_TRAIN__GOLDEN_MAX_ROWS": "800",
}


def run_demo(nights: int, rows: int, start: str) -> None:
    for key, value in DEMO_ENV.items():
        os.environ.setdefault(key, value)
    settings = load_settings()
    reset_demo_root(settings)
    prepare_airflow(settings)
    from airflow.dag_processing.dagbag import DagBag

    from fbk_tasks.demo.generator import DriftSpec, generate_reviews, write_reviews

    # the bundle root on sys.path, as Airflow's own BundleDagBag does, for dags/_common.py
    sys.path.append(str(PROJECT_ROOT / "dags"))
    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    have = set(bag.dag_ids)
    _say(f"data root {settings.data_dir}; DAGs: {sorted(have)}")
    first = date.fromisoformat(start)
    for i in range(nights):
        ds = (first + timedelta(days=i)).isoformat()
        drift = DriftSpec(new_complaints=True, sentiment_flip=True) if (i == nights - 1 and nights > 2) else None
        df = generate_reviews(rows * (3 if i == 0 else 1), seed=settings.demo_seed + i, ds=ds, days=1, drift=drift, id_prefix="demo")
        landed = write_reviews(df, settings.landing_dir / f"reviews-{ds}.csv", "csv")
        _say(f"night {i + 1}/{nights} ({ds}{', drifted' if drift else ''}): {len(df)} new reviews landed in {landed}")
        _run_dag(bag, "feedback_ingest", ds)
        if i == 0 and "feedback_train" in have:
            _run_dag(bag, "feedback_train", ds)
        if "feedback_score" in have:
            _run_dag(bag, "feedback_score", ds)
        if "feedback_monitor" in have:
            _run_dag(bag, "feedback_monitor", ds)
            request = _retrain_request(settings, ds)
            if request is not None and "feedback_train" in have:
                # In a running Airflow the retrain_requested Asset event schedules feedback_train;
                # dag.test() does not follow Asset schedules, so the demo runs the chain itself.
                _say(f"drift fired for {ds}: {'; '.join(request.get('reasons', [])) or request}")
                before = _champion(settings)
                known = _version_count(settings)
                _run_dag(bag, "feedback_train", ds)
                after = _champion(settings)
                _say(_gate_story(settings, before, after, known))
                from fbk_tasks.drift.monitor import report_path

                _say(f"the gate's answer is in the MLflow tags (fbk.trigger.*) and in {report_path(settings, ds)}")
                if after != before and "feedback_score" in have:
                    _run_dag(bag, "feedback_score", ds)  # the new champion backfills the scores
            elif request is None:
                _say(f"no drift fired for {ds}")
    _summary(settings)


def _retrain_request(settings: Settings, ds: str) -> dict | None:
    """The retrain request the monitor recorded for ds, if it fired."""
    from fbk_tasks.drift.monitor import read_retrain_requests

    return next((e for e in read_retrain_requests(settings) if e["ds"] == ds), None)


def _champion(settings: Settings) -> str | None:
    from fbk_tasks.train.gate import list_versions

    for v in list_versions(settings):
        if "champion" in v["aliases"].split(","):
            return v["version"]
    return None


def _version_count(settings: Settings) -> int:
    from fbk_tasks.train.gate import list_versions

    return len(list_versions(settings))


def _gate_story(settings: Settings, before: str | None, after: str | None, known: int) -> str:
    """What the gate decided for each version the retrain registered."""
    from fbk_tasks.train.gate import list_versions

    new = list_versions(settings)[known:]
    verdicts = "; ".join(
        f"v{v['version']} ({v['candidate']}, golden macro-F1 {v['golden_f1']}): {v['verdict']} - {v['reason']}" for v in new
    ) or "no new version"
    change = f"champion v{before} -> v{after}" if after != before else f"champion stays v{after}"
    return f"retrained: {verdicts}; {change}"


def _summary(settings: Settings) -> None:
    from fbk_tasks.ingest.pipeline import read_ledger

    ledger = read_ledger(settings)
    ok = ledger[ledger["status"] == "ingested"]
    print()
    print("=== demo finished ===")
    print(f"ingested: {int(ok['rows_read'].sum())} rows read = {int(ok['rows_curated'].sum())} curated + {int(ok['rows_quarantined'].sum())} quarantined")
    pii = {c[4:]: int(ok[c].sum()) for c in ok.columns if c.startswith("pii_")}
    print(f"personal data redacted: {pii}")
    if settings.warehouse_path.exists():
        import duckdb

        con = duckdb.connect(str(settings.warehouse_path), read_only=True)
        try:
            print("\nworst products (share of negative reviews), from the warehouse:")
            print(con.sql("SELECT * FROM daily_product_sentiment ORDER BY share_negative DESC LIMIT 5"))
        except duckdb.Error as exc:
            print(f"(warehouse query failed: {exc})")
        finally:
            con.close()
    print("\nwhere to look:")
    print(f"  curated Parquet:   {settings.curated_dir}")
    print(f"  quarantine:        {settings.quarantine_dir}")
    print(f"  GX Data Docs:      {settings.reports_dir / 'gx' / 'index.html'}")
    print(f"  warehouse:         {settings.warehouse_path}   (fbk sql \"SELECT ...\")")
    print(f"  MLflow UI:         .venv/bin/mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}")
    print(f"  Airflow UI:        AIRFLOW_HOME={settings.airflow_home} .venv/bin/airflow standalone   (make up)")


def _demo(args: argparse.Namespace) -> int:
    run_demo(args.nights, args.rows, args.start)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="Simulate several nights through the real DAGs on embedded defaults.")
    p.add_argument("--nights", type=int, default=4)
    p.add_argument("--rows", type=int, default=1500, help="new reviews per night (the first night gets 3x)")
    p.add_argument("--start", default="2026-03-01", help="first logical date")
    p.set_defaults(func=_demo)

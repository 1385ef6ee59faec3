"""feedback_ingest runs for real through dag.test() on a SQLite Airflow home."""

from __future__ import annotations

import datetime as dt

import pyarrow.parquet as pq
import pytest

from fbk_tasks.demo.generator import generate_reviews, write_reviews
from fbk_tasks.ingest.pipeline import read_ledger

pytestmark = pytest.mark.slow


def _dag(dag_id):
    from airflow.dag_processing.dagbag import DagBag

    from fbk_tasks.settings import PROJECT_ROOT as ROOT

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors
    return bag.get_dag(dag_id)


def test_feedback_ingest_dag_test(airflow_db, settings, tmp_path, monkeypatch):
    monkeypatch.setenv("FBK_INGEST__MAX_QUARANTINE_SHARE", "0.9")
    df = generate_reviews(300, seed=11, ds="2026-03-05")
    settings.landing_dir.mkdir(parents=True, exist_ok=True)
    write_reviews(df, settings.landing_dir / "night.csv", "csv")

    dag = _dag("feedback_ingest")
    run = dag.test(logical_date=dt.datetime(2026, 3, 5, tzinfo=dt.timezone.utc))
    assert run.state == "success", run.state
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"claim_files": "success", "ingest": "success", "publish": "success"}

    curated = pq.read_table(settings.curated_dir / "ds=2026-03-05").to_pandas()
    ledger = read_ledger(settings)
    assert int(ledger["rows_read"].sum()) == 300
    assert int(ledger["rows_curated"].sum()) == len(curated) > 200
    assert (settings.landing_dir / "ds=2026-03-05" / "generic" / "night.csv").exists()
    assert (settings.reports_dir / "gx" / "index.html").exists()


def test_feedback_ingest_dag_fails_on_unreadable_file(airflow_db, settings, monkeypatch):
    settings.landing_dir.mkdir(parents=True, exist_ok=True)
    (settings.landing_dir / "empty.csv").write_bytes(b"")
    dag = _dag("feedback_ingest")
    run = dag.test(logical_date=dt.datetime(2026, 3, 6, tzinfo=dt.timezone.utc))
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["ingest"] == "failed" and states["publish"] != "success"
    assert read_ledger(settings)["status"].tolist()[-1] == "rejected"


def test_a_night_without_files_emits_no_curated_reviews_event(airflow_db, settings):
    """Nothing landed: the run succeeds, publish is skipped and no curated_reviews event goes out,
    so no feedback_score run (and, after it, no feedback_monitor run) starts for nothing."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    dag = _dag("feedback_ingest")
    run = dag.test(logical_date=dt.datetime(2026, 3, 7, tzinfo=dt.timezone.utc))
    assert run.state == "success"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"claim_files": "success", "ingest": "success", "publish": "skipped"}
    with create_session() as session:
        assert session.scalar(select(func.count()).select_from(AssetEvent).where(AssetEvent.source_run_id == run.run_id)) == 0

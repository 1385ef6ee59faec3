"""dag.test() of feedback_score against a real MLflow SQLite registry and real Parquet."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path

import pytest

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "feedback_score.py"


def _load_dag():
    spec = importlib.util.spec_from_file_location("feedback_score_dag_module", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.feedback_score_dag


def test_dag_structure():
    from airflow.sdk import AssetOrTimeSchedule

    dag = _load_dag()
    assert dag.dag_id == "feedback_score" and not dag.catchup and dag.doc_md
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    assert set(dag.task_dict) == {"resolve_champion", "plan", "score_shard", "finalize"}
    assert all(t.retries == 2 for t in dag.tasks)
    assert [o.name for o in dag.task_dict["finalize"].outlets] == ["review_scores"]
    assert dag.task_dict["score_shard"].upstream_task_ids == {"plan"}


@pytest.mark.slow
def test_dag_test_scores_every_review_once(airflow_db, lake, monkeypatch):
    from fbk_tasks.warehouse.query import query

    s = lake["settings"]  # FBK_DATA_DIR is set by the settings fixture (monkeypatch)
    monkeypatch.setenv("FBK_SCORE__MAX_MAPPED_TASKS", "3")  # 2 partitions x 2 shards: dealt into 3 tasks
    dag = _load_dag()
    when = dt.datetime(2026, 3, 3, 3, 0, tzinfo=dt.timezone.utc)
    dr = dag.test(logical_date=when)
    assert dr.state == "success"
    (n, n_distinct, version), = query(s, "SELECT count(*), count(DISTINCT review_id), max(model_version) FROM review_scores")[1]
    (n_rej,), = query(s, "SELECT count(*) FROM score_rejections")[1]
    assert n == n_distinct and n + n_rej == lake["n_reviews"] and version == lake["version"]
    rows = query(s, "SELECT DISTINCT score_run_id, scored_at FROM review_scores")[1]
    assert rows == [(dr.run_id, when)]

    # the asset event carries the counts and the model version
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(
            select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id).where(AssetModel.name == "review_scores")
        ).all()
        extras = [e.extra for e in events]
    assert {"model_version": lake["version"], "planned": lake["n_reviews"], "scored": n, "rejected": n_rej,
            "backend": "pyfunc"}.items() <= extras[-1].items()  # the keyword test model has no ONNX path

    from airflow.models.taskinstance import TaskInstance

    with create_session() as session:
        mapped = session.scalars(select(TaskInstance).where(
            TaskInstance.run_id == dr.run_id, TaskInstance.dag_id == "feedback_score", TaskInstance.task_id == "score_shard")).all()
    assert sorted(ti.map_index for ti in mapped) == [0, 1, 2] and {ti.state for ti in mapped} == {"success"}
    assert extras[-1]["shards"] == 4

    # a second night with nothing new: no mapped work, finalize still runs and succeeds
    dr2 = dag.test(logical_date=when + dt.timedelta(days=1))
    assert dr2.state == "success"

    with create_session() as session:
        states = {(ti.task_id, ti.map_index): ti.state for ti in session.scalars(
            select(TaskInstance).where(TaskInstance.run_id == dr2.run_id, TaskInstance.dag_id == "feedback_score"))}
    assert states[("finalize", -1)] == "success", states
    assert query(s, "SELECT count(*) FROM review_scores")[1] == [(n,)]


@pytest.mark.slow
def test_dag_test_without_a_champion_skips_instead_of_failing(airflow_db, settings):
    """A new deployment scores before its first training: nothing to score with, which no retry
    changes. The run succeeds with every task skipped (no failure alerts twice a night for a
    week) and emits no review_scores event, so no drift run follows."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    from fbk_tasks.score.testing import write_curated

    write_curated(settings, "2026-03-01", ["fine kettle", "broken lid"])
    dr = _load_dag().test(logical_date=dt.datetime(2026, 3, 2, 3, 0, tzinfo=dt.timezone.utc))
    assert dr.state == "success"
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert states == {"resolve_champion": "skipped", "plan": "skipped", "score_shard": "skipped", "finalize": "skipped"}
    with create_session() as session:
        assert session.scalar(select(func.count()).select_from(AssetEvent).where(AssetEvent.source_run_id == dr.run_id)) == 0


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="Airflow 3.3.2: dag.test() of a DAG with a DeadlineAlert fails writing the "
                   "deadline row ('dict' object has no attribute 'hex'), apache/airflow#73428. When this starts "
                   "passing, score.deadline_minutes can get a default. The deadline itself is proven on the real "
                   "scheduler + triggerer in tests/deploy/test_distributed.py.")
def test_dag_test_with_a_deadline(airflow_db, lake, monkeypatch):
    """score.deadline_minutes set: the DAG carries a DeadlineAlert and still runs under dag.test()."""
    monkeypatch.setenv("FBK_SCORE__DEADLINE_MINUTES", "360")
    dag = _load_dag()
    assert dag.deadline is not None
    dr = dag.test(logical_date=dt.datetime(2026, 3, 3, 3, 0, tzinfo=dt.timezone.utc))
    assert dr.state == "success"

"""Every DAG imports cleanly, is documented, tagged, retried, not caught up, and light to parse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))
HEAVY = ("torch", "transformers", "great_expectations", "mlflow", "sklearn", "duckdb", "pandas")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_expected_dags_present(dagbag):
    assert {"feedback_ingest", "feedback_train", "feedback_score", "feedback_monitor"} <= set(dagbag.dag_ids)


def test_dag_properties(dagbag):
    assert dagbag.dags, "no DAGs found"
    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md and len(dag.doc_md.strip()) > 40, f"{dag_id}: doc_md missing"
        assert dag.tags, f"{dag_id}: no tags"
        assert dag.catchup is False, f"{dag_id}: catchup must be False"
        for t in dag.tasks:
            assert t.retries >= 2, f"{dag_id}.{t.task_id}: retries {t.retries} < 2"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_module_imports_nothing_heavy(path):
    code = (
        "import sys, runpy; sys.path.insert(0, %r); runpy.run_path(%r);"
        "heavy=[m for m in %r if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    ) % (str(DAGS), str(path), HEAVY)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, f"{path.name} imports heavy modules at top level: {proc.stdout} {proc.stderr[-2000:]}"


def _cron(dag) -> str:
    """The cron of a DAG's clock schedule (alone, or beside its assets)."""
    timetable = getattr(dag.timetable, "timetable", dag.timetable)  # AssetOrTimeSchedule wraps one
    assert (type(timetable).__name__, timetable.timezone) == ("CronTriggerTimetable", "UTC"), timetable
    return timetable.expression


def test_clock_schedules_come_from_the_settings(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    default = {d: _cron(DagBag(dag_folder=str(DAGS / f"{d}.py")).dags[d])
               for d in ("feedback_ingest", "feedback_score", "feedback_train")}
    assert default == {"feedback_ingest": "0 0 * * *", "feedback_score": "0 3 * * *", "feedback_train": "0 3 * * 0"}
    crons = {"INGEST": "15 1 * * *", "SCORE": "45 4 * * *", "TRAIN": "0 5 * * 6"}
    for name, cron in crons.items():
        monkeypatch.setenv(f"FBK_SCHEDULE__{name}_CRON", cron)
    bag = DagBag(dag_folder=str(DAGS))
    assert not bag.import_errors, bag.import_errors
    assert {d: _cron(bag.dags[d]) for d in default} == {
        "feedback_ingest": "15 1 * * *", "feedback_score": "45 4 * * *", "feedback_train": "0 5 * * 6"}
    assert type(bag.dags["feedback_monitor"].timetable).__name__ == "AssetTriggeredTimetable"  # no clock
    monkeypatch.setenv("FBK_SCHEDULE__SCORE_CRON", "every night")  # refused by the settings, not by parsing:
    bag = DagBag(dag_folder=str(DAGS / "feedback_score.py"))     # the default, and the tasks fail with the reason
    assert not bag.import_errors and _cron(bag.dags["feedback_score"]) == "0 3 * * *"


def test_every_dag_has_a_run_timeout_from_the_settings_and_a_run_failure_callback(monkeypatch):
    """A hung run (a stuck lock holder, a queue no worker serves) would otherwise hold back every
    later run of its DAG (max_active_runs=1) without failing anything, so without any alert."""
    from datetime import timedelta

    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("FBK_SCHEDULE__MONITOR_TIMEOUT_MINUTES", "45")
    monkeypatch.setenv("FBK_SCHEDULE__TRAIN_TIMEOUT_MINUTES", "null")
    bag = DagBag(dag_folder=str(DAGS))
    assert not bag.import_errors, bag.import_errors
    assert {d: bag.dags[d].dagrun_timeout for d in bag.dags} == {
        "feedback_ingest": timedelta(hours=6), "feedback_score": timedelta(hours=12),
        "feedback_monitor": timedelta(minutes=45), "feedback_train": None}
    for dag_id, dag in bag.dags.items():
        assert dag.on_failure_callback, dag_id


def test_the_run_failure_callback_alerts_a_timed_out_run_only(monkeypatch):
    """A run that failed because a task failed was alerted by the task's callback already; a run
    that timed out had its tasks skipped, so the run's own callback is the only alert."""
    import importlib

    from fbk_tasks import alerts

    sys.path.insert(0, str(DAGS))
    try:
        common = importlib.import_module("_common")
    finally:
        sys.path.remove(str(DAGS))
    sent = []
    monkeypatch.setattr(alerts, "notify_failure", lambda context: sent.append(alerts.alert_payload(context)))

    class Dag:
        dag_id = "feedback_ingest"
        dagrun_timeout = "6:00:00"

    common.on_run_failure({"dag": Dag(), "run_id": "scheduled__2026-03-01", "reason": "task_failure"})
    assert sent == []
    common.on_run_failure({"dag": Dag(), "run_id": "scheduled__2026-03-01", "reason": "timed_out"})
    assert [(p["kind"], p["dag_id"], p["run_id"], p["task_id"]) for p in sent] == [
        ("run_timed_out", "feedback_ingest", "scheduled__2026-03-01", None)]
    assert "dagrun_timeout (6:00:00)" in sent[0]["error"]


def test_date_params_refuse_what_is_not_a_date_at_trigger_time(monkeypatch):
    """'2026-3-5' or 'yesterday' passed trigger validation and failed inside a task, retried for
    nothing; a date param now refuses them when the run is triggered."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("FBK_SCORE__MAX_PARALLEL_SHARDS", "7")
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.dags["feedback_score"].task_dict["score_shard"].max_active_tis_per_dagrun == 7
    date_params = [(d, k) for d, dag in bag.dags.items() for k in dag.params if k.startswith("ds")]
    assert sorted(date_params) == [("feedback_monitor", "ds"), ("feedback_score", "ds"),
                                   ("feedback_train", "ds_from"), ("feedback_train", "ds_to")]
    for dag_id, key in date_params:
        params = bag.dags[dag_id].params
        params.validate()  # the defaults (None) are valid
        for good in (None, "2026-03-05"):
            assert params.get_param(key).resolve(good) == good
        for bad in ("2026-3-5", "yesterday", "2026-02-30"):
            with pytest.raises(Exception, match="date|format"):
                params.get_param(key).resolve(bad)

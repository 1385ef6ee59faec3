"""feedback_monitor: structure, light imports, the CLI, and a real dag.test() on Parquet + an
MLflow SQLite registry (keyword pyfunc champion registered by the scoring stage's helper)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
from pathlib import Path

import pytest

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "feedback_monitor.py"
SMALL = {
    "FBK_DRIFT__REFERENCE_MAX_ROWS": "200",
    "FBK_DRIFT__DOMAIN_MAX_ROWS": "80",
    "FBK_DRIFT__MIN_BATCH_ROWS": "100",
    "FBK_DRIFT__MIN_CATEGORY_ROWS": "60",
    "FBK_DRIFT__DOMAIN_CV_FOLDS": "3",
}


def _load_dag():
    spec = importlib.util.spec_from_file_location("feedback_monitor_dag_module", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dag_structure():
    from airflow.dag_processing.dagbag import DagBag

    from fbk_tasks.settings import PROJECT_ROOT as ROOT

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not {k: v for k, v in bag.import_errors.items() if "feedback_monitor" in k}
    dag = bag.dags.get("feedback_monitor")
    assert dag is not None and not dag.catchup and dag.doc_md and "drift" in dag.tags
    assert set(dag.task_dict) == {"compute_signals", "decide", "emit_retrain", "alert_unmeasured"}
    assert all(t.retries == 2 for t in dag.tasks)
    assert [o.name for o in dag.task_dict["emit_retrain"].outlets] == ["retrain_requested"]
    assert not any(t.outlets for t in dag.tasks if t.task_id != "emit_retrain")
    assert dag.task_dict["emit_retrain"].upstream_task_ids == {"decide"}
    assert dag.task_dict["alert_unmeasured"].upstream_task_ids == {"decide"}
    assert all(t.on_failure_callback for t in dag.tasks)


def test_failure_callback_logs_and_posts_only_when_configured(settings):
    from fbk_tasks.alerts import notify_failure

    calls = []
    ctx = {"exception": RuntimeError("boom"), "logical_date": "2026-03-02"}
    done = notify_failure(ctx, settings, post=lambda *a: calls.append(a), email=lambda *a: calls.append(a))
    assert done["payload"]["error"] == "boom" and not done["webhook"] and calls == []
    s2 = settings.model_copy(update={"alerts": settings.alerts.model_copy(update={"webhook_url": "http://hook.invalid/x",
                                                                                 "email": "ops@example.com"})})
    done = notify_failure(ctx, s2, post=lambda *a: calls.append(("post",) + a), email=lambda *a: calls.append(("mail",) + a))
    assert done["webhook"] and done["email"] and [c[0] for c in calls] == ["post", "mail"]

    def broken(*a):
        raise OSError("network down")

    assert notify_failure(ctx, s2, post=broken, email=broken)["webhook"] is False  # never raises


@pytest.fixture
def drift_lake(settings, monkeypatch):
    """Reference partition 2026-03-01 (reference distribution), nights 03-02 and 03-03 where a new
    category (smart_glasses) takes ~60% of the reviews,
    a keyword champion (v1) and the nights scored by it."""
    from fbk_tasks.drift.testing import generated_frame, write_curated_frame
    from fbk_tasks.score.run import run_scoring
    from fbk_tasks.score.testing import register_keyword_model
    from fbk_tasks.settings import load_settings

    for k, v in SMALL.items():
        monkeypatch.setenv(k, v)
    s = load_settings()
    write_curated_frame(s, generated_frame(300, seed=1, ds="2026-03-01"), "2026-03-01")
    for i, ds in enumerate(("2026-03-02", "2026-03-03")):
        from fbk_tasks.demo.generator import DriftSpec

        write_curated_frame(s, generated_frame(200, seed=10 + i, ds=ds, drift=DriftSpec(new_category=True)), ds)
    version = register_keyword_model(s)
    for ds in ("2026-03-02", "2026-03-03"):
        run_scoring(s, ds, build=False)
    return {"settings": s, "version": version}


def _asset_events(name: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                               .where(AssetModel.name == name)).all()
        return [dict(e.extra or {}) for e in rows]


@pytest.mark.slow
def test_dag_test_requests_retrain_then_cools_down(airflow_db, drift_lake):
    from fbk_tasks.drift.monitor import metrics_path, reference_cache_path, report_path

    s = drift_lake["settings"]
    dag = _load_dag().feedback_monitor_dag
    before = len(_asset_events("retrain_requested"))
    run = dag.test(logical_date=dt.datetime(2026, 3, 2, 4, tzinfo=dt.timezone.utc), run_conf={"ds": "2026-03-02"})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success" and states["emit_retrain"] == "success", states

    import pandas as pd

    metrics = pd.read_parquet(metrics_path(s, "2026-03-02"))
    assert set(metrics["scope"]) >= {"all"} and (metrics["model_version"] == drift_lake["version"]).all()
    decision = json.loads(metrics.loc[metrics["signal"] == "decision", "detail"].iloc[0])
    assert decision["retrain"] and decision["reference_partitions"] == ["2026-03-01"]
    assert "category_mix_psi" in decision["fired_signals"] and "category_mix_psi" in decision["severe_signals"]
    assert reference_cache_path(s, drift_lake["version"]).exists()
    # the warehouse shows the night's drift rows at once (drift_metrics was an empty view, built
    # by the scoring run before any metrics existed, until the next scoring run)
    from fbk_tasks.warehouse.query import query

    assert query(s, "SELECT DISTINCT ds FROM drift_metrics")[1] == [(dt.date(2026, 3, 2),)]
    html = report_path(s, "2026-03-02").read_text()
    assert "RETRAIN REQUESTED" in html and "data:image/png;base64," in html and "minilm_embeddings" in html
    events = _asset_events("retrain_requested")
    assert len(events) == before + 1
    assert events[-1]["ds"] == "2026-03-02" and events[-1]["reasons"] and "category_mix_psi[all]" in events[-1]["numbers"]

    assert "smart_glasses" in html  # the unseen category is named in the report
    # the same night measured again (another review_scores event that day): same decision, no second request
    again = dag.test(logical_date=dt.datetime(2026, 3, 2, 5, tzinfo=dt.timezone.utc), run_conf={"ds": "2026-03-02"})
    states_again = {ti.task_id: ti.state for ti in again.get_task_instances()}
    assert again.state == "success" and states_again["emit_retrain"] == "skipped", states_again
    assert len(_asset_events("retrain_requested")) == before + 1
    # the next (still drifted) night falls in the cooldown after that request: recorded, not emitted
    run2 = dag.test(logical_date=dt.datetime(2026, 3, 3, 4, tzinfo=dt.timezone.utc), run_conf={"ds": "2026-03-03"})
    states2 = {ti.task_id: ti.state for ti in run2.get_task_instances()}
    assert run2.state == "success" and states2["emit_retrain"] == "skipped", states2
    m2 = pd.read_parquet(metrics_path(s, "2026-03-03"))
    d2 = json.loads(m2.loc[m2["signal"] == "decision", "detail"].iloc[0])
    # the request for 03-02 was made when 03-03 was already scored: its cooldown counts from 03-03
    assert d2["status"] == "cooldown" and d2["last_retrain"] == "2026-03-03" and d2["fired_signals"]
    assert len(_asset_events("retrain_requested")) == before + 1


@pytest.mark.slow
def test_dag_test_without_ds_checks_every_unchecked_night(airflow_db, drift_lake, monkeypatch):
    """Both nights are scored and unchecked (the monitor did not run for 03-02): a run without
    ds checks both, writes metrics for both and asks for one retrain, the newest night's. Then
    03-01 is scored late: it has no reference (nothing precedes it, no lineage), is skipped
    without failing the run, noted, and not picked again."""
    import pandas as pd

    from fbk_tasks.drift.monitor import metrics_path, nights_to_check, no_reference_path, read_retrain_requests
    from fbk_tasks.score.run import run_scoring

    monkeypatch.setenv("FBK_DRIFT__USE_ENCODER", "false")  # the MiniLM path is the test above
    s = drift_lake["settings"]
    dag = _load_dag().feedback_monitor_dag
    before = len(_asset_events("retrain_requested"))
    assert nights_to_check(s, "2026-03-03", 7) == ["2026-03-03", "2026-03-02"]
    run = dag.test(logical_date=dt.datetime(2026, 3, 3, 4, tzinfo=dt.timezone.utc))
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success" and states["emit_retrain"] == "success" and states["alert_unmeasured"] == "success", states

    def decision(ds: str) -> dict:
        m = pd.read_parquet(metrics_path(s, ds))
        assert (m["model_version"] == drift_lake["version"]).all()
        return json.loads(m.loc[m["signal"] == "decision", "detail"].iloc[0])

    d2, d3 = decision("2026-03-02"), decision("2026-03-03")
    assert "category_mix_psi" in d2["fired_signals"] and "category_mix_psi" in d3["fired_signals"]  # both drifted
    assert d3["status"] == "retrain" and d2["status"] == "superseded" and "2026-03-03" in d2["reasons"][-1]
    events = _asset_events("retrain_requested")
    assert len(events) == before + 1 and events[-1]["ds"] == "2026-03-03"  # one request per run: the newest night's
    assert [e["ds"] for e in read_retrain_requests(s)] == ["2026-03-03"]
    assert nights_to_check(s, "2026-03-03", 7) == []

    run_scoring(s, "2026-03-01", build=False)  # a late night, older than both
    assert nights_to_check(s, "2026-03-03", 7) == ["2026-03-01"]
    run2 = dag.test(logical_date=dt.datetime(2026, 3, 3, 5, tzinfo=dt.timezone.utc))
    states2 = {ti.task_id: ti.state for ti in run2.get_task_instances()}
    assert run2.state == "success" and states2["compute_signals"] == "skipped", states2
    assert no_reference_path(s, "2026-03-01").exists() and not metrics_path(s, "2026-03-01").exists()
    assert nights_to_check(s, "2026-03-03", 7) == []
    assert len(_asset_events("retrain_requested")) == before + 1


@pytest.mark.slow
def test_a_night_checked_late_is_never_in_its_own_reference(drift_lake):
    """v1 has no lineage: its reference cache is built for its first monitored night from the
    partitions before it. Checked first, 03-03 caches 03-01 + 03-02; 03-02, checked late, must
    not be compared with its own reviews."""
    from fbk_tasks.drift.monitor import NightMeasurement, measurement_path, run_drift

    s = drift_lake["settings"]
    run_drift(s, "2026-03-03", use_encoder=False)
    result = run_drift(s, "2026-03-02", use_encoder=False)
    meas = NightMeasurement.load(measurement_path(s, "2026-03-02"))
    assert meas.info["reference_rows_of_this_night_left_out"] > 0
    assert meas.info["n_reference"] + meas.info["reference_rows_of_this_night_left_out"] == 200  # reference_max_rows
    assert "category_mix_psi" in result["decision"]["severe_signals"]


@pytest.mark.slow
def test_the_listed_reference_partitions_are_what_the_cached_sample_holds(drift_lake):
    """v1 has no lineage. Checked first, 03-02 caches its reference from 03-01 alone; 03-03 would
    list 03-01 + 03-02 as its fallback, but it is compared with v1's cached sample: the
    measurement says 03-01, and why."""
    from fbk_tasks.drift.monitor import run_drift

    s = drift_lake["settings"]
    first = run_drift(s, "2026-03-02", use_encoder=False)
    assert first["reference_partitions"] == ["2026-03-01"]
    later = run_drift(s, "2026-03-03", use_encoder=False)
    assert later["reference_partitions"] == ["2026-03-01"]
    assert "cached reference sample" in later["reference_source"]


@pytest.mark.slow
def test_cli_drift_prints_the_decision(drift_lake, capsys):
    from fbk_tasks.cli import main

    assert main(["drift", "--ds", "2026-03-02", "--no-encoder"]) == 0
    out = capsys.readouterr().out
    assert "drift 2026-03-02 v1: RETRAIN" in out
    assert main(["drift", "--ds", "2026-02-01"]) == 2  # no scores for that night: a user error
    # without --ds: the unchecked nights, one summary each (03-02 again: the CLI records no request)
    assert main(["drift", "--no-encoder"]) == 0
    out = capsys.readouterr().out
    assert "drift 2026-03-02 v1: superseded" in out and "drift 2026-03-03 v1: RETRAIN" in out


def test_nights_default_to_the_unchecked_scored_partitions_up_to_the_run(settings):
    import pendulum

    module = _load_dag()
    for ds in ("2026-03-01", "2026-03-05"):
        (settings.scores_dir / f"ds={ds}").mkdir(parents=True)
        (settings.scores_dir / f"ds={ds}" / "part-1.parquet").touch()
    (settings.scores_dir / "ds=2026-03-03").mkdir()  # no score file: not a scored night
    ctx = {"params": {}, "logical_date": pendulum.datetime(2026, 3, 4, 4)}
    assert module._nights(ctx) == ["2026-03-01"]
    assert module._nights({**ctx, "logical_date": pendulum.datetime(2026, 3, 6)}) == ["2026-03-05", "2026-03-01"]
    assert module._nights({**ctx, "params": {"ds": "2026-02-01"}}) == ["2026-02-01"]
    with pytest.raises(ValueError, match="no scored partition"):
        module._nights({**ctx, "logical_date": pendulum.datetime(2026, 2, 1)})

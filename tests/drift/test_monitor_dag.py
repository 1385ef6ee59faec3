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
    assert set(dag.task_dict) == {"compute_signals", "decide", "emit_retrain"}
    assert all(t.retries == 2 for t in dag.tasks)
    assert [o.name for o in dag.task_dict["emit_retrain"].outlets] == ["retrain_requested"]
    assert dag.task_dict["emit_retrain"].upstream_task_ids == {"decide"}
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
    assert d2["status"] == "cooldown" and d2["last_retrain"] == "2026-03-02" and d2["fired_signals"]
    assert len(_asset_events("retrain_requested")) == before + 1


@pytest.mark.slow
def test_cli_drift_prints_the_decision(drift_lake, capsys):
    from fbk_tasks.cli import main

    assert main(["drift", "--ds", "2026-03-02", "--no-encoder"]) == 0
    out = capsys.readouterr().out
    assert "drift 2026-03-02 v1: RETRAIN" in out
    assert main(["drift", "--ds", "2026-02-01"]) == 2  # no scores for that night: a user error


def test_night_defaults_to_latest_scored_partition_up_to_the_run(settings):
    import pendulum

    module = _load_dag()
    for ds in ("2026-03-01", "2026-03-05"):
        (settings.scores_dir / f"ds={ds}").mkdir(parents=True)
    ctx = {"params": {}, "logical_date": pendulum.datetime(2026, 3, 4, 4)}
    assert module._night(ctx) == "2026-03-01"
    assert module._night({**ctx, "logical_date": pendulum.datetime(2026, 3, 6)}) == "2026-03-05"
    assert module._night({**ctx, "params": {"ds": "2026-02-01"}}) == "2026-02-01"
    with pytest.raises(ValueError, match="no scored partition"):
        module._night({**ctx, "logical_date": pendulum.datetime(2026, 2, 1)})

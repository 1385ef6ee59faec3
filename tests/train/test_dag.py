"""feedback_train: structure, the distributed-mode queue/pool switch, and a real dag.test() run."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


def _dag():
    import sys

    from airflow.dag_processing.dagbag import DagBag

    if str(DAGS) not in sys.path:  # as in Airflow's processes: DAGS_FOLDER is importable (dags/_common.py)
        sys.path.append(str(DAGS))

    bag = DagBag(dag_folder=str(DAGS / "feedback_train.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["feedback_train"]


def test_structure_and_schedule(monkeypatch):
    from airflow.sdk import AssetOrTimeSchedule

    monkeypatch.delenv("FBK_TRAIN__GPU_QUEUE", raising=False)
    dag = _dag()
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    assert {t.task_id for t in dag.tasks} == {
        "assemble", "pretrain", "plan_candidates", "train_candidate", "register", "gate", "publish_champion"}
    assert [o.name for o in dag.get_task("publish_champion").outlets] == ["champion_model"]
    assert dag.get_task("train_candidate").queue == "default" and dag.get_task("train_candidate").pool == "default_pool"
    assert all(t.retries >= 2 for t in dag.tasks) and dag.catchup is False


def test_gpu_queue_setting_routes_only_the_transformer(monkeypatch):
    monkeypatch.setenv("FBK_TRAIN__GPU_QUEUE", "gpu")
    dag = _dag()
    gpu = dag.get_task("train_transformer")
    assert (gpu.queue, gpu.pool) == ("gpu", "gpu")
    assert dag.get_task("train_candidate").pool == "default_pool"


@pytest.mark.slow
def test_dag_trains_registers_gates_and_publishes(airflow_db, train_env):
    from fbk_tasks.train import registry
    from fbk_tasks.train.gate import list_versions

    from .conftest import make_reviews, write_partition

    s = train_env()
    write_partition(s.curated_dir, make_reviews(150, ds="2026-11-01", seed=7))
    write_partition(s.curated_dir, make_reviews(90, ds="2026-11-02", seed=8))
    dag = _dag()
    run = dag.test(logical_date=dt.datetime(2026, 11, 8, 3, tzinfo=dt.timezone.utc))
    states = {}
    for ti in run.get_task_instances():
        states.setdefault(ti.task_id, []).append(ti.state)
    assert run.state == "success", states
    assert states["train_candidate"] == ["success", "success"]
    assert states["publish_champion"] == ["success"]  # first champion: the asset event is emitted

    rows = {r["candidate"]: r for r in list_versions(s)}
    assert set(rows) == {"baseline", "transformer"}
    verdicts = sorted(r["verdict"] for r in rows.values())
    assert verdicts == ["promoted", "refused"]
    champion = registry.alias_version(registry.client_for(s), s.mlflow.registered_model_name, "champion")
    promoted = next(r for r in rows.values() if r["verdict"] == "promoted")
    assert str(champion.version) == promoted["version"]
    if rows["transformer"]["verdict"] == "promoted":  # a transformer only serves if it clears the baseline
        assert float(rows["transformer"]["golden_f1"]) > float(rows["baseline"]["golden_f1"])

    run2 = dag.test(logical_date=dt.datetime(2026, 11, 15, 3, tzinfo=dt.timezone.utc))
    states2 = {ti.task_id: ti.state for ti in run2.get_task_instances() if ti.task_id != "train_candidate"}
    assert run2.state == "success", states2
    assert states2["publish_champion"] == "skipped"  # no better model: no champion_model event
    assert len(list_versions(s)) == 4


@pytest.mark.slow
def test_dag_fails_without_retry_on_degenerate_data(airflow_db, train_env):
    from fbk_tasks.train.gate import list_versions

    from .conftest import make_reviews, write_partition

    s = train_env()
    write_partition(s.curated_dir, make_reviews(60, classes=("negative",)))
    run = _dag().test(logical_date=dt.datetime(2026, 11, 22, 3, tzinfo=dt.timezone.utc))
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "failed"
    assert states["assemble"] == "failed" and states["publish_champion"] != "success"
    assert list_versions(s) == []

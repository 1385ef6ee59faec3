"""Registry and promotion gate on a real MLflow SQLite store in tmp."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from fbk_tasks.cli import UserError
from fbk_tasks.train import registry
from fbk_tasks.train.data import current_golden, list_partitions, read_curated
from fbk_tasks.train.gate import gate_candidates, list_versions, promote, rollback
from fbk_tasks.train.pipeline import assemble, register_candidate, train_candidate

from .conftest import make_reviews, write_partition

pytestmark = pytest.mark.slow


def fbk(argv: list[str]) -> int:
    """``fbk`` with only this stage's sub-commands (as fbk_tasks.cli.main dispatches them)."""
    import argparse

    from fbk_tasks.train.commands import add_commands

    parser = argparse.ArgumentParser(prog="fbk")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"fbk {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _versions(s):
    client = registry.client_for(s)
    return client.search_model_versions(f"name = '{s.mlflow.registered_model_name}'")


def _baseline(s) -> dict:
    return register_candidate(s, train_candidate(s, assemble(s), "baseline"))


def _aliases(s) -> dict[str, str]:
    client = registry.client_for(s)
    return {k: str(v) for k, v in client.get_registered_model(s.mlflow.registered_model_name).aliases.items()}


def test_worse_candidate_is_refused_with_tags(train_env):
    s = train_env()
    write_partition(s.curated_dir, make_reviews(240, seed=1))
    first = _baseline(s)
    verdict = gate_candidates(s, [first])
    assert verdict["changed"] and verdict["champion_version"] == first["version"]

    # Human "corrections" that shuffle every non-golden label: the next candidate learns noise.
    gold_ids = set(current_golden(s).load().review_id)
    frame = read_curated(s, list_partitions(s))
    pool = frame[~frame.review_id.isin(gold_ids)]
    s.labels_dir.mkdir(parents=True)
    pd.DataFrame({"review_id": pool.review_id, "label": np.random.default_rng(0).permutation(pool.label.to_numpy())}).to_csv(
        s.labels_dir / "shuffled.csv", index=False)
    worse = _baseline(s)
    assert worse["golden_macro_f1"] < first["golden_macro_f1"]
    result = gate_candidates(s, [worse])
    assert not result["changed"] and result["champion_version"] == first["version"]

    tags = registry.client_for(s).get_model_version(s.mlflow.registered_model_name, worse["version"]).tags
    assert tags["fbk.gate.verdict"] == "refused"
    assert "does not beat champion" in tags["fbk.gate.reason"]
    assert float(tags["fbk.gate.candidate_f1"]) < float(tags["fbk.gate.champion_f1"])
    assert tags["fbk.gate.golden_sha256"] == current_golden(s).sha256
    assert _aliases(s) == {"champion": first["version"], "challenger": worse["version"]}
    # the gate refreshed the warehouse: the verdicts are there, typed, without a scoring run
    from fbk_tasks.warehouse.query import query

    rows = query(s, "SELECT model_version, candidate, gate_verdict, golden_macro_f1, gate_at IS NOT NULL FROM model_versions "
                    "ORDER BY model_version")[1]
    assert rows == [(int(first["version"]), "baseline", "promoted", pytest.approx(first["golden_macro_f1"], abs=1e-6), True),
                    (int(worse["version"]), "baseline", "refused", pytest.approx(float(tags["fbk.gate.candidate_f1"])), True)]


def _champion_and_better_candidate(s, gate_first: bool = True) -> tuple[dict, dict]:
    """A first champion trained on shuffled labels (only registered without ``gate_first``), and a
    registered candidate trained on the real ones."""
    write_partition(s.curated_dir, make_reviews(240, seed=1))
    assemble(s)  # takes the golden set
    gold_ids = set(current_golden(s).load().review_id)
    frame = read_curated(s, list_partitions(s))
    pool = frame[~frame.review_id.isin(gold_ids)]
    s.labels_dir.mkdir(parents=True)
    noise = s.labels_dir / "shuffled.csv"
    pd.DataFrame({"review_id": pool.review_id, "label": np.random.default_rng(0).permutation(pool.label.to_numpy())}).to_csv(
        noise, index=False)
    first = _baseline(s)
    if gate_first:
        assert gate_candidates(s, [first])["changed"]
    noise.unlink()
    second = _baseline(s)
    assert second["golden_macro_f1"] > first["golden_macro_f1"]
    return first, second


def test_a_candidate_refused_for_its_own_fault_hands_over_to_the_next(train_env):
    """The run's best candidate fails the fresh-process reload (its model files are corrupt in the
    store); the runner-up, which passes, becomes the first champion instead of the run leaving
    no champion at all (and scoring failing until the next training)."""
    import urllib.parse
    from pathlib import Path

    s = train_env()
    worse, better = _champion_and_better_candidate(s, gate_first=False)
    client = registry.client_for(s)
    mv = client.get_model_version(s.mlflow.registered_model_name, better["version"])
    model_id = mv.model_id or mv.source.split("/", 1)[1]
    stored = Path(urllib.parse.urlparse(client.get_logged_model(model_id).artifact_location).path)
    broken = [f for f in stored.rglob("*") if f.is_file() and f.suffix in (".pkl", ".joblib")]
    assert broken, sorted(stored.rglob("*"))
    for f in broken:
        f.write_bytes(b"not a model")

    result = gate_candidates(s, [worse, better])
    assert result["changed"] and result["champion_version"] == worse["version"]
    assert "fresh-process reload check failed" in result["verdicts"][better["version"]]["reason"]
    assert result["verdicts"][worse["version"]] == {"verdict": "promoted", "reason": "first champion"}
    assert _aliases(s) == {"champion": worse["version"], "challenger": worse["version"]}
    assert gate_candidates(s, [worse, better])["verdicts"] == result["verdicts"]  # a retry answers the same


def test_a_gate_that_dies_between_the_two_aliases_keeps_the_rollback_target(train_env, monkeypatch):
    """The champion alias moves first, then ``previous``: a gate that dies in between leaves the new
    champion in service, and its retry sets ``previous``. (Moving ``previous`` first left
    previous == champion when the retry refused, and the older rollback target was gone.)"""
    from mlflow import MlflowClient

    s = train_env()
    first, second = _champion_and_better_candidate(s)
    real = MlflowClient.set_registered_model_alias
    died = []

    def dies_once_before_previous(self, name, alias, version):
        if alias == registry.PREVIOUS and not died:
            died.append(version)
            raise ConnectionError("worker lost")
        return real(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", dies_once_before_previous)
    with pytest.raises(ConnectionError):
        gate_candidates(s, [second])
    assert _aliases(s) == {"champion": second["version"], "challenger": second["version"]}

    retry = gate_candidates(s, [second])
    assert retry["changed"] and retry["previous_version"] == first["version"]
    assert _aliases(s) == {"champion": second["version"], "previous": first["version"], "challenger": second["version"]}
    assert rollback(s)["champion_version"] == first["version"]


def test_a_manual_promote_that_dies_between_its_two_aliases_is_simply_run_again(train_env, monkeypatch):
    """`fbk model promote` has no retry memory like the gate's: it moves `previous` first, so a
    promote that dies before moving `champion` is run again and sets both (moved second, the
    re-run would find the version champion already and leave `previous` one version too old)."""
    from mlflow import MlflowClient

    s = train_env()
    first, second = _champion_and_better_candidate(s)
    real = MlflowClient.set_registered_model_alias
    calls = []

    def dies_on_the_second_alias(self, name, alias, version):
        calls.append(alias)
        if len(calls) == 2:
            raise ConnectionError("registry went away")
        return real(self, name, alias, version)

    with monkeypatch.context() as m:
        m.setattr(MlflowClient, "set_registered_model_alias", dies_on_the_second_alias)
        with pytest.raises(ConnectionError):
            promote(s, second["version"])
    assert promote(s, second["version"])["changed"]
    aliases = _aliases(s)
    assert (aliases["champion"], aliases["previous"]) == (second["version"], first["version"])
    assert rollback(s)["champion_version"] == first["version"]


def test_a_retried_gate_repeats_its_promotion(train_env, monkeypatch):
    """The gate task fails after it moved the aliases (here: answering retrain requests) and
    Airflow retries it: the retry gives the same answer (promoted, changed, the previous champion),
    not 'already champion', so the champion event still goes out."""
    import fbk_tasks.drift.monitor as monitor

    s = train_env()
    first, second = _champion_and_better_candidate(s)
    real = monitor.answer_retrain_requests
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("tracking server went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(monitor, "answer_retrain_requests", flaky)
    with pytest.raises(ConnectionError):
        gate_candidates(s, [second])
    assert _aliases(s)["champion"] == second["version"]  # the first attempt got as far as moving the aliases

    retry = gate_candidates(s, [second])
    assert retry["changed"] and retry["champion_version"] == second["version"]
    assert retry["previous_version"] == first["version"]
    assert retry["verdicts"][second["version"]]["verdict"] == "promoted"
    tags = registry.client_for(s).get_model_version(s.mlflow.registered_model_name, second["version"]).tags
    assert tags["fbk.gate.verdict"] == "promoted" and tags["fbk.gate.champion_version"] == first["version"]
    assert _aliases(s) == {"champion": second["version"], "previous": first["version"], "challenger": second["version"]}


def test_retried_registration_creates_no_second_version(train_env):
    s = train_env()
    write_partition(s.curated_dir, make_reviews(120, seed=2))
    trained = train_candidate(s, assemble(s), "baseline")
    a = register_candidate(s, trained)
    b = register_candidate(s, trained)  # the task retried after registering
    assert a["version"] == b["version"]
    assert len(_versions(s)) == 1
    assert _versions(s)[0].tags[registry.RUN_ID_TAG] == trained["run_id"]


def test_promote_and_rollback_through_the_cli(train_env, capsys):
    s = train_env()
    write_partition(s.curated_dir, make_reviews(120, seed=3))
    v1 = _baseline(s)["version"]
    v2 = register_candidate(s, train_candidate(s, assemble(s), "baseline"))["version"]
    assert fbk(["model", "promote", v1]) == 0
    assert fbk(["model", "promote", v2]) == 0
    assert _aliases(s) == {"champion": v2, "previous": v1}
    assert fbk(["model", "rollback"]) == 0
    assert _aliases(s) == {"champion": v1, "previous": v2}
    assert fbk(["model", "list"]) == 0
    out = capsys.readouterr().out
    assert "champion" in out and "previous" in out
    assert rollback(s)["champion_version"] == v2  # a second rollback undoes the first
    assert fbk(["model", "promote", "99"]) == 2
    # the warehouse's model_versions follows each alias move at once, not at the next scoring run
    from fbk_tasks.warehouse.query import query

    rows = query(s, "SELECT model_version, aliases, is_champion FROM model_versions ORDER BY model_version")[1]
    assert rows == [(int(v1), ["previous"], False), (int(v2), ["champion"], True)]


def test_degenerate_data_registers_nothing_via_cli(train_env, capsys):
    s = train_env()
    write_partition(s.curated_dir, make_reviews(60, classes=("positive",)))
    assert fbk(["train", "--candidates", "baseline"]) == 2
    assert "only one class" in capsys.readouterr().err
    assert list_versions(s) == []


def test_transformer_pyfunc_from_registry_matches_memory_and_is_promoted(train_env, monkeypatch):
    import mlflow
    import torch

    from fbk_tasks.train.gate import score_on_golden

    s = train_env()
    write_partition(s.curated_dir, make_reviews(240, seed=4))
    trained = train_candidate(s, assemble(s), "transformer")
    reg = register_candidate(s, trained)
    golden = current_golden(s).load()
    client = registry.client_for(s)
    in_memory = pd.read_parquet(client.download_artifacts(trained["run_id"], "evaluation/golden_predictions.parquet"))
    loaded = mlflow.pyfunc.load_model(registry.model_uri(s, reg["version"]))
    texts = golden.text.tolist()
    got = loaded.predict(pd.DataFrame({"text": texts}))
    assert list(got.columns) == ["label", "confidence", "prob_negative", "prob_neutral", "prob_positive"]
    assert (got.label.to_numpy() == in_memory.label.to_numpy()).all()
    np.testing.assert_allclose(got.filter(like="prob_").to_numpy(), in_memory.filter(like="prob_").to_numpy(), atol=1e-5)
    # input order is kept whatever the length-sorted batching does
    rev = loaded.predict(pd.DataFrame({"text": texts[::-1]}))
    np.testing.assert_allclose(rev.filter(like="prob_").to_numpy()[::-1], got.filter(like="prob_").to_numpy(), atol=1e-5)
    assert np.allclose(got.filter(like="prob_").sum(axis=1), 1.0, atol=1e-5)
    with monkeypatch.context() as m:  # a gate on a GPU worker re-scores a champion on the CPU, in fp32, like candidates
        m.setattr(torch.cuda, "is_available", lambda: True)
        _, champion_pred = score_on_golden(s, registry.model_uri(s, reg["version"]), golden)
    np.testing.assert_allclose(champion_pred.filter(like="prob_").to_numpy(), in_memory.filter(like="prob_").to_numpy(),
                               atol=1e-5)
    # the only candidate, no champion yet: promoted after the fresh-process reload check
    result = gate_candidates(s, [reg])
    assert result["changed"], result
    assert promote(s, reg["version"])["changed"] is False


def test_golden_refresh_retakes_and_rescores_the_champion(train_env, capsys):
    import json

    from mlflow import MlflowClient

    s = train_env()
    write_partition(s.curated_dir, make_reviews(120, seed=5))
    first = _baseline(s)
    assert gate_candidates(s, [first])["changed"]
    old = current_golden(s)
    pending = _baseline(s)
    write_partition(s.curated_dir, make_reviews(90, ds="2026-11-09", seed=6))
    assert fbk(["golden", "refresh"]) == 0
    out = json.loads(capsys.readouterr().out)
    new = current_golden(s)
    assert new.sha256 == out["golden_sha256"] != old.sha256 and new.rows == out["rows"] == 42
    assert out["champion_version"] == first["version"] and 0.0 <= out["champion_macro_f1"] <= 1.0
    tags = registry.client_for(s).get_model_version(s.mlflow.registered_model_name, first["version"]).tags
    assert tags["fbk.golden_refresh.sha256"] == new.sha256
    client = MlflowClient(s.mlflow_tracking_uri)
    exp = client.get_experiment_by_name(f"{s.mlflow.experiment_prefix}-train")
    (run,) = client.search_runs([exp.experiment_id], "tags.`fbk.kind` = 'golden-refresh'")
    assert run.data.metrics["golden_macro_f1"] == pytest.approx(out["champion_macro_f1"])
    # drawn outside the rows the champion trained on (it would score optimistically on them, and
    # no candidate, which never trains on golden rows, could beat it)
    assert run.data.metrics["golden_overlap_with_champion_training"] == 0
    trained = registry.trained_review_ids(client, client.get_model_version(s.mlflow.registered_model_name, first["version"]).run_id)
    assert trained and not set(new.load()["review_id"]) & trained
    # a candidate trained before the refresh is not gated against the new golden set
    verdict = gate_candidates(s, [pending])["verdicts"][pending["version"]]
    assert verdict["verdict"] == "refused" and "golden set changed" in verdict["reason"]


def test_label_confidence_weights_reach_the_candidate_run(train_env, monkeypatch):
    """train.label_confidence_power > 0: the run trains on label_confidence ** power and logs the
    mean row weight; power 0 trains unweighted and logs none."""
    import pyarrow as pa

    from fbk_tasks.train.data import PreparedData

    monkeypatch.setenv("FBK_TRAIN__LABEL_CONFIDENCE_POWER", "2")
    s = train_env()
    t = make_reviews(240, seed=9)
    conf = pa.array([0.5 if i % 2 else 1.0 for i in range(240)], pa.float64())
    write_partition(s.curated_dir, t.set_column(t.schema.get_field_index("label_confidence"), "label_confidence", conf))
    prepared = assemble(s)
    train = pd.read_parquet(PreparedData.load(prepared).train_path)
    expected = float((train["label_confidence"] ** 2).mean())
    assert 0.25 < expected < 1.0

    run = registry.client_for(s).get_run(train_candidate(s, prepared, "baseline")["run_id"])
    assert run.data.params["train.label_confidence_power"] == "2.0"
    assert run.data.params["data.train_rows_with_label_confidence"] == str(len(train))
    assert run.data.metrics["train_row_weight_mean"] == pytest.approx(expected)

    monkeypatch.setenv("FBK_TRAIN__LABEL_CONFIDENCE_POWER", "0")
    s = train_env()
    run = registry.client_for(s).get_run(train_candidate(s, assemble(s), "baseline")["run_id"])
    assert "train_row_weight_mean" not in run.data.metrics

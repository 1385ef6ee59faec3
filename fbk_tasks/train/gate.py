"""The promotion gate, manual promotion, rollback, and the golden-set refresh.

A candidate becomes ``champion`` only if, on the current golden set:
(a) its macro-F1 beats the champion's (re-measured now) by at least ``train.min_delta``;
(b) no slice (product_category, language with >= ``train.min_slice_rows`` golden rows) loses
    more than ``train.slice_tolerance`` F1;
(c) loaded from the registry in a fresh process it reproduces its own golden predictions.
Candidates are gated best first (golden macro-F1; on ties the baseline, the cheaper model): the
first that passes is promoted, so one refused for a reason of its own (a slice loss, a failed
reload) hands over to the next. With no champion yet, the best candidate that passes (c) is
promoted, so a transformer becomes the first champion over the baseline only by beating it.
The verdict and its numbers are tags on the version (``fbk.gate.*``).
"""

from __future__ import annotations

import logging
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from fbk_tasks.settings import Settings
from fbk_tasks.train import registry
from fbk_tasks.train.data import current_golden
from fbk_tasks.train.evaluate import Evaluation, evaluate_as_configured, predictions_to_proba

log = logging.getLogger(__name__)

# Preferred on equal golden F1: the cheaper model.
CANDIDATE_PREFERENCE = {"baseline": 0, "transformer": 1}


class GateError(RuntimeError):
    """The gate cannot run (no golden set, unknown version, nothing to roll back to)."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _golden(settings: Settings) -> tuple[pd.DataFrame, str, Path]:
    g = current_golden(settings)
    if g is None or not g.path.exists():
        raise GateError("no golden set: run training (or `fbk golden refresh`) first")
    return g.load(), g.sha256, g.path


def _classes_of(frame: pd.DataFrame) -> list[str]:
    return [c[len("prob_"):] for c in frame.columns if c.startswith("prob_")]


def score_on_golden(settings: Settings, uri: str, golden: pd.DataFrame) -> tuple[Evaluation, pd.DataFrame]:
    """Load ``uri`` in this process and evaluate it on ``golden``: PyTorch in fp32 on the CPU, as
    candidates' golden predictions are made, even on a worker with a GPU (bf16 there)."""
    import mlflow

    registry.client_for(settings)
    from mlflow.exceptions import MlflowException

    model = mlflow.pyfunc.load_model(uri)
    try:
        python_model = model.unwrap_python_model()
    except MlflowException:  # a pyfunc of another flavour (registered by hand): predicted as it is
        python_model = None
    if hasattr(python_model, "use_cpu"):
        python_model.use_cpu()
    pred = model.predict(pd.DataFrame({"text": golden["text"].tolist()}))
    classes = _classes_of(pred)
    t = settings.train
    return evaluate_as_configured(t, golden, predictions_to_proba(pred, classes), classes), pred


def _logged_predictions(settings: Settings, run_id: str, dst: Path) -> Path:
    from fbk_tasks.train.pipeline import GOLDEN_PREDICTIONS

    client = registry.client_for(settings)
    return Path(client.download_artifacts(run_id, f"evaluation/{GOLDEN_PREDICTIONS}", str(dst)))


def _slice_losses(cand: Evaluation, champ: Evaluation, tolerance: float) -> dict[str, float]:
    return {s: round(champ.slices[s] - f, 4) for s, f in cand.slices.items()
            if s in champ.slices and champ.slices[s] - f > tolerance}


def _tag_verdict(client, name: str, version: str, verdict: dict[str, Any], ev: Evaluation | None,
                 champ_f1: float | None, champion, golden_sha: str) -> None:
    registry.set_tags(client, name, version, {
        "fbk.gate.verdict": verdict["verdict"],
        "fbk.gate.reason": verdict["reason"],
        "fbk.gate.candidate_f1": "" if ev is None else f"{ev.macro_f1:.6f}",
        "fbk.gate.champion_f1": "" if champ_f1 is None else f"{champ_f1:.6f}",
        "fbk.gate.champion_version": "" if champion is None else str(champion.version),
        "fbk.gate.golden_sha256": golden_sha,
        "fbk.gate.at": _now(),
    })


def gate_candidates(settings: Settings, registered: list[dict[str, Any]]) -> dict[str, Any]:
    """Gate this run's registered candidates (``register_candidate`` outputs); returns
    ``{"changed", "champion_version", "previous_version", "macro_f1", "verdicts"}``."""
    if not registered:
        raise GateError("no registered candidates to gate")
    client = registry.client_for(settings)
    name = settings.mlflow.registered_model_name
    t = settings.train
    golden, golden_sha, golden_path = _golden(settings)
    verdicts: dict[str, dict[str, Any]] = {}

    with tempfile.TemporaryDirectory(prefix="fbk-gate-") as tmp:
        evals: dict[str, tuple[Evaluation, Path]] = {}
        for c in registered:
            v = c["version"]
            if c["golden_sha256"] != golden_sha:
                verdicts[v] = {"verdict": "refused", "reason": "golden set changed since this candidate was trained; retrain"}
                continue
            pred_path = _logged_predictions(settings, c["run_id"], Path(tmp) / v)
            pred = pd.read_parquet(pred_path).set_index("review_id").loc[golden["review_id"]].reset_index()
            classes = _classes_of(pred)
            evals[v] = (evaluate_as_configured(t, golden, predictions_to_proba(pred, classes), classes), pred_path)

        kinds = {c["version"]: c["candidate"] for c in registered}
        ranked = sorted(evals, key=lambda v: (-round(evals[v][0].macro_f1, 6), CANDIDATE_PREFERENCE.get(kinds[v], 9), int(v)))
        champion = registry.alias_version(client, name, registry.CHAMPION)
        champ_f1: float | None = None
        champ_ev: Evaluation | None = None
        changed = False
        retried = False
        winner: str | None = None
        prior = client.get_model_version(name, str(champion.version)).tags if champion is not None and str(champion.version) in evals else {}
        if prior.get("fbk.gate.verdict") == "promoted":
            # a retry of this gate after it promoted one of this run's candidates (the verdict is
            # tagged before the aliases move): the same answer again, so the champion event and
            # retrain answers still go out; the others keep the verdicts the first attempt tagged
            retried, changed, winner = True, True, str(champion.version)
            verdicts[winner] = {"verdict": "promoted", "reason": prior.get("fbk.gate.reason", "")}
            champ_f1 = float(prior["fbk.gate.champion_f1"]) if prior.get("fbk.gate.champion_f1") else None
            was = prior.get("fbk.gate.champion_version")
            champion = client.get_model_version(name, was) if was else None
            for v in ranked:
                tags = client.get_model_version(name, v).tags
                verdicts.setdefault(v, {"verdict": "refused", "reason": tags.get("fbk.gate.reason") or f"candidate v{winner} of this run was promoted"})
        # best first; a candidate refused for a reason of its own (a slice loss, a failed reload)
        # hands over to the next, which may still beat the champion (or be the first champion)
        for v in ranked if not retried else []:
            if winner is not None:
                verdicts[v] = {"verdict": "refused", "reason": f"candidate v{winner} of this run was promoted "
                               f"({evals[winner][0].macro_f1:.4f} vs {evals[v][0].macro_f1:.4f})"}
                continue
            client.set_registered_model_alias(name, registry.CHALLENGER, v)
            cand_ev, pred_path = evals[v]
            reason = ""
            if champion is not None and str(champion.version) == v:
                reason = "already champion"
            elif champion is not None:
                if champ_ev is None:
                    champ_ev, _ = score_on_golden(settings, registry.model_uri(settings, champion.version), golden)
                    champ_f1 = champ_ev.macro_f1
                delta = cand_ev.macro_f1 - champ_f1
                losses = _slice_losses(cand_ev, champ_ev, t.slice_tolerance)
                if delta <= 0:
                    reason = f"macro-F1 {cand_ev.macro_f1:.4f} does not beat champion v{champion.version} {champ_f1:.4f}"
                elif delta < t.min_delta:
                    reason = (f"macro-F1 {cand_ev.macro_f1:.4f} gains {delta:+.4f} over champion v{champion.version} "
                              f"{champ_f1:.4f}, less than min_delta={t.min_delta}")
                elif losses:
                    reason = f"slice F1 loss above slice_tolerance={t.slice_tolerance}: {losses}"
            if not reason:
                from fbk_tasks.train.verify import verify_in_fresh_process

                check = verify_in_fresh_process(registry.model_uri(settings, v), golden_path, pred_path,
                                                settings.mlflow_tracking_uri, settings.mlflow_registry_uri,
                                                settings.mlflow.verify_timeout_s)
                if not check.get("ok"):
                    reason = f"fresh-process reload check failed: {check.get('reason')}"
            if reason:
                verdicts[v] = {"verdict": "refused", "reason": reason}
                continue
            winner = v
            verdicts[v] = {"verdict": "promoted", "reason": "first champion" if champion is None else
                           f"beats champion v{champion.version}"}
            _tag_verdict(client, name, v, verdicts[v], cand_ev, champ_f1, champion, golden_sha)
            client.set_registered_model_alias(name, registry.CHAMPION, v)
            changed = True
        if changed and champion is not None:
            # after the champion moved, and again on a retry: a gate that died between the two
            # aliases gets `previous` set by its retry; moved first, a refusing retry would
            # leave previous == champion and the older rollback target lost
            client.set_registered_model_alias(name, registry.PREVIOUS, champion.version)

    for c in registered:
        v = c["version"]
        _tag_verdict(client, name, v, verdicts[v], evals.get(v, (None,))[0], champ_f1, champion, golden_sha)
        log.info("gate v%s (%s): %s - %s", v, c["candidate"], verdicts[v]["verdict"], verdicts[v]["reason"])

    now = registry.alias_version(client, name, registry.CHAMPION)
    result = {
        "changed": changed,
        "champion_version": None if now is None else str(now.version),
        "previous_version": str(champion.version) if changed and champion is not None else None,
        "macro_f1": evals[winner][0].macro_f1 if changed else champ_f1,
        "verdicts": verdicts,
    }
    from fbk_tasks.drift.monitor import answer_retrain_requests

    # this run trained on data that includes every night that asked for a retrain: answer them
    # (request file, fbk.trigger.* / fbk.drift.refused_retrain tags, the nights' drift reports)
    answered = answer_retrain_requests(settings, result, registered)
    result["answered_requests"] = [e["ds"] for e in answered]
    _refresh_warehouse(settings)
    return result


def _refresh_warehouse(settings: Settings) -> None:
    """model_versions shows the new verdicts and aliases now, not after the next scoring run."""
    from fbk_tasks.score.run import refresh_warehouse

    refresh_warehouse(settings, registry=True)


def promote(settings: Settings, version: str | int, reason: str = "manual promotion") -> dict[str, Any]:
    """Make ``version`` champion by hand (no gate); the replaced champion becomes ``previous``."""
    client = registry.client_for(settings)
    name = settings.mlflow.registered_model_name
    version = str(version)
    try:
        client.get_model_version(name, version)
    except Exception as exc:
        raise GateError(f"{name} has no version {version}") from exc
    champion = registry.alias_version(client, name, registry.CHAMPION)
    if champion is not None and str(champion.version) == version:
        return {"changed": False, "champion_version": version, "previous_version": None}
    # `previous` first: a promote that dies in between is simply run again (champion is still
    # the old one, so it sets both); moved second, a re-run would find `version` champion already
    # and return early, with `previous` one version too old
    if champion is not None:
        client.set_registered_model_alias(name, registry.PREVIOUS, champion.version)
    client.set_registered_model_alias(name, registry.CHAMPION, version)
    registry.set_tags(client, name, version, {"fbk.gate.verdict": "promoted-manually", "fbk.gate.reason": reason,
                                              "fbk.gate.at": _now()})
    _refresh_warehouse(settings)
    return {"changed": True, "champion_version": version, "previous_version": None if champion is None else str(champion.version)}


def rollback(settings: Settings) -> dict[str, Any]:
    """champion <- previous; the replaced champion becomes previous (so a second rollback undoes it)."""
    client = registry.client_for(settings)
    name = settings.mlflow.registered_model_name
    previous = registry.alias_version(client, name, registry.PREVIOUS)
    champion = registry.alias_version(client, name, registry.CHAMPION)
    if previous is None:
        raise GateError(f"{name} has no 'previous' version to roll back to")
    client.set_registered_model_alias(name, registry.CHAMPION, previous.version)
    if champion is not None:
        client.set_registered_model_alias(name, registry.PREVIOUS, champion.version)
    registry.set_tags(client, name, previous.version, {"fbk.gate.verdict": "rolled-back-to", "fbk.gate.at": _now()})
    _refresh_warehouse(settings)
    return {"changed": True, "champion_version": str(previous.version),
            "previous_version": None if champion is None else str(champion.version)}


def list_versions(settings: Settings) -> list[dict[str, Any]]:
    client = registry.client_for(settings)
    name = settings.mlflow.registered_model_name
    versions = client.search_model_versions(f"name = '{name}'")  # none for a model not registered yet
    aliases: dict[str, list[str]] = {}
    if versions:
        for alias, v in client.get_registered_model(name).aliases.items():
            aliases.setdefault(str(v), []).append(alias)
    rows = []
    for v in sorted(versions, key=lambda v: int(v.version)):
        rows.append({
            "version": str(v.version),
            "aliases": ",".join(sorted(aliases.get(str(v.version), []))),
            "candidate": v.tags.get("fbk.candidate", ""),
            "verdict": v.tags.get("fbk.gate.verdict", ""),
            "golden_f1": v.tags.get("fbk.gate.candidate_f1", ""),
            "run_id": v.run_id or v.tags.get(registry.RUN_ID_TAG, ""),
            "reason": v.tags.get("fbk.gate.reason", ""),
        })
    return rows


def refresh_golden(settings: Settings, ds_from: str | None = None, ds_to: str | None = None) -> dict[str, Any]:
    """Re-take the golden set from current curated data and re-score the champion on it (logged to MLflow).

    The new set is drawn outside the champion's training rows (its prepared ``train.parquet``):
    scored on rows it learnt, the champion would look better than it is, and no candidate
    (which never trains on golden rows) could beat it. When those rows are unknown (the prepared
    data was removed) the set is drawn from everything, and the overlap is logged as
    ``golden_overlap_with_champion_training``.
    """
    import mlflow

    from fbk_tasks.train.data import draw_golden, load_labelled, take_golden

    labelled = load_labelled(settings, ds_from, ds_to)
    client = registry.client_for(settings)
    name = settings.mlflow.registered_model_name
    champion = registry.alias_version(client, name, registry.CHAMPION)
    trained = registry.trained_review_ids(client, champion.run_id) if champion is not None else None
    g = take_golden(settings, labelled.frame, draw_golden(settings, labelled.frame, exclude=trained))
    golden = g.load()
    out: dict[str, Any] = {"golden_path": str(g.path), "golden_sha256": g.sha256, "rows": g.rows,
                           "champion_version": None, "champion_macro_f1": None}
    with mlflow.start_run(experiment_id=registry.experiment_id(settings, "train"), run_name="golden-refresh"):
        mlflow.set_tags({"fbk.kind": "golden-refresh", "fbk.golden_sha256": g.sha256})
        mlflow.log_params({"golden.rows": g.rows, "golden.sha256": g.sha256, "golden.partitions": ",".join(labelled.partitions),
                           **{f"golden.rows.{k}": v for k, v in g.rows_per_class.items()}})
        if champion is not None:
            ev, _ = score_on_golden(settings, registry.model_uri(settings, champion.version), golden)
            mlflow.log_param("champion_version", champion.version)
            mlflow.log_metrics(ev.metrics("golden"))
            overlap = _training_overlap(client, champion.run_id, golden)
            if overlap is not None:
                mlflow.log_metric("golden_overlap_with_champion_training", overlap)
            registry.set_tags(client, name, champion.version,
                              {"fbk.golden_refresh.sha256": g.sha256, "fbk.golden_refresh.macro_f1": f"{ev.macro_f1:.6f}"})
            out.update(champion_version=str(champion.version), champion_macro_f1=ev.macro_f1)
    return out


def _training_overlap(client, run_id: str | None, golden: pd.DataFrame) -> int | None:
    trained = registry.trained_review_ids(client, run_id)
    return None if trained is None else int(golden["review_id"].isin(trained).sum())

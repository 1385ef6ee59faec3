"""MLflow plumbing: URIs and experiments from settings, idempotent registration, aliases.

MLflow 3 uses aliases, not stages: ``champion`` (what scoring loads), ``challenger`` (the last
gated candidate) and ``previous`` (the champion before the current one, for rollback).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from fbk_tasks.score.registry import is_missing_alias
from fbk_tasks.settings import Settings

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"
RUN_ID_TAG = "fbk.run_id"


def client_for(settings: Settings) -> MlflowClient:
    """Point MLflow (fluent API included) at the settings' stores and return a client."""
    (settings.data_dir / "mlflow").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_registry_uri)
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_registry_uri)


def experiment_id(settings: Settings, task: str) -> str:
    """``<prefix>-<task>``, created with the settings' artifact location when missing."""
    client = client_for(settings)
    name = f"{settings.mlflow.experiment_prefix}-{task}"
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=settings.mlflow_artifact_location)
    except MlflowException:  # created concurrently by a sibling task
        return client.get_experiment_by_name(name).experiment_id


def model_uri(settings: Settings, version: str | int) -> str:
    return f"models:/{settings.mlflow.registered_model_name}/{version}"


def find_version_for_run(client: MlflowClient, name: str, run_id: str) -> ModelVersion | None:
    """The version already registered from ``run_id`` (by its run_id or the fbk.run_id tag).

    A model that does not exist yet has no versions (an empty search); any error propagates, so a
    registry hiccup fails the task instead of registering the run a second time."""
    versions = client.search_model_versions(f"name = '{name}'")
    matches = [v for v in versions if v.run_id == run_id or v.tags.get(RUN_ID_TAG) == run_id]
    return min(matches, key=lambda v: int(v.version)) if matches else None


def register(settings: Settings, run_id: str, logged_model_uri: str, tags: dict[str, str] | None = None) -> ModelVersion:
    """Register the run's model once: a retried call returns the version it made before."""
    client = client_for(settings)
    name = settings.mlflow.registered_model_name
    existing = find_version_for_run(client, name, run_id)
    if existing is not None:
        log.info("run %s already registered as %s v%s", run_id, name, existing.version)
        return existing
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
    mv = client.create_model_version(
        name, source=logged_model_uri, run_id=run_id, tags={RUN_ID_TAG: run_id, **(tags or {})},
        model_id=logged_model_uri.split("/", 1)[1] if logged_model_uri.startswith("models:/m-") else None,
    )
    log.info("registered run %s as %s v%s", run_id, name, mv.version)
    return mv


def trained_review_ids(client: MlflowClient, run_id: str | None) -> set[str] | None:
    """The review ids a training run trained on (its prepared ``train.parquet``, named by the
    run's ``fbk.prepared_dir`` tag), or None when unknown (no run, the prepared data removed)."""
    import pandas as pd

    if not run_id:
        return None
    prepared = client.get_run(run_id).data.tags.get("fbk.prepared_dir")
    path = Path(prepared or "") / "train.parquet"
    if not prepared or not path.exists():
        return None
    return set(pd.read_parquet(path, columns=["review_id"])["review_id"])


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version holding ``alias``; None only when the model or the alias does not exist.

    Any other error (a locked SQLite store, an unreachable tracking server) propagates: read as
    "no champion" it would let the gate promote without comparing and lose the rollback target."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if is_missing_alias(exc):
            return None
        raise


def set_tags(client: MlflowClient, name: str, version: str, tags: dict[str, Any]) -> None:
    for k, v in tags.items():
        client.set_model_version_tag(name, str(version), k, "" if v is None else str(v))


def log_params_flat(params: dict[str, Any]) -> None:
    """Log params in chunks (MLflow caps a batch at 100); values truncated to MLflow's limit."""
    items = [(k, "" if v is None else str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 90):
        mlflow.log_params(dict(items[i : i + 90]))


ONNX_TAG_PREFIX = "fbk.onnx."


def log_onnx_export(settings: Settings, model: Any, tokenizer: Any, golden: Any, golden_proba: Any,
                    classes: list[str], workdir: Any) -> str:
    """Inside an active training run: export the transformer to ONNX (fp32, and int8 when
    ``score.onnx_int8``), check each export against the PyTorch golden probabilities
    (``score.onnx_min_agreement``, ``score.onnx_max_f1_drop``) and PyTorch's speed on the same
    rows (``score.onnx_min_speedup``), log the check as run metrics,
    ``fbk.onnx.*`` run tags and ``evaluation/onnx_check.json``; return the folder to log as the
    pyfunc's ``onnx_dir`` artifact (``onnx.json`` inside says which backend passed)."""
    from fbk_tasks.score.onnx import export_and_check, metrics_of, tags_of

    t, s = settings.train, settings.score
    index = {c: i for i, c in enumerate(classes)}
    y_true = [index.get(str(label), -1) for label in golden["label"].tolist()]
    out = Path(workdir) / "onnx"
    from fbk_tasks.train.transformer import predict_proba

    def torch_predict(texts: list[str]) -> Any:  # the PyTorch serving path, timed against the exports
        return predict_proba(model, tokenizer, texts, t.eval_batch_size, t.max_length)

    meta = export_and_check(model, tokenizer, out, golden["text"].tolist(), y_true, golden_proba,
                            max_length=t.max_length, batch_size=t.eval_batch_size, quantize=s.onnx_int8,
                            max_f1_drop=s.onnx_max_f1_drop, min_agreement=s.onnx_min_agreement, threads=s.threads,
                            torch_predict=torch_predict if s.onnx_min_speedup > 0 else None,
                            min_speedup=s.onnx_min_speedup, int8_recheck_margin=s.onnx_int8_recheck_margin)
    mlflow.log_metrics(metrics_of(meta))
    mlflow.set_tags(tags_of(meta))
    mlflow.log_dict(meta, "evaluation/onnx_check.json")
    log.info("ONNX export check: serving backend %s (%s)", meta["backend"],
             {k: (round(v["label_agreement"], 4), round(v["macro_f1_drop"], 4), v["passed"]) for k, v in meta["exports"].items()})
    return str(out)


def onnx_tags(settings: Settings, run_id: str) -> dict[str, str]:
    """The ``fbk.onnx.*`` tags of a training run (empty for a run without ONNX export)."""
    run = client_for(settings).get_run(run_id)
    return {k: v for k, v in run.data.tags.items() if k.startswith(ONNX_TAG_PREFIX)}

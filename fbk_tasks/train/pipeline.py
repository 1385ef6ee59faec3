"""The training steps, as called by the ``feedback_train`` DAG and by ``fbk train``.

Each step takes a :class:`Settings` and small JSON-able values (paths, run ids) and returns one,
so that DAG tasks stay thin.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import Any

import pandas as pd

from fbk_tasks.settings import Settings, redact_uri
from fbk_tasks.train import registry
from fbk_tasks.train.data import PreparedData, TrainingDataError, prepare_training_data, row_weights
from fbk_tasks.train.evaluate import Evaluation, evaluate_as_configured, plot_confusion

log = logging.getLogger(__name__)

CANDIDATES = ("baseline", "transformer")
GOLDEN_PREDICTIONS = "golden_predictions.parquet"


def assemble(settings: Settings, ds_from: str | None = None, ds_to: str | None = None) -> str:
    """Training data ready on disk; returns the prepared directory (raises TrainingDataError)."""
    return str(prepare_training_data(settings, ds_from, ds_to).dir)


def settings_params(settings: Settings, candidate: str) -> dict[str, Any]:
    """Every setting that shaped a run, flattened for MLflow params (URI passwords masked)."""
    params: dict[str, Any] = {"candidate": candidate}
    for k, v in settings.train.model_dump().items():
        params[f"train.{k}"] = v
    for k, v in settings.mlflow.model_dump().items():
        params[f"mlflow.{k}"] = v
    return {k: redact_uri(v) if isinstance(v, str) else v for k, v in params.items()}


def _pip_requirements(kind: str, onnx: bool = False) -> list[str]:
    """Pins for the logged model's environment: installed versions without their local label
    (``2.13.0+cpu`` -> ``2.13.0``; PyPI has no ``+cpu``), onnxruntime too when ``onnx`` (the
    model carries an ONNX export that may serve)."""
    pkgs = ["mlflow", "pandas", "numpy", "scikit-learn", "joblib"]
    if kind == "transformer":
        pkgs += ["torch", "transformers", "tokenizers", "safetensors"]
    if onnx:
        pkgs.append("onnxruntime")
    return [f"{p}=={pkg_version(p).split('+', 1)[0]}" for p in pkgs]


def _log_evaluation(ev: Evaluation, prefix: str, workdir: Path) -> None:
    import mlflow

    mlflow.log_metrics(ev.metrics(prefix))
    report = workdir / f"{prefix}_classification_report.txt"
    report.write_text(ev.report)
    mlflow.log_artifact(str(report), "evaluation")
    (workdir / f"{prefix}_evaluation.json").write_text(json.dumps(ev.__dict__, indent=2, default=str))
    mlflow.log_artifact(str(workdir / f"{prefix}_evaluation.json"), "evaluation")
    png = plot_confusion(ev, workdir / f"{prefix}_confusion_matrix.png", f"{prefix} confusion matrix")
    mlflow.log_artifact(str(png), "evaluation")


def train_candidate(settings: Settings, prepared_dir: str, candidate: str, base_model: str | None = None) -> dict[str, Any]:
    """Train one candidate, evaluate it on dev and golden, log everything and the pyfunc to MLflow.

    Returns ``{"run_id", "candidate", "model_uri", "golden_macro_f1", "golden_sha256"}``.
    """
    import joblib
    import mlflow
    from mlflow.models import infer_signature

    from fbk_tasks.train.pyfunc import SentimentModel, output_frame

    if candidate not in CANDIDATES:
        raise ValueError(f"unknown candidate {candidate!r}; choose from {CANDIDATES}")
    prep = PreparedData.load(prepared_dir)
    train = pd.read_parquet(prep.train_path)
    dev = pd.read_parquet(prep.dev_path)
    golden = pd.read_parquet(prep.golden_path)
    if set(golden["review_id"]) & set(train["review_id"]):
        raise TrainingDataError("golden rows found in the training split")  # never by construction
    classes = prep.classes
    t = settings.train
    exp_id = registry.experiment_id(settings, "train")

    with tempfile.TemporaryDirectory(prefix=f"fbk-{candidate}-") as tmp, mlflow.start_run(
        experiment_id=exp_id, run_name=f"{candidate}-{prep.dir.name}"
    ) as run:
        work = Path(tmp)
        mlflow.set_tags({"fbk.candidate": candidate, "fbk.golden_sha256": prep.golden_sha256,
                         "fbk.prepared_dir": str(prep.dir), "fbk.kind": "candidate"})
        registry.log_params_flat({**settings_params(settings, candidate), **prep.lineage()})
        mlflow.log_dict(json.loads((prep.dir / "meta.json").read_text()), "lineage/prepared_meta.json")
        label_map = {"kind": candidate, "classes": classes, "max_length": t.max_length, "batch_size": t.eval_batch_size}
        artifacts: dict[str, str] = {}
        metrics: dict[str, float] = {}
        weights = row_weights(train, t.label_confidence_power)
        if weights is not None:
            metrics["train_row_weight_mean"] = float(weights.mean())
        if candidate == "baseline":
            from fbk_tasks.train.baseline import predict_proba, train_baseline

            res = train_baseline(train["text"].tolist(), train["label"].tolist(), classes, prep.language_share, t,
                                 sample_weight=weights)
            mlflow.log_param("baseline.features", res.features)
            path = work / "baseline.joblib"
            joblib.dump(res.model, path)
            artifacts["sklearn_model"] = str(path)

            def proba(texts):
                return predict_proba(res.model, list(texts), classes)

            metrics.update(train_seconds=res.train_seconds, samples_per_second=res.samples_per_second)
        else:
            from fbk_tasks.train import transformer as tr

            res = tr.fine_tune(train["text"].tolist(), train["label"].tolist(), dev["text"].tolist(),
                               dev["label"].tolist(), classes, settings, base_model, train_weights=weights)
            mlflow.log_params({"transformer.base_model_path": res.base_model, "transformer.device": res.device,
                               "transformer.threads": res.threads, "transformer.cpu_bf16_used": res.cpu_bf16,
                               "transformer.rdrop_alpha_used": res.rdrop_alpha})
            if res.cpu_bf16_probe or res.epoch_probe:
                mlflow.log_metrics({**res.cpu_bf16_probe, **res.epoch_probe})
            for h in res.history:
                mlflow.log_metrics({"dev_macro_f1_epoch": h["dev_macro_f1"], "train_loss_epoch": h["train_loss"],
                                    "epoch_seconds": h["epoch_seconds"]}, step=h["epoch"])
            if res.class_bias is not None:
                mlflow.log_param("transformer.class_bias", json.dumps(res.class_bias))
                mlflow.log_metric("dev_macro_f1_before_bias", res.dev_macro_f1_before_bias)
            out = tr.save(res, work / "hf_model")
            artifacts["model_dir"] = str(out)
            if res.device != "cpu":
                # evaluate, log the golden predictions and export from the model as CPU workers
                # serve it (fp32, no autocast): the gate's reload check and the ONNX checks compare
                # against these numbers, and a bf16 GPU pass would differ beyond their tolerance
                res.model.to("cpu")

            def proba(texts):
                return tr.predict_proba(res.model, res.tokenizer, list(texts), t.eval_batch_size, t.max_length)

            metrics.update(train_seconds=res.train_seconds, samples_per_second=res.samples_per_second,
                           steps=res.steps, epochs_run=res.epochs_run, best_epoch=res.best_epoch,
                           seconds_per_epoch=sum(res.epoch_seconds) / max(len(res.epoch_seconds), 1))
        mlflow.log_metrics(metrics)
        dev_ev = evaluate_as_configured(t, dev, proba(dev["text"]), classes)
        _log_evaluation(dev_ev, "dev", work)
        start = time.perf_counter()
        golden_proba = proba(golden["text"])
        mlflow.log_metric("golden_predict_rows_per_second", len(golden) / max(time.perf_counter() - start, 1e-9))
        golden_ev = evaluate_as_configured(t, golden, golden_proba, classes)
        _log_evaluation(golden_ev, "golden", work)
        preds = output_frame(golden_proba, classes)
        preds.insert(0, "review_id", golden["review_id"].to_numpy())
        preds.to_parquet(work / GOLDEN_PREDICTIONS, index=False)
        mlflow.log_artifact(str(work / GOLDEN_PREDICTIONS), "evaluation")
        if candidate == "transformer" and settings.score.onnx:  # ONNX exports checked on golden, in the pyfunc
            artifacts["onnx_dir"] = registry.log_onnx_export(settings, res.model, res.tokenizer, golden, golden_proba,
                                                             classes, work)

        (work / "label_map.json").write_text(json.dumps(label_map, indent=2))
        artifacts["label_map"] = str(work / "label_map.json")
        example = pd.DataFrame({"text": golden["text"].head(3).tolist()})
        signature = infer_signature(example, output_frame(proba(example["text"]), classes))
        info = mlflow.pyfunc.log_model(
            name="model", python_model=SentimentModel(), artifacts=artifacts, signature=signature,
            input_example=example, pip_requirements=_pip_requirements(candidate, onnx="onnx_dir" in artifacts),
        )
        log.info("%s: golden macro-F1 %.4f, dev macro-F1 %.4f (run %s)", candidate, golden_ev.macro_f1,
                 dev_ev.macro_f1, run.info.run_id)
        return {
            "run_id": run.info.run_id,
            "candidate": candidate,
            "model_uri": info.model_uri,
            "golden_macro_f1": golden_ev.macro_f1,
            "golden_sha256": prep.golden_sha256,
            "partitions": list(prep.partitions),  # which retrain requests this run can answer
        }


def register_candidate(settings: Settings, trained: dict[str, Any]) -> dict[str, Any]:
    """Register a trained candidate (idempotent per run); returns ``trained`` plus ``version``."""
    tags = {"fbk.candidate": trained["candidate"], "fbk.golden_sha256": trained["golden_sha256"]}
    tags.update(registry.onnx_tags(settings, trained["run_id"]))  # which backend passed the ONNX check
    mv = registry.register(settings, trained["run_id"], trained["model_uri"], tags=tags)
    return {**trained, "version": str(mv.version)}


def run_training(settings: Settings, ds_from: str | None = None, ds_to: str | None = None,
                 candidates: list[str] | None = None) -> dict[str, Any]:
    """The whole stage in one process (``fbk train``): assemble, train, register, gate."""
    from fbk_tasks.train.gate import gate_candidates

    prepared = assemble(settings, ds_from, ds_to)
    pretrained = None
    if settings.train.pretrain and "transformer" in (candidates or settings.train.candidates):
        from fbk_tasks.train.pretrain import pretrain

        pretrained = pretrain(settings, ds_from, ds_to)  # the transformer fine-tunes from it, as in the DAG
    registered = [register_candidate(settings, train_candidate(settings, prepared, c, pretrained))
                  for c in (candidates or settings.train.candidates)]
    return gate_candidates(settings, registered)

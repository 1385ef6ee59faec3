"""Review fixes: a registry hiccup is not an empty registry, fp32 whatever the checkpoint's dtype,
resolvable pip pins (with onnxruntime for an ONNX export), no store password in run params."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

from .conftest import make_reviews, write_partition

CLASSES = ["negative", "neutral", "positive"]


class _Hiccup(MlflowClient):
    """A registry that cannot answer: locked SQLite store, or a server that timed out."""

    error: Exception

    def get_registered_model(self, name):
        raise self.error

    def search_model_versions(self, *args, **kwargs):
        raise self.error


def _snapshots(settings) -> list[Path]:
    from fbk_tasks.warehouse.sources import registry_snapshot_dir

    return sorted(registry_snapshot_dir(settings).glob("model_versions-*.parquet"))


def test_a_registry_hiccup_writes_no_snapshot_and_a_missing_model_an_empty_one(settings, monkeypatch):
    """Read as "no model", a locked store made the warehouse show no versions and no served
    version until the next run."""
    from fbk_tasks.score import registry as score_registry
    from fbk_tasks.score.registry import snapshot_registry
    from fbk_tasks.score.testing import register_keyword_model

    (settings.data_dir / "mlflow").mkdir(parents=True, exist_ok=True)
    empty = snapshot_registry(settings)  # no such model yet: an empty snapshot
    assert pq.read_table(empty).num_rows == 0
    version = register_keyword_model(settings)
    good = snapshot_registry(settings)
    assert pq.read_table(good).column("served_version").to_pylist() == [version]

    for error in (MlflowException("(sqlite3.OperationalError) database is locked", error_code=TEMPORARILY_UNAVAILABLE),
                  OSError("tracking server timed out")):
        def hiccup(s, error=error):
            client = _Hiccup(tracking_uri=s.mlflow_tracking_uri, registry_uri=s.mlflow_registry_uri)
            client.error = error
            return client

        monkeypatch.setattr(score_registry, "configure_mlflow", hiccup)
        with pytest.raises(type(error)) as raised:
            snapshot_registry(settings)
        assert raised.value is error
        assert _snapshots(settings) == [empty, good]  # the newest snapshot still names the served version


def _bf16_checkpoint(tiny_base_model: Path, out: Path, classifier: bool = False) -> Path:
    """The tiny BERT (or a classifier on it) saved in bfloat16, with its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertModel

    torch.manual_seed(0)
    if classifier:
        model = AutoModelForSequenceClassification.from_pretrained(
            tiny_base_model, num_labels=len(CLASSES), id2label=dict(enumerate(CLASSES)),
            label2id={c: i for i, c in enumerate(CLASSES)}, dtype=torch.float32)
    else:
        model = BertModel.from_pretrained(tiny_base_model, dtype=torch.float32)
    model.to(torch.bfloat16).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_base_model).save_pretrained(out)
    # the premise: transformers 5 loads this checkpoint in bf16 unless told otherwise
    assert next(type(model).from_pretrained(out).parameters()).dtype == torch.bfloat16
    return out


def test_a_bf16_base_checkpoint_is_fine_tuned_in_fp32(train_env, monkeypatch, tiny_base_model, tmp_path):
    from fbk_tasks.train.transformer import fine_tune

    base = _bf16_checkpoint(tiny_base_model, tmp_path / "bf16-base")
    for k, v in {"BASE_MODEL": str(base), "EPOCHS": "1", "CPU_BF16": "off", "POOLING": "cls"}.items():
        monkeypatch.setenv(f"FBK_TRAIN__{k}", v)
    s = train_env()
    rows = make_reviews(60, seed=3, zh_share=0.0, unique=False).to_pylist()
    texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    res = fine_tune(texts[:48], labels[:48], texts[48:], labels[48:], CLASSES, s)
    assert {p.dtype for p in res.model.parameters()} == {torch.float32}


def test_the_pyfunc_serves_a_bf16_saved_model_in_fp32(tiny_base_model, tmp_path):
    from fbk_tasks.train.pyfunc import SentimentModel

    model_dir = _bf16_checkpoint(tiny_base_model, tmp_path / "model", classifier=True)
    label_map = tmp_path / "label_map.json"
    label_map.write_text(json.dumps({"kind": "transformer", "classes": CLASSES, "max_length": 32, "batch_size": 8}))
    pyfunc = SentimentModel()
    pyfunc.load_context(SimpleNamespace(artifacts={"label_map": str(label_map), "model_dir": str(model_dir)}))
    pyfunc.use_cpu()
    assert {p.dtype for p in pyfunc.model.parameters()} == {torch.float32}
    assert pyfunc.predict(None, ["love this phone", "the kettle is junk"])["label"].isin(CLASSES).all()


def test_pip_requirements_drop_local_version_labels_and_pin_onnxruntime_with_an_export(monkeypatch):
    from fbk_tasks.train import pipeline

    installed = {"torch": "2.13.0+cu130", "onnxruntime": "1.32.0", "transformers": "5.24.0"}
    monkeypatch.setattr(pipeline, "pkg_version", lambda p: installed.get(p, "1.0.0+local.7"))
    pins = pipeline._pip_requirements("transformer")
    assert "torch==2.13.0" in pins and "transformers==5.24.0" in pins and not any("+" in p for p in pins)
    assert not any(p.startswith("onnxruntime") for p in pins)
    with_onnx = pipeline._pip_requirements("transformer", onnx=True)
    assert with_onnx == [*pins, "onnxruntime==1.32.0"]
    assert not any(p.startswith(("onnxruntime", "torch")) for p in pipeline._pip_requirements("baseline"))


@pytest.mark.slow
def test_a_transformer_logged_with_an_onnx_export_requires_onnxruntime(train_env, monkeypatch, tmp_path):
    """The wiring: the logged model's requirements.txt pins onnxruntime when the pyfunc carries
    ``onnx_dir``, and no pin has a local label PyPI cannot resolve."""
    import mlflow

    from fbk_tasks.train import registry
    from fbk_tasks.train.pipeline import assemble, train_candidate

    def fake_export(settings, model, tokenizer, golden, golden_proba, classes, workdir):
        out = Path(workdir) / "onnx"
        out.mkdir()
        (out / "model.onnx").write_bytes(b"")  # no onnx.json: the pyfunc serves PyTorch
        return str(out)

    monkeypatch.setattr(registry, "log_onnx_export", fake_export)
    for k, v in {"EPOCHS": "1", "CPU_BF16": "off", "POOLING": "cls"}.items():
        monkeypatch.setenv(f"FBK_TRAIN__{k}", v)
    s = train_env()
    write_partition(s.curated_dir, make_reviews(120, seed=5))
    trained = train_candidate(s, assemble(s), "transformer")
    logged = mlflow.get_logged_model(trained["model_uri"].removeprefix("models:/"))
    reqs = Path(mlflow.artifacts.download_artifacts(f"{logged.artifact_location}/requirements.txt",
                                                    dst_path=str(tmp_path / "dl"))).read_text().split()
    assert any(r.startswith("onnxruntime==") for r in reqs)
    assert f"torch=={torch.__version__.split('+')[0]}" in reqs and not any("+" in r for r in reqs)


def test_run_params_mask_the_store_password_but_keep_the_store(monkeypatch, tmp_path):
    from fbk_tasks.settings import load_settings
    from fbk_tasks.train.pipeline import settings_params

    monkeypatch.setenv("FBK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FBK_MLFLOW__TRACKING_URI", "postgresql://mlflow:s3cr%40t@db.internal:5432/mlflow")
    monkeypatch.setenv("FBK_MLFLOW__REGISTRY_URI", "https://ci:tok/en@mlflow.internal/")
    params = settings_params(load_settings(), "transformer")
    assert params["mlflow.tracking_uri"] == "postgresql://mlflow:***@db.internal:5432/mlflow"
    assert params["mlflow.registry_uri"] == "https://ci:***@mlflow.internal/"
    assert not any("s3cr" in str(v) or "tok/en" in str(v) for v in params.values())
    assert params["mlflow.registered_model_name"] == "review-sentiment" and params["candidate"] == "transformer"


def test_redact_uri_masks_only_a_password():
    from fbk_tasks.train.pipeline import redact_uri

    # a raw "@" in the password is masked too; URIs without a password are left alone
    assert redact_uri("mysql+pymysql://u:p@ss@h:3306/db?x=1") == "mysql+pymysql://u:***@h:3306/db?x=1"
    for uri in ("sqlite:////data/mlflow/mlflow.db", "http://mlflow:5000", "postgresql://u@h/db", "databricks"):
        assert redact_uri(uri) == uri


def test_the_reload_check_gets_the_store_uris_from_its_environment_not_argv(monkeypatch, tmp_path):
    """A store URI may carry a password; the command line of the fresh-process check is visible
    to every user of the machine (`ps`), its environment is not."""
    import subprocess

    from fbk_tasks.train import verify

    seen = {}

    def run(cmd, **kwargs):
        seen.update(cmd=cmd, env=kwargs["env"])
        return subprocess.CompletedProcess(cmd, 0, stdout='{"ok": true}\n', stderr="")

    monkeypatch.setattr(verify.subprocess, "run", run)
    uri = "postgresql://fbk:s3cret@db:5432/mlflow"
    assert verify.verify_in_fresh_process("models:/m/1", tmp_path / "g.parquet", tmp_path / "e.parquet", uri, uri, 60) == {"ok": True}
    assert not any("s3cret" in part for part in seen["cmd"])
    assert seen["env"]["MLFLOW_TRACKING_URI"] == seen["env"]["MLFLOW_REGISTRY_URI"] == uri

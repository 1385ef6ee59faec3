"""The MLflow pyfunc every registered sentiment model is logged as.

Contract relied on by scoring: ``mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"text": [...]}))``
returns a DataFrame, rows in input order, with ``label`` (str), ``confidence`` (float) and
``prob_<class>`` for every class of the model's label scheme.

Artifacts: ``label_map`` (JSON: kind, classes, max_length, batch_size) and either ``model_dir``
(Hugging Face model + tokenizer) or ``sklearn_model`` (a joblib pickle). A transformer logged
with ONNX export on also has ``onnx_dir``: ``model.onnx`` (fp32), optionally
``model.int8.onnx`` (dynamic int8) and ``onnx.json``, the golden-set check that says which
export may serve (see ``fbk_tasks.score.onnx.export_and_check``).

Backends: ``predict`` uses PyTorch unless :meth:`SentimentModel.use_backend` chose an ONNX
export (the nightly scorer does, with ``score.backend``); the promotion gate's reload check
therefore compares PyTorch with PyTorch. A model logged before ONNX export existed has no
``onnx_dir`` and always serves PyTorch. The PyTorch model is loaded on first use only, so a
scorer serving ONNX never loads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import mlflow.pyfunc


def output_frame(proba: np.ndarray, classes: list[str]) -> pd.DataFrame:
    idx = proba.argmax(axis=1)
    out = pd.DataFrame({"label": np.asarray(classes, dtype=object)[idx], "confidence": proba.max(axis=1).astype(float)})
    for i, c in enumerate(classes):
        out[f"prob_{c}"] = proba[:, i].astype(float)
    return out


def input_texts(model_input: Any) -> list[str]:
    if isinstance(model_input, pd.DataFrame):
        col = model_input["text"] if "text" in model_input.columns else model_input.iloc[:, 0]
        values = col.tolist()
    elif isinstance(model_input, (pd.Series, list, tuple, np.ndarray)):
        values = list(model_input)
    else:
        values = [model_input]
    return ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values]


class SentimentModel(mlflow.pyfunc.PythonModel):
    """Baseline (sklearn) or transformer sentiment classifier behind one predict()."""

    def load_context(self, context) -> None:
        meta = json.loads(open(context.artifacts["label_map"], encoding="utf-8").read())
        self.kind: str = meta["kind"]
        self.classes: list[str] = meta["classes"]
        self.max_length: int = int(meta.get("max_length", 128))
        self.batch_size: int = int(meta.get("batch_size", 64))
        self.backend: str = "torch" if self.kind == "transformer" else "sklearn"
        self.device_preference = "auto"  # PyTorch on CUDA when present; see use_cpu()
        self.onnx_meta: dict[str, Any] | None = None
        self._model: Any = None
        self._session: Any = None
        self._recheck_session: Any = None
        self.recheck_margin = 0.0
        if self.kind == "transformer":
            from transformers import AutoConfig, AutoTokenizer

            self.model_dir: str = context.artifacts["model_dir"]
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            config = AutoConfig.from_pretrained(self.model_dir)
            labels = [config.id2label[i] for i in range(config.num_labels)]
            if labels != self.classes:
                raise ValueError(f"model labels {labels} differ from the label map {self.classes}")
            onnx_dir = context.artifacts.get("onnx_dir")
            if onnx_dir and (Path(onnx_dir) / "onnx.json").exists():
                self.onnx_dir: str | None = onnx_dir
                self.onnx_meta = json.loads((Path(onnx_dir) / "onnx.json").read_text(encoding="utf-8"))
            else:
                self.onnx_dir = None
        else:
            import joblib

            self._model = joblib.load(context.artifacts["sklearn_model"])

    @property
    def model(self) -> Any:
        """The PyTorch (or sklearn) model, loaded on first use."""
        if self._model is None and self.kind == "transformer":
            import torch
            from transformers import AutoModelForSequenceClassification

            from fbk_tasks.train.transformer import select_device

            self.device = select_device(self.device_preference)
            # fp32 whatever the saved dtype (transformers 5 defaults to "auto"); CUDA's bf16 comes from autocast
            self._model = AutoModelForSequenceClassification.from_pretrained(self.model_dir, dtype=torch.float32)
            self._model.to(self.device).eval()
        return self._model

    def use_cpu(self) -> None:
        """Predict with PyTorch in fp32 on the CPU even where CUDA is present (CUDA runs under bf16
        autocast): how every candidate's golden predictions were made, so the gate compares a
        champion with a candidate on the same footing whichever worker runs it."""
        self.device_preference = "cpu"
        if self.kind == "transformer" and self._model is not None:
            from fbk_tasks.train.transformer import select_device

            self.device = select_device("cpu")
            self._model.to(self.device)

    def use_backend(self, requested: str = "auto", threads: int | None = None) -> str:
        """Serve with ``requested`` (``auto``: the export the golden check chose, or PyTorch when
        CUDA is available; ``torch``; or an export name, honoured only if it passed) and return
        the backend now in use. An ONNX session that cannot be opened falls back to PyTorch."""
        import logging

        from fbk_tasks.score.onnx import FILES, choose_backend, onnx_session

        if self.kind != "transformer":
            return self.backend
        backend = choose_backend(self.onnx_meta, requested)
        if requested == "auto" and backend in FILES:
            import torch

            if torch.cuda.is_available():  # a GPU worker: PyTorch on the GPU beats ONNX on the CPU
                backend = "torch"
        self._session = self._recheck_session = None
        self.recheck_margin = 0.0
        if backend in FILES:
            try:
                self._session = onnx_session(Path(self.onnx_dir) / FILES[backend], threads)
                margin = float((self.onnx_meta or {}).get("int8_recheck_margin") or 0.0)
                if backend == "onnx_int8" and margin > 0:  # served as it was checked: low-margin rows again in fp32
                    self._recheck_session = onnx_session(Path(self.onnx_dir) / FILES["onnx_fp32"], threads)
                    self.recheck_margin = margin
            except Exception as exc:  # e.g. onnxruntime missing on this worker
                logging.getLogger(__name__).warning("cannot open the %s export (%s); serving PyTorch", backend, exc)
                backend = "torch"
                self._session = self._recheck_session = None
                self.recheck_margin = 0.0
        if backend == "torch" and threads:
            import torch

            torch.set_num_threads(threads)
        self.backend = backend
        return backend

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.classes)))
        if self.kind == "transformer":
            if self._session is not None:
                from fbk_tasks.score.onnx import recheck_predict_proba

                # without a re-check session (fp32 served, or int8 checked without it): the export alone
                proba, _ = recheck_predict_proba(self._session, self._recheck_session, self.tokenizer, texts,
                                                 max_length=self.max_length, batch_size=self.batch_size,
                                                 margin=self.recheck_margin)
                return proba
            from fbk_tasks.train.transformer import predict_proba

            model = self.model
            return predict_proba(model, self.tokenizer, texts, self.batch_size, self.max_length, self.device)
        from fbk_tasks.train.baseline import predict_proba

        return predict_proba(self.model, texts, self.classes)

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return output_frame(self.predict_proba(input_texts(model_input)), self.classes)

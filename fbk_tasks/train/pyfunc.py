"""The MLflow pyfunc every registered sentiment model is logged as.

Contract relied on by scoring: ``mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"text": [...]}))``
returns a DataFrame, rows in input order, with ``label`` (str), ``confidence`` (float) and
``prob_<class>`` for every class of the model's label scheme.

Artifacts: ``label_map`` (JSON: kind, classes, max_length, batch_size) and either ``model_dir``
(Hugging Face model + tokenizer) or ``sklearn_model`` (a joblib pickle).
"""

from __future__ import annotations

import json
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
        if self.kind == "transformer":
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            from fbk_tasks.train.transformer import select_device

            self.device = select_device("auto")
            self.tokenizer = AutoTokenizer.from_pretrained(context.artifacts["model_dir"])
            self.model = AutoModelForSequenceClassification.from_pretrained(context.artifacts["model_dir"])
            self.model.to(self.device).eval()
            labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
            if labels != self.classes:
                raise ValueError(f"model labels {labels} differ from the label map {self.classes}")
        else:
            import joblib

            self.model = joblib.load(context.artifacts["sklearn_model"])

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.classes)))
        if self.kind == "transformer":
            from fbk_tasks.train.transformer import predict_proba

            return predict_proba(self.model, self.tokenizer, texts, self.batch_size, self.max_length, self.device)
        from fbk_tasks.train.baseline import predict_proba

        return predict_proba(self.model, texts, self.classes)

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return output_frame(self.predict_proba(input_texts(model_input)), self.classes)

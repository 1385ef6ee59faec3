"""Evaluation: macro-F1, accuracy, per-class scores, calibration (ECE), per-slice F1, confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score, precision_recall_fscore_support

if TYPE_CHECKING:
    from fbk_tasks.settings import TrainSettings

SLICE_COLUMNS = ("product_category", "language")


@dataclass
class Evaluation:
    macro_f1: float
    accuracy: float
    ece: float
    per_class: dict[str, dict[str, float]]  # class -> precision/recall/f1/support
    slices: dict[str, float]  # "language=en" -> macro-F1
    confusion: list[list[int]]
    classes: list[str]
    report: str
    extra: dict[str, float] = field(default_factory=dict)

    def metrics(self, prefix: str) -> dict[str, float]:
        """Flat MLflow metric names (``golden_macro_f1``, ``golden_f1_negative``, ``golden_slice_f1.language.en``)."""
        out = {f"{prefix}_macro_f1": self.macro_f1, f"{prefix}_accuracy": self.accuracy, f"{prefix}_ece": self.ece}
        for cls, d in self.per_class.items():
            for k in ("precision", "recall", "f1"):
                out[f"{prefix}_{k}_{cls}"] = d[k]
        for name, v in self.slices.items():
            col, val = name.split("=", 1)
            out[f"{prefix}_slice_f1.{col}.{_metric_safe(val)}"] = v
        return out


def _metric_safe(value: str, max_len: int = 60) -> str:
    """A slice value as part of an MLflow metric name: alphanumerics, ``_ - .`` and spaces kept,
    anything else (``/`` included: MLflow refuses names that look like file paths, ``a//b``,
    ``x/./y``) replaced; shortened to ``max_len``. A changed value gets a short hash of the raw
    one, so that two values never share a name (``Home/Garden`` and ``Home Garden``)."""
    import hashlib

    safe = "".join(ch if ch.isalnum() or ch in "_-. " else "_" for ch in value)[:max_len].strip(". ")
    if safe != value:
        safe = f"{safe}_{hashlib.sha1(value.encode('utf-8')).hexdigest()[:8]}"
    return safe


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Equal-width-bin ECE of the top-class confidence."""
    if len(confidence) == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - confidence[m].mean())
    return float(ece)


def slice_f1(frame: pd.DataFrame, y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], min_rows: int,
             min_class_rows: int = 10) -> dict[str, float]:
    """Macro-F1 per slice with at least ``min_rows`` rows, averaged over the classes that have at
    least ``min_class_rows`` true rows in the slice (a slice none of whose classes has that many
    gets no score). A binary source's slice has no neutral, and counting its F1 as 0 would
    understate the slice by a third; a class with one or two rows in a slice would swing the
    slice's score by a third with a single prediction, so a gate on slice losses would refuse a
    better model for it. The rare class still counts in the overall macro-F1."""
    out: dict[str, float] = {}
    for col in SLICE_COLUMNS:
        if col not in frame.columns:
            continue
        values = frame[col].fillna("<none>").astype(str).to_numpy()
        for val in sorted(set(values)):
            m = values == val
            if m.sum() < min_rows:
                continue
            counts = pd.Series(y_true[m]).value_counts()
            labels = [c for c in _present(classes, y_true[m]) if counts.get(c, 0) >= min_class_rows]
            if labels:
                out[f"{col}={val}"] = float(f1_score(y_true[m], y_pred[m], labels=labels, average="macro", zero_division=0))
    return out


def _reported(classes: list[str], y_true: np.ndarray) -> list[str]:
    """The model's classes, then true labels it cannot predict (a golden class it lacks)."""
    return list(classes) + sorted(set(y_true) - set(classes))


def _present(classes: list[str], y_true: np.ndarray) -> list[str]:
    """The labels a macro average runs over: those of :func:`_reported` found in the true labels.
    A true class the model cannot predict counts, with F1 0; a wrong prediction of a class the rows
    do not hold counts through the recall of the true class, not as a class of its own with F1 0
    (one stray neutral in a binary slice would otherwise cost a third of its score). Every model
    scored on the same rows is averaged over the same classes."""
    seen = set(y_true)
    return [c for c in _reported(classes, y_true) if c in seen]


def evaluate(
    frame: pd.DataFrame, proba: np.ndarray, classes: list[str], min_slice_rows: int = 50, ece_bins: int = 10,
    min_slice_class_rows: int = 10,
) -> Evaluation:
    """Score ``proba`` (rows x classes, in ``classes`` order) against ``frame['label']``."""
    y_true = frame["label"].astype(str).to_numpy()
    pred_idx = proba.argmax(axis=1)
    y_pred = np.asarray(classes, dtype=object)[pred_idx]
    conf = proba.max(axis=1)
    labels = _reported(classes, y_true)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = {
        c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, c in enumerate(labels)
    }
    return Evaluation(
        macro_f1=float(f1_score(y_true, y_pred, labels=_present(classes, y_true), average="macro", zero_division=0)),
        accuracy=float(accuracy_score(y_true, y_pred)),
        ece=expected_calibration_error(conf, y_true == y_pred, ece_bins),
        per_class=per_class,
        slices=slice_f1(frame, y_true, y_pred, classes, min_slice_rows, min_slice_class_rows),
        confusion=confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        classes=list(labels),
        report=classification_report(y_true, y_pred, labels=labels, digits=4, zero_division=0),
    )


def evaluate_as_configured(train: TrainSettings, frame: pd.DataFrame, proba: np.ndarray, classes: list[str]) -> Evaluation:
    """:func:`evaluate` with the ``train.*`` settings that shape it (slice sizes, ECE bins)."""
    return evaluate(frame, proba, classes, train.min_slice_rows, train.ece_bins, train.min_slice_class_rows)


def predictions_to_proba(pred: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """The pyfunc output (``prob_<class>`` columns) as a matrix in ``classes`` order."""
    return pred[[f"prob_{c}" for c in classes]].to_numpy(dtype=float)


def plot_confusion(ev: Evaluation, path: Path, title: str = "confusion matrix") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(ev.confusion)
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(ev.classes), 1.2 + 1.2 * len(ev.classes)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(ev.classes)), ev.classes, rotation=30)
    ax.set_yticks(range(len(ev.classes)), ev.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

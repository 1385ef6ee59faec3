"""Test and demo helpers: a small real pyfunc model in a real registry, and lake files.

Used by tests/score and tests/warehouse; nothing in the pipeline imports this module.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

from fbk_tasks.settings import Settings

try:  # a real mlflow PythonModel when mlflow is installed (always, in this project)
    from mlflow.pyfunc import PythonModel as _PythonModel
except Exception:  # pragma: no cover
    _PythonModel = object  # type: ignore[misc,assignment]

POSITIVE = ("good", "great", "love", "excellent", "perfect", "好", "喜欢")
NEGATIVE = ("bad", "terrible", "awful", "broken", "hate", "差", "坏")


class KeywordModel(_PythonModel):  # type: ignore[misc]
    """Counts sentiment words. Honours the model contract: DataFrame with ``text`` in,
    ``label``, ``confidence``, ``prob_<class>`` out, in input order. A text containing
    ``RAISE_ERROR`` makes predict raise (to exercise per-row rejection). ``bias`` shifts
    every text towards one class (so two registered versions give different answers)."""

    def __init__(self, bias: str | None = None):
        self.bias = bias

    def predict(self, context, model_input, params=None):  # noqa: D401 - mlflow signature
        """Vectorised (pandas string methods), so benchmarks can push a million rows through."""
        import re

        import numpy as np
        import pandas as pd

        text = model_input["text"].astype(str)
        if text.str.contains("RAISE_ERROR", regex=False).any():
            raise ValueError("keyword model refuses RAISE_ERROR")
        t = text.str.lower()
        pos = t.str.count("|".join(map(re.escape, POSITIVE))).to_numpy(dtype=float)
        neg = t.str.count("|".join(map(re.escape, NEGATIVE))).to_numpy(dtype=float)
        classes = ["negative", "neutral", "positive"]  # alphabetical: ties go to the later name
        scores = np.column_stack([1.0 + 2 * neg, np.full(len(t), 1.5), 1.0 + 2 * pos])
        if self.bias:
            scores[:, classes.index(self.bias)] += 10.0
        probs = scores / scores.sum(axis=1, keepdims=True)
        idx = len(classes) - 1 - probs[:, ::-1].argmax(axis=1)
        out = pd.DataFrame({"label": np.asarray(classes, dtype=object)[idx], "confidence": probs[np.arange(len(t)), idx]})
        for i, c in enumerate(classes):
            out[f"prob_{c}"] = probs[:, i]
        return out


def register_keyword_model(settings: Settings, *, bias: str | None = None, alias: str | None = "champion") -> int:
    """Log a :class:`KeywordModel` to the settings' MLflow store, register it, set ``alias``; return the version."""
    import mlflow

    from fbk_tasks.score.registry import configure_mlflow

    client = configure_mlflow(settings)
    exp_name = f"{settings.mlflow.experiment_prefix}-score-tests"
    exp = mlflow.get_experiment_by_name(exp_name)
    exp_id = exp.experiment_id if exp else mlflow.create_experiment(exp_name, artifact_location=settings.mlflow_artifact_location)
    name = settings.mlflow.registered_model_name
    with mlflow.start_run(experiment_id=exp_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=KeywordModel(bias=bias),
            registered_model_name=name,
            pip_requirements=["mlflow", "pandas"],
        )
    version = int(info.registered_model_version)
    if alias:
        client.set_registered_model_alias(name, alias, str(version))
    return version


def review_id_for(source: str, source_file: str, row_number: int) -> str:
    return hashlib.sha256(f"{source}|{source_file}|{row_number}".encode()).hexdigest()[:24]


def write_curated(settings: Settings, ds: str, texts: Sequence[str], *, source: str = "test", products: Sequence[str] = ("p1", "p2"), start_row: int = 0, ratings: Sequence[int] | None = None) -> Path:
    """Write one curated part file for ``ds`` (CURATED_SCHEMA) and return it."""
    import pyarrow as pa

    from fbk_tasks.schema import CURATED_SCHEMA, rating_to_label
    from fbk_tasks.io.atomic import write_parquet

    source_file = f"{source}-{ds}-{start_row}.csv"
    created = _dt.datetime.fromisoformat(ds).replace(tzinfo=_dt.timezone.utc)
    rows = []
    for i, text in enumerate(texts):
        rn = start_row + i
        rating = ratings[i] if ratings is not None else (rn % 5) + 1
        prod = products[rn % len(products)]
        rows.append(
            {
                "review_id": review_id_for(source, source_file, rn),
                "product_id": prod,
                "product_name": f"Product {prod}",
                "product_category": "phones" if prod.endswith(("1", "3")) else "laptops",
                "rating": rating,
                "title": None,
                "text": text,
                "language": "en",
                "created_at": created,
                "source": source,
                "source_file": source_file,
                "ingested_at": created + _dt.timedelta(hours=1),
                "label": rating_to_label(rating),
                "row_number": rn,
                "ds": ds,
            }
        )
    table = pa.Table.from_pylist(rows, schema=CURATED_SCHEMA)
    h = hashlib.sha256(json.dumps([r["review_id"] for r in rows]).encode()).hexdigest()[:16]
    return write_parquet(table, settings.curated_dir / f"ds={ds}" / f"part-{h}.parquet")


def write_quarantine(settings: Settings, ds: str, reasons: Sequence[str]) -> Path:
    import pyarrow as pa

    from fbk_tasks.io.atomic import write_parquet
    from fbk_tasks.warehouse.sources import QUARANTINE_SCHEMA

    rows = []
    for i, reason in enumerate(reasons):
        row: dict[str, Any] = {f.name: None for f in QUARANTINE_SCHEMA}
        row.update(review_id=f"q{i}", text="x", source="test", rating="9", reason=reason,
                   raw_record=json.dumps({"rating": "9"}), source_file=f"test-{ds}.csv", row_number=i, ds=ds)
        rows.append(row)
    return write_parquet(pa.Table.from_pylist(rows, schema=QUARANTINE_SCHEMA), settings.quarantine_dir / f"ds={ds}" / "part-0000000000000000.parquet")


def write_ledger(settings: Settings, ds: str, run_id: str = "ingest-1") -> Path:
    import pyarrow as pa

    from fbk_tasks.io.atomic import write_parquet
    from fbk_tasks.warehouse.sources import LEDGER_SCHEMA

    t0 = _dt.datetime.fromisoformat(ds).replace(tzinfo=_dt.timezone.utc)
    row = {f.name: 0 for f in LEDGER_SCHEMA if pa.types.is_integer(f.type)}
    row.update(run_id=run_id, ds=ds, source="test", source_file=f"test-{ds}.csv", file_sha256="0" * 64, status="ingested",
               rows_read=10, rows_curated=8, rows_quarantined=2, pii_email=1, error=None, started_at=t0, finished_at=t0 + _dt.timedelta(seconds=3))
    return write_parquet(pa.Table.from_pylist([row], schema=LEDGER_SCHEMA), settings.ledger_dir / f"ds={ds}" / f"{run_id}-0000000000000000.parquet")

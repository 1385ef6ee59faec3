"""Test and demo helpers: generated nights as drift frames, a tiny sentiment model, curated files.

Nothing in the pipeline imports this module.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import pandas as pd

from fbk_tasks.schema import rating_to_label


def generated_frame(n: int, seed: int, ds: str = "2026-03-01", drift=None) -> pd.DataFrame:
    """Clean generated reviews with ``label`` from the rating and ``language`` detected."""
    from fbk_tasks.demo.generator import generate_reviews
    from fbk_tasks.drift.compute import ensure_language

    df = generate_reviews(n, seed=seed, ds=ds, bad_share=0, pii_share=0, duplicate_share=0, drift=drift,
                          id_prefix=f"g{seed}")
    ratings = [None if pd.isna(r) else int(r) for r in df["rating"]]
    out = pd.DataFrame({
        "review_id": df["review_id"].astype(object), "text": df["text"].astype(object),
        "product_category": df["product_category"].astype(object),
        "rating": pd.Series(ratings, dtype=object),
        "label": pd.Series([rating_to_label(r) for r in ratings], dtype=object),
    })
    return ensure_language(out)


def fit_tiny_model(frame: pd.DataFrame, seed: int = 0):
    """TF-IDF (word + char) logistic regression on the frame's rating labels; ``predict(texts)``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    rows = frame[frame["label"].notna()]
    pipe = make_pipeline(
        make_union(TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), min_df=2, sublinear_tf=True),
                   TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)),
        LogisticRegression(max_iter=1000, C=3.0, random_state=seed),
    )
    pipe.fit([str(t) for t in rows["text"]], rows["label"].tolist())
    return pipe


def with_predictions(frame: pd.DataFrame, model) -> pd.DataFrame:
    out = frame.copy()
    out["predicted"] = model.predict([str(t) for t in frame["text"]]) if len(frame) else []
    return out


def write_curated_frame(settings, frame: pd.DataFrame, ds: str) -> Path:
    """Write a :func:`generated_frame` as one curated partition (CURATED_SCHEMA)."""
    import pyarrow as pa

    from fbk_tasks.io.atomic import write_parquet
    from fbk_tasks.schema import CURATED_SCHEMA

    t0 = _dt.datetime.fromisoformat(ds).replace(tzinfo=_dt.timezone.utc)
    rows = []
    for i, r in enumerate(frame.itertuples(index=False)):
        rows.append({
            "review_id": f"{r.review_id}", "product_id": "P1", "product_name": "p", "product_category": r.product_category,
            "rating": None if r.rating is None or pd.isna(r.rating) else int(r.rating), "title": None, "text": r.text, "language": r.language, "created_at": t0,
            "source": "generated", "source_file": f"gen-{ds}.csv", "ingested_at": t0 + _dt.timedelta(hours=1),
            "label": r.label, "row_number": i, "ds": ds,
        })
    return write_parquet(pa.Table.from_pylist(rows, schema=CURATED_SCHEMA), settings.curated_dir / f"ds={ds}" / "part-0.parquet")


__all__ = ["fit_tiny_model", "generated_frame", "with_predictions", "write_curated_frame"]

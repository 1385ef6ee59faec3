"""The canonical review schema shared by every stage (curated Parquet and beyond)."""

from __future__ import annotations

import pyarrow as pa

SENTIMENT_CLASSES: tuple[str, ...] = ("negative", "neutral", "positive")

# Columns of curated reviews, in order. `label` is the sentiment label a source carries
# (explicit column or derived from the star rating); null when the source has none.
# `label_confidence` is the source's confidence in that label in [0, 1] (annotator agreement),
# null when the source gives none (partitions written before it existed lack the column).
CURATED_SCHEMA = pa.schema(
    [
        pa.field("review_id", pa.string(), nullable=False),
        pa.field("product_id", pa.string()),
        pa.field("product_name", pa.string()),
        pa.field("product_category", pa.string()),
        pa.field("rating", pa.int8()),
        pa.field("title", pa.string()),
        pa.field("text", pa.string(), nullable=False),
        pa.field("language", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("label", pa.string()),
        pa.field("label_confidence", pa.float64()),
        pa.field("row_number", pa.int64(), nullable=False),
        pa.field("ds", pa.string(), nullable=False),
    ]
)
CURATED_COLUMNS: list[str] = CURATED_SCHEMA.names


def rating_to_label(rating: int | None) -> str | None:
    """Stars to sentiment, as the whole project maps them: 1-2 negative, 3 neutral, 4-5 positive."""
    if rating is None:
        return None
    if rating <= 2:
        return "negative"
    if rating == 3:
        return "neutral"
    return "positive"

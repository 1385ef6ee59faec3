"""Arrow schemas of what scoring writes (scores, rejections, the registry snapshot).

Kept free of heavy imports: the warehouse and the DAG module read these too.
"""

from __future__ import annotations

import pyarrow as pa

from fbk_tasks.schema import SENTIMENT_CLASSES

PROB_COLUMNS: tuple[str, ...] = tuple(f"prob_{c}" for c in SENTIMENT_CLASSES)

# <scores_dir>/ds=YYYY-MM-DD/part-<model_version>-<shard>-<plan tag>.parquet
SCORES_SCHEMA = pa.schema(
    [
        pa.field("review_id", pa.string(), nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.int64(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("confidence", pa.float64(), nullable=False),
        *[pa.field(col, pa.float64()) for col in PROB_COLUMNS],
        pa.field("scored_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("ds", pa.string(), nullable=False),
    ]
)

# <scores_dir>/_rejected/ds=YYYY-MM-DD/part-<model_version>-<shard>.parquet
REJECTED_SCHEMA = pa.schema(
    [
        pa.field("review_id", pa.string(), nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.int64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("scored_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("ds", pa.string(), nullable=False),
    ]
)

# <state_dir>/registry/model_versions.parquet (one row per registered version)
MODEL_VERSIONS_SCHEMA = pa.schema(
    [
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),
        pa.field("run_id", pa.string()),
        pa.field("aliases", pa.list_(pa.string())),
        pa.field("tags", pa.string()),  # JSON object
        pa.field("status", pa.string()),
        pa.field("source", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("served_version", pa.int64()),  # whose scores review_scores shows (the last scoring run's)
        pa.field("snapshot_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

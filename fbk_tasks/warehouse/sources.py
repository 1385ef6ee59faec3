"""The Parquet sources the warehouse views read, each with the typed schema used when empty.

Every staging SQL file names its source as ``{{ name }}``; :func:`source_sql` turns that into
``read_parquet('<absolute glob>', hive_partitioning=true, union_by_name=true)`` when the glob
matches at least one file, or into a zero-row relation with the right column types otherwise,
so a fresh data root still builds a complete, queryable warehouse.
"""

from __future__ import annotations

import glob as _glob
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from fbk_tasks.schema import CURATED_SCHEMA
from fbk_tasks.score.schema import MODEL_VERSIONS_SCHEMA, REJECTED_SCHEMA, SCORES_SCHEMA
from fbk_tasks.settings import Settings

_CANONICAL_AS_STRINGS = [n for n in CURATED_SCHEMA.names if n not in ("source_file", "row_number", "ds")]

QUARANTINE_SCHEMA = pa.schema(
    [pa.field(n, pa.string()) for n in _CANONICAL_AS_STRINGS]
    + [
        pa.field("reason", pa.string()),
        pa.field("raw_record", pa.string()),
        pa.field("source_file", pa.string()),
        pa.field("row_number", pa.int64()),
        pa.field("ds", pa.string()),
    ]
)

LEDGER_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("ds", pa.string()),
        pa.field("source", pa.string()),
        pa.field("source_file", pa.string()),
        pa.field("file_sha256", pa.string()),
        pa.field("status", pa.string()),
        pa.field("rows_read", pa.int64()),
        pa.field("rows_curated", pa.int64()),
        pa.field("rows_quarantined", pa.int64()),
        pa.field("rows_duplicate", pa.int64()),
        *[pa.field(f"pii_{k}", pa.int64()) for k in ("email", "phone", "cn_id", "card", "ip", "url", "qq", "booking")],
        pa.field("error", pa.string()),
        pa.field("started_at", pa.timestamp("us", tz="UTC")),
        pa.field("finished_at", pa.timestamp("us", tz="UTC")),
    ]
)

# Written by the drift stage (fbk_tasks.drift.monitor.write_metrics, to
# <data>/drift/ds=D/part-0.parquet); the warehouse only exposes it. This typed empty form,
# with the same columns, is what analysts see before the first drift measurement exists.
DRIFT_SCHEMA = pa.schema(
    [
        pa.field("ds", pa.string()),
        pa.field("model_version", pa.int64()),
        pa.field("signal", pa.string()),
        pa.field("scope", pa.string()),
        pa.field("value", pa.float64()),
        pa.field("threshold", pa.float64()),
        pa.field("fired", pa.bool_()),
        pa.field("detail", pa.string()),
        pa.field("metric", pa.string()),
        pa.field("drifted", pa.bool_()),
        pa.field("computed_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class Source:
    name: str
    glob: str  # absolute
    schema: pa.Schema
    hive: bool = True
    # files written before a column was added lack it: the typed empty relation is unioned in by
    # name, so such a column reads NULL from them instead of not existing at all
    evolving: bool = False


# ``[!.]*``: never a hidden file. The project's atomic writers put in-progress data in hidden
# temporary files in the destination folder (``fbk_tasks.io.atomic``: ``.tmp-<uuid>-<name>``),
# and DuckDB's ``*`` matches hidden files: a plain ``*.parquet`` glob makes every query fail
# ("too small to be a Parquet file") while a write is in progress.
PARQUET = "[!.]*.parquet"


def sources(settings: Settings) -> dict[str, Source]:
    """Every source by placeholder name; globs are absolute."""
    d = settings
    items = [
        Source("curated", str(d.curated_dir / "ds=*" / PARQUET), CURATED_SCHEMA),
        Source("quarantine", str(d.quarantine_dir / "ds=*" / PARQUET), QUARANTINE_SCHEMA),
        Source("ledger", str(d.ledger_dir / "ds=*" / PARQUET), LEDGER_SCHEMA, evolving=True),
        Source("scores", str(d.scores_dir / "ds=*" / PARQUET), SCORES_SCHEMA),
        Source("score_rejections", str(d.scores_dir / "_rejected" / "ds=*" / PARQUET), REJECTED_SCHEMA),
        Source("model_versions", str(registry_snapshot_dir(d) / "model_versions-*.parquet"), MODEL_VERSIONS_SCHEMA, hive=False),
        Source("drift", str(d.data_dir / "drift" / "ds=*" / PARQUET), DRIFT_SCHEMA),
    ]
    return {s.name: s for s in items}


def registry_snapshot_dir(settings: Settings) -> Path:
    """Folder of write-once registry snapshots (``model_versions-<content hash>.parquet``)."""
    return settings.state_dir / "registry"


def duckdb_type(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "VARCHAR"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_int8(t):
        return "TINYINT"
    if pa.types.is_int16(t):
        return "SMALLINT"
    if pa.types.is_int32(t):
        return "INTEGER"
    if pa.types.is_int64(t):
        return "BIGINT"
    if pa.types.is_floating(t):
        return "DOUBLE"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_list(t):
        return duckdb_type(t.value_type) + "[]"
    raise TypeError(f"no DuckDB type for {t}")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def has_files(source: Source) -> bool:
    return any(True for _ in _glob.iglob(source.glob, recursive=True))


def source_sql(source: Source) -> str:
    """The FROM-clause relation for a source: its Parquet glob, or a typed empty relation."""
    cols = ", ".join(f"CAST(NULL AS {duckdb_type(f.type)}) AS {f.name}" for f in source.schema)
    empty = f"(SELECT {cols} LIMIT 0)"
    if has_files(source):
        hive = "true" if source.hive else "false"
        files = f"read_parquet({_quote(source.glob)}, hive_partitioning={hive}, union_by_name=true)"
        return f"(SELECT * FROM {files} UNION ALL BY NAME SELECT * FROM {empty})" if source.evolving else files
    return empty

"""Build the analysts' DuckDB warehouse: staging views and marts over the Parquet lake.

The file is rebuilt into a temporary DuckDB file next to ``warehouse.duckdb`` and moved over
it with :func:`os.replace`, so a reader either sees the old complete file or the new one,
never a half-built one, and the pipeline never holds the analysts' file open (readers open it
read-only; DuckDB allows any number of read-only processes on one file).

Views read Parquet at query time through absolute globs, so new partitions appear without a
rebuild; a rebuild is needed only when a source goes from empty to non-empty (an empty source
is a typed zero-row view) or when the SQL changes.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from fbk_tasks.settings import INCLUDE_DIR, Settings
from fbk_tasks.warehouse.sources import source_sql, sources

SQL_DIR = INCLUDE_DIR / "sql"

# Marts that other marts read come first; any further mart files follow alphabetically.
MART_ORDER = (
    "reviews",
    "products",
    "model_versions",
    "review_scores",
    "daily_product_sentiment",
    "category_sentiment",
    "quarantine_summary",
    "ingest_ledger",
    "score_rejections",
    "score_coverage",
    "drift_metrics",
)

_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def render_sql(text: str, settings: Settings) -> str:
    """Replace ``{{ source }}`` placeholders with relations and ``{{ param }}`` with SQL literals."""
    known = sources(settings)
    params = {"champion_alias": _literal(settings.score.model_alias)}

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in params:
            return params[name]
        if name not in known:
            raise KeyError(f"unknown source {{{{ {name} }}}}; known: {', '.join(sorted(known))}")
        return source_sql(known[name])

    return _PLACEHOLDER.sub(sub, text)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def sql_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    """Staging files (alphabetical), then marts in dependency order."""
    staging = sorted((sql_dir / "staging").glob("*.sql"))
    marts = {p.stem: p for p in (sql_dir / "marts").glob("*.sql")}
    ordered = [marts.pop(name) for name in MART_ORDER if name in marts]
    ordered += [marts[name] for name in sorted(marts)]
    return staging + ordered


def build_warehouse(settings: Settings, sql_dir: Path = SQL_DIR) -> Path:
    """Build every view into a fresh DuckDB file and atomically replace ``warehouse.duckdb``."""
    import duckdb

    target = settings.warehouse_path
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".warehouse-", suffix=".duckdb.tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # DuckDB must create the file itself
    try:
        con = duckdb.connect(str(tmp))
        try:
            con.execute("SET TimeZone = 'UTC'")
            for path in sql_files(sql_dir):
                try:
                    con.execute(render_sql(path.read_text(encoding="utf-8"), settings))
                except Exception as exc:
                    raise RuntimeError(f"warehouse build failed in {path.relative_to(sql_dir)}: {exc}") from exc
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, target)
    finally:
        for leftover in (tmp, Path(str(tmp) + ".wal")):
            leftover.unlink(missing_ok=True)
    return target


def list_views(settings: Settings) -> list[str]:
    """Names of the views in the built warehouse."""
    import duckdb

    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        return [r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall()]
    finally:
        con.close()

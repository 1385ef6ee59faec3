"""Read-only queries against the built warehouse (what `fbk sql` runs)."""

from __future__ import annotations

import csv
import datetime as _dt
import decimal
import io
import json
from pathlib import Path
from typing import Any

from fbk_tasks.settings import Settings


class WarehouseMissing(FileNotFoundError):
    pass


class NotAQuery(ValueError):
    """A statement that is not one read-only query (SELECT, EXPLAIN)."""


def query(settings: Settings, sql: str, params: list[Any] | None = None) -> tuple[list[str], list[tuple]]:
    """Run one query (SELECT, or EXPLAIN of one) on a read-only connection; return (column names,
    rows). Anything else is refused before it runs: the read-only connection stops writes to
    the warehouse file, not `COPY ... TO` a file (into the lake, say) or `ATTACH`/`SET`."""
    import duckdb

    path: Path = settings.warehouse_path
    if not path.exists():
        raise WarehouseMissing(f"{path} does not exist; run `fbk warehouse build` first")
    con = duckdb.connect(str(path), read_only=True)
    try:
        statements = con.extract_statements(sql)
        kinds = [s.type for s in statements]
        if len(statements) != 1 or kinds[0] not in (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN):
            shown = ", ".join(k.name for k in kinds) or "nothing"
            raise NotAQuery(f"only one read-only query (SELECT, EXPLAIN) is run here; got {shown}")
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET lock_configuration = true")
        cur = con.execute(sql, params or [])
        if cur.description is None:
            return [], []
        columns = [d[0] for d in cur.description]
        return columns, cur.fetchall()
    finally:
        con.close()


def _plain(value: Any) -> Any:
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    value = _plain(value)
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else str(value)


def format_table(columns: list[str], rows: list[tuple], max_width: int = 60) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    cells = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in row] for row in cells]
    widths = [max([len(col)] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [" | ".join(col.ljust(w) for col, w in zip(columns, widths)), line]
    out += [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def format_csv(columns: list[str], rows: list[tuple]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if v is None else _cell(v) for v in row])
    return buf.getvalue()


def format_json(columns: list[str], rows: list[tuple]) -> str:
    return json.dumps([{c: _plain(v) for c, v in zip(columns, row)} for row in rows], ensure_ascii=False, indent=1)

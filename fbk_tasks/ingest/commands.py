"""`fbk ingest` and `fbk ledger`."""

from __future__ import annotations

import argparse
import json
import logging
from datetime import datetime, timezone
from pathlib import Path


def _ingest(args: argparse.Namespace) -> int:
    from fbk_tasks.cli import UserError
    from fbk_tasks.ingest.mapping import MappingError
    from fbk_tasks.ingest.pipeline import IngestError, ingest_partition, land_files
    from fbk_tasks.ingest.readers import FileRejected
    from fbk_tasks.settings import load_settings

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    settings = load_settings()
    try:
        if args.files:
            land_files(settings, [Path(f) for f in args.files], args.ds, args.source)
        # explicit files: those (and what ds already claimed); none: also claim what waits in landing/
        report = ingest_partition(settings, args.ds, claim=not args.files)
    except (MappingError, FileRejected, ValueError) as exc:
        raise UserError(str(exc)) from None
    except IngestError as exc:
        if exc.report is not None:
            _print(exc.report, args.json)
        raise UserError(str(exc)) from None
    _print(report, args.json)
    return 0


def _print(report, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
        return
    print(f"ds={report.ds} run={report.run_id}")
    print(f"{'file':50} {'status':9} {'read':>8} {'curated':>8} {'quarant.':>8} {'dupes':>7}  pii")
    for f in report.files:
        pii = ",".join(f"{k}={v}" for k, v in f.pii.items() if v)
        print(f"{f.source_file[-50:]:50} {f.status:9} {f.rows_read:8d} {f.rows_curated:8d} {f.rows_quarantined:8d} {f.rows_duplicate:7d}  {pii}")
        if f.reasons:
            print(f"{'':50} reasons: {f.reasons}")
        if f.error:
            print(f"{'':50} {f.error}")
    if report.docs_index:
        print(f"Data Docs: {report.docs_index}")


def _ledger(args: argparse.Namespace) -> int:
    from fbk_tasks.ingest.pipeline import read_ledger
    from fbk_tasks.settings import load_settings

    ledger = read_ledger(load_settings())
    if args.ds:
        ledger = ledger[ledger["ds"].astype(str) == args.ds]
    cols = ["ds", "run_id", "source_file", "status", "rows_read", "rows_curated", "rows_quarantined", "rows_duplicate", "error"]
    ledger = ledger.sort_values(["ds", "started_at"])[cols].tail(args.limit)
    if args.json:
        print(ledger.to_json(orient="records", indent=2, date_format="iso"))
    else:
        print(ledger.to_string(index=False, max_colwidth=60) if len(ledger) else "(the ledger is empty)")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="Land files and ingest them for a logical date (same code path as the DAG).")
    p.add_argument("files", nargs="*", help="CSV/TSV/JSONL/Parquet files (only these, and files already claimed for --ds); none: claim and ingest what waits in landing/ (unless a later date has claimed files)")
    p.add_argument("--source", help="source mapping name (include/sources/<name>.yaml); default: matched by file name, else generic")
    # UTC, like every date in the product (the DAG's logical dates, may_claim's "today")
    p.add_argument("--ds", default=datetime.now(timezone.utc).date().isoformat(), help="logical date YYYY-MM-DD (default: today in UTC)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_ingest)

    p = sub.add_parser("ledger", help="Show the ingestion ledger (one row per file and run).")
    p.add_argument("--ds", help="only this logical date")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_ledger)

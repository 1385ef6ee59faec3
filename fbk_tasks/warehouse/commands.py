"""`fbk warehouse build` and `fbk sql "SELECT ..." [--csv|--json]`."""

from __future__ import annotations

import argparse


def _build(args: argparse.Namespace) -> int:
    from fbk_tasks.settings import load_settings
    from fbk_tasks.warehouse.build import build_warehouse, list_views

    settings = load_settings()
    path = build_warehouse(settings)
    print(f"built {path} ({len(list_views(settings))} views)")
    return 0


def _sql(args: argparse.Namespace) -> int:
    from fbk_tasks.cli import UserError
    from fbk_tasks.settings import load_settings
    from fbk_tasks.warehouse.query import NotAQuery, WarehouseMissing, format_csv, format_json, format_table, query

    import duckdb

    settings = load_settings()
    try:
        columns, rows = query(settings, args.statement)
    except (WarehouseMissing, NotAQuery) as exc:
        raise UserError(str(exc)) from None
    except duckdb.Error as exc:
        raise UserError(str(exc).strip()) from None
    if args.format == "csv":
        print(format_csv(columns, rows), end="")
    elif args.format == "json":
        print(format_json(columns, rows))
    else:
        print(format_table(columns, rows))
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    wh = subparsers.add_parser("warehouse", help="The analysts' DuckDB warehouse.")
    wh_sub = wh.add_subparsers(dest="warehouse_command", required=True)
    build = wh_sub.add_parser("build", help="Rebuild warehouse.duckdb (atomic replace).")
    build.set_defaults(func=_build)

    sql = subparsers.add_parser("sql", help="Run a read-only SQL statement on the warehouse.")
    sql.add_argument("statement", help='e.g. "SELECT * FROM category_sentiment"')
    fmt = sql.add_mutually_exclusive_group()
    fmt.add_argument("--csv", dest="format", action="store_const", const="csv", help="CSV output")
    fmt.add_argument("--json", dest="format", action="store_const", const="json", help="JSON output (list of objects)")
    sql.set_defaults(func=_sql, format="table")

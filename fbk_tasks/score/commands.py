"""`fbk score [--ds D] [--rescore]`."""

from __future__ import annotations

import argparse
import json


def _score(args: argparse.Namespace) -> int:
    from fbk_tasks.cli import UserError
    from fbk_tasks.score.plan import validate_ds
    from fbk_tasks.score.registry import NoChampionError
    from fbk_tasks.score.run import run_scoring
    from fbk_tasks.settings import load_settings

    settings = load_settings()
    if args.ds:
        try:
            validate_ds(args.ds)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        if not (settings.curated_dir / f"ds={args.ds}").is_dir():
            raise UserError(f"no curated partition ds={args.ds} under {settings.curated_dir}")
    try:
        summary = run_scoring(settings, args.ds, rescore=args.rescore, build=not args.no_warehouse)
    except NoChampionError as exc:
        raise UserError(str(exc)) from None
    print(json.dumps(summary, indent=1, sort_keys=True, default=str))
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("score", help="Score curated reviews with the champion model.")
    p.add_argument("--ds", help="Only this partition (YYYY-MM-DD); default: every partition with unscored reviews.")
    p.add_argument("--rescore", action="store_true", help="Score again everything selected (all history without --ds) with the current champion.")
    p.add_argument("--no-warehouse", action="store_true", help="Skip the warehouse rebuild at the end.")
    p.set_defaults(func=_score)

"""`fbk drift [--ds D] [--no-encoder]`: the monitor's path without Airflow; prints the decision."""

from __future__ import annotations

import argparse
import json


def _latest_scored_ds(settings) -> str | None:
    parts = sorted(p.name[3:] for p in settings.scores_dir.glob("ds=*") if p.is_dir())
    return parts[-1] if parts else None


def _drift(args: argparse.Namespace) -> int:
    from fbk_tasks.cli import UserError
    from fbk_tasks.drift.monitor import DriftInputError, run_drift
    from fbk_tasks.score.plan import validate_ds
    from fbk_tasks.settings import load_settings

    settings = load_settings()
    ds = args.ds or _latest_scored_ds(settings)
    if not ds:
        raise UserError(f"no scored partition under {settings.scores_dir}; pass --ds or run `fbk score` first")
    try:
        validate_ds(ds)
        result = run_drift(settings, ds, use_encoder=False if args.no_encoder else None)
    except (ValueError, DriftInputError) as exc:
        raise UserError(str(exc)) from None
    d = result["decision"]
    print(json.dumps(result, indent=1, sort_keys=True, default=str))
    print(f"drift {ds} v{result['model_version']}: {'RETRAIN' if d['retrain'] else d['status']}"
          + (f" ({'; '.join(d['reasons'])})" if d["reasons"] else ""))
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("drift", help="Measure drift of one scored night against the champion's training data.")
    p.add_argument("--ds", help="Night to check (YYYY-MM-DD); default: the latest scored partition.")
    p.add_argument("--no-encoder", action="store_true",
                   help="Do not load the MiniLM encoder (character n-grams for the domain classifier, no [UNK] signal).")
    p.set_defaults(func=_drift)

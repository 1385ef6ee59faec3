"""`fbk drift [--ds D] [--no-encoder]`: the monitor's path without Airflow; prints the decisions.

Without ``--ds`` it checks what a ``feedback_monitor`` run without ``ds`` checks: the unchecked
scored nights (:func:`fbk_tasks.drift.monitor.nights_to_check`, newest first, at most
``drift.max_nights_per_run``), one summary per night. It prints decisions and writes metrics and
reports; it never records a retrain request (the DAG's ``emit_retrain`` does), so a night it
decided to retrain stays due for the DAG."""

from __future__ import annotations

import argparse
import json


def _print(result: dict) -> None:
    d = result["decision"]
    print(json.dumps(result, indent=1, sort_keys=True, default=str))
    print(f"drift {result['ds']} v{result['model_version']}: {'RETRAIN' if d['retrain'] else d['status']}"
          + (f" ({'; '.join(d['reasons'])})" if d["reasons"] else ""))


def _drift(args: argparse.Namespace) -> int:
    from fbk_tasks.cli import UserError
    from fbk_tasks.drift.monitor import DriftInputError, nights_to_check, run_drift, run_drift_nights, scored_nights
    from fbk_tasks.score.plan import validate_ds
    from fbk_tasks.settings import load_settings

    settings = load_settings()
    use_encoder = False if args.no_encoder else None
    if args.ds:
        try:
            validate_ds(args.ds)
            result = run_drift(settings, args.ds, use_encoder=use_encoder)
        except (ValueError, DriftInputError) as exc:
            raise UserError(str(exc)) from None
        _print(result)
        return 0
    scored = scored_nights(settings)
    if not scored:
        raise UserError(f"no scored partition under {settings.scores_dir}; pass --ds or run `fbk score` first")
    nights = nights_to_check(settings, scored[-1], settings.drift.max_nights_per_run)
    if not nights:
        print(f"every scored night is checked already (latest {scored[-1]}); pass --ds D to check one again")
        return 0
    done = run_drift_nights(settings, nights, use_encoder=use_encoder)
    for result in done["nights"]:
        _print(result)
    for ds, why in done["skipped"].items():
        print(f"drift {ds}: skipped ({why})")
    if done["failed"]:
        raise UserError("; ".join(f"drift {ds} not measured: {why}" for ds, why in done["failed"].items()))
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("drift", help="Measure drift of scored nights against the champion's training data.")
    p.add_argument("--ds", help="Night to check (YYYY-MM-DD); default: the scored nights not checked yet "
                                "(newest first, at most drift.max_nights_per_run).")
    p.add_argument("--no-encoder", action="store_true",
                   help="Do not load the MiniLM encoder (character n-grams for the domain classifier, no [UNK] signal).")
    p.set_defaults(func=_drift)

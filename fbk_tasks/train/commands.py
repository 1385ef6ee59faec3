"""``fbk train``, ``fbk golden refresh``, ``fbk pretrain`` and ``fbk model list|promote|rollback``."""

from __future__ import annotations

import argparse
import json
import logging


def _settings():
    from fbk_tasks.settings import load_settings

    return load_settings()


def _user_errors(fn):
    """Turn the stage's expected failures into UserError (exit 2, message for the terminal)."""

    def wrapped(args):
        from fbk_tasks.cli import UserError
        from fbk_tasks.train.data import TrainingDataError
        from fbk_tasks.train.gate import GateError

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            return fn(args)
        except (TrainingDataError, GateError, FileNotFoundError) as exc:
            raise UserError(str(exc)) from None

    return wrapped


@_user_errors
def _train(args) -> int:
    from fbk_tasks.train.pipeline import CANDIDATES, run_training

    candidates = [c.strip() for c in args.candidates.split(",")] if args.candidates else None
    unknown = sorted(set(candidates or []) - set(CANDIDATES))
    if unknown:
        from fbk_tasks.cli import UserError

        raise UserError(f"unknown candidate(s) {unknown}; choose from {list(CANDIDATES)}")
    print(json.dumps(run_training(_settings(), args.ds_from, args.ds_to, candidates), indent=2, default=str))
    return 0


@_user_errors
def _golden_refresh(args) -> int:
    from fbk_tasks.train.gate import refresh_golden

    print(json.dumps(refresh_golden(_settings(), args.ds_from, args.ds_to), indent=2, default=str))
    return 0


@_user_errors
def _pretrain(args) -> int:
    from fbk_tasks.train.pretrain import pretrain

    print(pretrain(_settings(), args.ds_from, args.ds_to))
    return 0


@_user_errors
def _model_list(args) -> int:
    from fbk_tasks.train.gate import list_versions

    rows = list_versions(_settings())
    if not rows:
        print("no registered versions")
        return 0
    cols = ["version", "aliases", "candidate", "verdict", "golden_f1", "run_id", "reason"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols[:-1]}
    print("  ".join(c.ljust(widths.get(c, 0)) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths.get(c, 0)) for c in cols))
    return 0


@_user_errors
def _model_promote(args) -> int:
    from fbk_tasks.train.gate import promote

    print(json.dumps(promote(_settings(), args.version, reason=args.reason)))
    return 0


@_user_errors
def _model_rollback(args) -> int:
    from fbk_tasks.train.gate import rollback

    print(json.dumps(rollback(_settings())))
    return 0


def _add_range(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ds-from", help="first curated partition (YYYY-MM-DD, inclusive); default: all")
    p.add_argument("--ds-to", help="last curated partition (YYYY-MM-DD, inclusive); default: all")


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("train", help="assemble data, train candidates, register them and run the promotion gate")
    _add_range(p)
    p.add_argument("--candidates", help="comma-separated subset of baseline,transformer (default: train.candidates)")
    p.set_defaults(func=_train)

    p = subparsers.add_parser("pretrain", help="masked-LM pre-training on curated text of train.pretrain_language: a small BERT "
                                "from scratch, or more training of train.pretrain_from")
    _add_range(p)
    p.set_defaults(func=_pretrain)

    g = subparsers.add_parser("golden", help="the golden evaluation set").add_subparsers(dest="golden_command", required=True)
    p = g.add_parser("refresh", help="re-take the golden set and re-score the champion on it (logged to MLflow)")
    _add_range(p)
    p.set_defaults(func=_golden_refresh)

    m = subparsers.add_parser("model", help="registered model versions and aliases").add_subparsers(dest="model_command", required=True)
    m.add_parser("list", help="versions with aliases and gate verdicts").set_defaults(func=_model_list)
    p = m.add_parser("promote", help="make VERSION champion without the gate (the old one becomes previous)")
    p.add_argument("version")
    p.add_argument("--reason", default="manual promotion")
    p.set_defaults(func=_model_promote)
    m.add_parser("rollback", help="champion <- previous (the replaced champion becomes previous)").set_defaults(func=_model_rollback)

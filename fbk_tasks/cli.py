"""The `fbk` command: every pipeline step without Airflow, on the same fbk_tasks functions.

Each area registers its own sub-commands through an ``add_commands(subparsers)`` function,
so this file only assembles them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from fbk_tasks.settings import SettingsError

# Modules that contribute sub-commands; missing ones are skipped so that a partial
# checkout still runs the commands it has.
COMMAND_MODULES = (
    "fbk_tasks.ingest.commands",
    "fbk_tasks.train.commands",
    "fbk_tasks.score.commands",
    "fbk_tasks.warehouse.commands",
    "fbk_tasks.drift.commands",
    "fbk_tasks.demo.commands",
)


class UserError(Exception):
    """An error whose message is for the person at the terminal (exit status 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fbk", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):  # the area (or its package) is absent
                continue
            raise
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except (UserError, SettingsError) as exc:
        print(f"fbk {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())

"""The `prunetune` command line.

Each package registers its own subcommands: `orchestrator.commands` (run, resume, status,
presets, show), `results.commands` (aggregate, report) and `orchestrator.submit` (submit).
A registered subcommand sets ``func(args) -> int``. Bad input raises `UserError`: one line on
stderr, exit code 2, no traceback; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import sys

from trainables.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prunetune",
        description="Pruning-and-generalization studies on Ray Tune.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from orchestrator import commands, submit
    from results import commands as results_commands

    commands.register(sub)
    results_commands.register(sub)
    submit.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"prunetune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prunetune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

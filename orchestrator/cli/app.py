"""The `prunetune` command line, and its one failure path.

Each package registers its own subcommands: `orchestrator.cli.run` (run, resume),
`orchestrator.cli.listing` (status, ls, presets, show), `results.commands` (aggregate, report) and
`orchestrator.cluster.submit` (submit). A registered subcommand sets ``func(args) -> int``.

Every user-facing failure ends in :func:`main`, whatever raised it: bad input (`UserError`), a
refusal by the operating system or a filesystem (``OSError``: a permission, a missing directory,
a full disk, a storage URI that refuses), text that is not UTF-8: one line on stderr, exit code 2,
no traceback. A closed output pipe (``prunetune status DIR | head -1``) ends quietly. Anything
else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

from trainables.errors import UserError

EXIT_CODES = """\
exit codes:
  0    done (every trial finished: ok or diverged)
  1    some trials failed for good (`prunetune resume STUDY_DIR` retries them)
  2    bad input or an environment refusal: one line on stderr, nothing written
  69   `submit --follow`: the cluster went away while the study ran; the line names the
       `prunetune submit ...` that resumes it once a head is up again
  75   the disk is full: one line says what could not be written and the space left; free
       space, then `prunetune resume STUDY_DIR` (finished trials are kept)
  130  interrupted (Ctrl-C); the study's state is saved: `prunetune resume STUDY_DIR`
  143  terminated (SIGTERM: `kill PID`, `timeout`, a scheduler); the state is saved as for 130

The study spec's fields: `prunetune show quickstart` (a complete example), README "Study specs".
"""


def version() -> str:
    from results.tables.schema import prunetune_version

    return prunetune_version()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prunetune",
        description="Pruning-and-generalization studies on Ray Tune.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"prunetune {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from orchestrator.cli import listing, run
    from orchestrator.cluster import submit
    from results import commands

    run.register(sub)
    listing.register(sub)
    commands.register(sub)
    submit.register(sub)
    for command in sub.choices.values():
        command.epilog = command.epilog or EXIT_CODES
        command.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    from orchestrator.cli import terminate

    terminate.install()
    parser = build_parser()
    args = _parse(parser, argv)
    try:
        code = int(args.func(args) or 0)
        return terminate.exit_code() if code == terminate.INTERRUPTED else code
    except UserError as exc:
        return _fail(str(exc))
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        print("prunetune: interrupted", file=sys.stderr)
        return terminate.exit_code()
    except UnicodeError as exc:
        return _fail(f"not UTF-8 text ({exc})")
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # a full disk: documented code 75
            return _fail(no_space_line(exc), code=75)
        return _fail(os_error_line(exc))


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, letting KEY=VALUE overrides come after options too (``run SPEC --dry-run seeds=1``):
    argparse alone fills a ``*`` positional once, before the first option."""
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "overrides"):
        args.overrides = [*args.overrides, *(x for x in extra if _is_override(x))]
        extra = [x for x in extra if not _is_override(x)]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _is_override(arg: str) -> bool:
    return "=" in arg and not arg.startswith("-")


def os_error_line(exc: OSError) -> str:
    """``path: reason`` of an operating-system or filesystem refusal, on one line."""
    where = exc.filename if exc.filename is not None else ""
    reason = exc.strerror or " ".join(str(exc).split())
    return f"{where}: {reason}" if where else reason


def no_space_line(exc: OSError) -> str:
    """A full disk's line: what could not be written and the space left there."""
    if exc.filename is None:  # the driver's own line (orchestrator.tune.diskfull)
        return os_error_line(exc)
    from orchestrator.tune.diskfull import free_space

    return f"{os_error_line(exc)} ({free_space(str(exc.filename))} there)"


def _fail(message: str, code: int = 2) -> int:
    try:
        print(f"prunetune: error: {message}", file=sys.stderr)
    except BrokenPipeError:
        pass
    return code


def _silence_stdout() -> None:
    """The reader of our output went away: send the rest (and Python's final flush) nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())

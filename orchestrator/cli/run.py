"""`prunetune run` and `prunetune resume`: the driver of a study.

Order, so that nothing is written before the checks that can run first have passed (a refusal
among them exits 2 and leaves no study directory behind): the spec is loaded and validated (with
any ``KEY=VALUE`` overrides; ``--smoke`` then maps it to its toy-scale version,
:mod:`search_spaces.smoke`); the Ray address is checked (syntax, and reached with a bounded
timeout); the study's place is checked (storage reachable, creatable, the spec hash agrees with an
existing study, no other driver runs it); so are the datasets (files on disk, or a download server
that answers); Ray starts and the trials' resources are checked against its nodes. Only then is
the driver lock taken (one driver per study: :mod:`orchestrator.study.lock`), which creates the study
directory if needed; under the lock the study is created (spec.yaml, study.json) or opened. On a
cluster (``--address``) the check that every node reaches the study directory
(:func:`orchestrator.cluster.connect.check_storage_shared`) runs after that, so its refusal (exit 2) leaves
the study created. Then the experiments run (an Optuna search mirrored into ``optuna.db`` as it
goes), the tables are exported and the report written.

Output: progress and notes go to stderr; Ray's and Tune's own console output only with ``-v``;
stdout carries the command's result with the study directory as its last line (for scripts:
``dir=$(prunetune run quickstart | tail -1)``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from orchestrator.study.directory import (
    Study,
    Target,
    check_not_driven,
    locate,
    open_existing,
    open_for_run,
)
from search_spaces.expand import StudyPlan, expand
from search_spaces.overrides import OVERRIDES_HELP
from trainables.errors import UserError

ADDRESS_HELP = (
    "Ray cluster to run on: 'auto' (the cluster this machine belongs to) or ray://HOST:PORT; "
    "a token-auth cluster needs RAY_AUTH_MODE=token and its token, as for `ray` itself "
    "(default: start a local Ray, token auth on, with every CPU of this machine)"
)
SMOKE_HELP = (
    "run every arm at toy scale as study <name>-smoke: few epochs, small models, a small data "
    "subset (synthetic data when the files are absent), one seed; checks that it runs end to end, "
    "its numbers mean nothing (search_spaces/smoke.py)"
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a study (resumes it if it exists with the same spec)")
    p.add_argument("spec", metavar="SPEC_OR_PRESET", help="a spec YAML file or a preset name")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    p.add_argument("--storage", help="study storage: a directory or a URI (default: the spec's)")
    p.add_argument("--name", help="study name (default: the spec's)")
    p.add_argument("--address", help=ADDRESS_HELP)
    p.add_argument("--dry-run", action="store_true", help="print the plan; run and write nothing")
    p.add_argument(
        "--json", action="store_true", help="with --dry-run: the plan as one JSON object"
    )
    p.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    p.add_argument("-v", "--verbose", action="store_true", help="show Ray's and Tune's output")
    p.add_argument("--job", action="store_true", help=argparse.SUPPRESS)  # see leave_job_dir
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("resume", help="resume an interrupted study")
    p.add_argument("study_dir", metavar="STUDY_DIR", help="the study directory (path or URI)")
    p.add_argument("--address", help=ADDRESS_HELP)
    p.add_argument("-v", "--verbose", action="store_true", help="show Ray's and Tune's output")
    p.set_defaults(func=cmd_resume)


def cmd_run(args: argparse.Namespace) -> int:
    from orchestrator.cluster.runtime import check_address
    from search_spaces.smoke import check_data, smoke_spec
    from search_spaces.spec import load_spec

    if args.json and not args.dry_run:  # a flag never silently does nothing
        raise UserError("--json: only with --dry-run (the plan as JSON); a run prints no JSON")
    spec = load_spec(
        args.spec, name=args.name, storage=args.storage, overrides=args.overrides, note=note
    )
    spec = smoke_spec(spec, note) if args.smoke else spec
    if args.job:
        leave_job_dir()
    plan = expand(spec)
    if args.dry_run:
        from orchestrator.cli.dry_run import print_plan

        print_plan(spec, plan, args.address, as_json=args.json)
        return 0
    check_address(args.address)
    locate(spec)  # refuses a storage or name clash, or a running driver, now: before Ray starts
    check_data(spec)  # and a dataset a trial could not load
    relocate = lambda: locate(spec, check_driver=False)  # noqa: E731  (under our own lock)
    return execute(relocate, spec, plan, args.address, args.verbose)


def leave_job_dir() -> None:
    """A submitted job's driver (``prunetune submit`` passes ``--job``) starts in the job's
    runtime_env working directory, which Ray may delete while the job runs (seen with two nodes on
    one host sharing a session directory); Tune calls ``os.getcwd()`` at the end of ``fit``. Once
    the spec is read, the driver moves to the system's temporary directory. Imports keep working:
    ``python -m`` put the working directory on ``sys.path`` as an absolute path."""
    import tempfile

    os.chdir(tempfile.gettempdir())


def cmd_resume(args: argparse.Namespace) -> int:
    from orchestrator.cluster.runtime import check_address

    study = open_existing(args.study_dir)
    check_not_driven(study.fs, study.path, study.uri)
    check_address(args.address)
    target = Target(study.uri, study.fs, study.path, True)
    return execute(lambda: target, study.spec, expand(study.spec), args.address, args.verbose)


def execute(
    locate_target: Callable[[], Target],
    spec: Any,
    plan: StudyPlan,
    address: str | None,
    verbose: bool = False,
) -> int:
    """Start Ray, check capacity, take the study's lock, create or open the study, run, export,
    report. `locate_target` is called again under the lock (another driver may have created the
    study meanwhile).

    Returns 0 when every trial finished (ok or diverged), 1 when some failed for good
    (``prunetune resume`` retries them), 130 when Ctrl-C stopped it (state saved; nothing
    exported).
    """
    from orchestrator.cluster.runtime import check_capacity, ray_session

    with ray_session(address, verbose):
        check_capacity(plan.resources.cpu, plan.resources.gpu)
        target = locate_target()
        try:
            return _locked(locate_target, target, spec, plan, address, verbose)
        except OSError as exc:
            raise _no_space(exc, target.uri) from None


def _locked(
    locate_target: Callable[[], Target],
    target: Target,
    spec: Any,
    plan: StudyPlan,
    address: str | None,
    verbose: bool,
) -> int:
    """:func:`execute` from taking the study's lock on."""
    from orchestrator.cluster.runtime import trial_capacity
    from orchestrator.study.live import live_report
    from orchestrator.study.lock import acquire

    with acquire(target.fs, target.path, target.uri, command=" ".join(sys.argv)) as lock:
        target = locate_target()
        study = open_for_run(target, spec, plan)
        state = "resuming" if target.exists else "created"
        note(f"{state} study {study.uri} (spec {study.spec_hash})")
        concurrency = plan.max_concurrent_trials or trial_capacity(
            plan.resources.cpu, plan.resources.gpu
        )
        with live_report(study, plan):  # tables and report.html every report_every s
            finished = _run_experiments(study, plan, address, concurrency, verbose)
        if lock.lost:
            raise _lost(lock.lost)
        if not finished:
            note(f"interrupted; the study's state is saved: prunetune resume {study.uri}")
            return 130
        return _export(study, plan)


def _run_experiments(
    study: Study, plan: StudyPlan, address: str | None, concurrency: int, verbose: bool
) -> bool:
    """Run the unfinished experiments in order; False when one was interrupted."""
    from orchestrator.study.status import is_complete
    from orchestrator.tune.tuner import run_experiment

    todo = [e for e in study.experiments if not is_complete(study, plan, e)]
    if not todo:
        from orchestrator.optuna_mirror.mirror import refresh_mirror

        note("every trial already finished; exporting")
        refresh_mirror(study, plan)  # an optuna.db that is missing or behind catches up
        return True
    if address is not None:  # a cluster: every node must reach the study directory
        from orchestrator.cluster.connect import check_storage_shared

        check_storage_shared(study.uri)
    for experiment in todo:
        outcome = run_experiment(study, plan, experiment, concurrency, verbose)
        if outcome.discarded_stale:
            note(f"{experiment}: no snapshot had been written; started it afresh")
        if outcome.orphans_removed:
            n = len(outcome.orphans_removed)
            note(f"{experiment}: removed {n} orphan trial directories left by a restore")
        if outcome.interrupted:
            return False
    return True


def _export(study: Study, plan: StudyPlan) -> int:
    """Export the tables, write the report, print the summary; the exit code (see execute)."""
    from orchestrator.study.status import experiment_status
    from results.api import export_study, write_report
    from results.commands import summary_lines
    from results.tables.status import format_counts

    statuses = [experiment_status(study, plan, e) for e in study.experiments]
    summary = export_study(study.uri)
    report = write_report(study.uri)
    for s in statuses:
        print(f"{s.experiment}: {format_counts(s.counts, s.expected)}")
    print("\n".join(summary_lines(summary)))
    print(f"report: {report}")
    print(study.uri)
    unfinished = sum(
        s.counts["error"] + s.counts["stopped"] + s.counts["running"] + s.counts["pending"]
        for s in statuses
    )
    return 1 if unfinished else 0


def _no_space(exc: OSError, uri: str) -> OSError:
    """A write of the study that failed for lack of space (taking the lock, exporting the tables;
    every write is atomic, so nothing is half-written) as the driver's one disk-full line with the
    resume command, exit code 75 (``prunetune.cli.app``); any other error as it is."""
    from orchestrator.tune.diskfull import (
        DISK_FULL_PREFIX,
        disk_full_error,
        free_space,
        is_no_space,
    )

    if not is_no_space(exc) or (exc.strerror or "").startswith(DISK_FULL_PREFIX):
        return exc
    reason = exc.strerror or " ".join(str(exc).split())
    what = f"{exc.filename}: {reason}" if exc.filename else f"a write under {uri} failed ({reason})"
    space = free_space(exc.filename or uri) if "://" not in uri else "free space unknown"
    return disk_full_error(f"{what}; {space} there", uri)


def _lost(why: str) -> Exception:
    from trainables.errors import UserError

    return UserError(f"the study's driver lock was lost ({why}); another driver took it over")


def note(text: str) -> None:
    print(f"prunetune: {text}", file=sys.stderr, flush=True)

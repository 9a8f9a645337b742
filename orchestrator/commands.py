"""`prunetune run | resume | status | presets | show`.

Every command validates its input completely before it touches anything: a bad spec or a study
directory that does not check out raises `UserError` (one line per problem, exit 2) before a
study directory is written or Ray is imported. Ray, Tune and the results package are imported
inside the commands that need them, so `presets`, `show`, `status` and `--dry-run` start fast.

Output: progress and Tune's own messages go to stderr; stdout carries the command's result and,
for `run` and `resume`, the study directory as its last line (for scripts:
``dir=$(prunetune run quickstart | tail -1)``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from orchestrator.study import Study, open_existing, open_for_run
from search_spaces.expand import StudyPlan, expand


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a study (resumes it if it exists with the same spec)")
    p.add_argument("spec", metavar="SPEC_OR_PRESET", help="a spec YAML file or a preset name")
    p.add_argument("--storage", help="study storage: a directory or a URI (default: the spec's)")
    p.add_argument("--name", help="study name (default: the spec's)")
    p.add_argument("--address", help=_ADDRESS_HELP)
    p.add_argument("--dry-run", action="store_true", help="print the plan; run and write nothing")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("resume", help="resume an interrupted study")
    p.add_argument("study_dir", metavar="STUDY_DIR", help="the study directory (path or URI)")
    p.add_argument("--address", help=_ADDRESS_HELP)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser(
        "status", help="trials ok / diverged / running / error / pending, gain so far"
    )
    p.add_argument("study_dir", metavar="STUDY_DIR", help="the study directory (path or URI)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("presets", help="list the shipped study presets")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("show", help="print a preset's YAML (to copy and edit)")
    p.add_argument("name", metavar="NAME", help="a preset name (see `prunetune presets`)")
    p.set_defaults(func=cmd_show)


_ADDRESS_HELP = (
    "Ray cluster to run on: 'auto' (the cluster this machine belongs to) or ray://host:port; "
    "a token-auth cluster needs RAY_AUTH_MODE=token and its token, as for `ray` itself "
    "(default: start a local Ray, token auth on, with every CPU of this machine)"
)


# --- run / resume ---------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from search_spaces.spec import load_spec

    spec = load_spec(args.spec, name=args.name, storage=args.storage)
    plan = expand(spec)
    if args.dry_run:
        _print_plan(plan, spec.name)
        return 0
    study, resumed = open_for_run(spec, plan)
    _note(f"{'resuming' if resumed else 'created'} study {study.uri} (spec {study.spec_hash})")
    return execute(study, plan, args.address)


def cmd_resume(args: argparse.Namespace) -> int:
    study = open_existing(args.study_dir)
    _note(f"resuming study {study.uri} (spec {study.spec_hash})")
    return execute(study, expand(study.spec), args.address)


def execute(study: Study, plan: StudyPlan, address: str | None) -> int:
    """Run every unfinished experiment, export, write the report, print the summary.

    Returns 0 when every trial finished (ok or diverged), 1 when some errored for good
    (``prunetune resume`` retries them), 130 when Ctrl-C stopped it (state saved; nothing
    exported).
    """
    from orchestrator.status import experiment_status, is_complete
    from results.commands import summary_lines
    from results.status import format_counts

    todo = [e for e in study.experiments if not is_complete(study, plan, e)]
    if todo:
        if not _run_experiments(study, plan, todo, address):
            _note(f"interrupted; the study's state is saved: prunetune resume {study.uri}")
            return 130
    else:
        _note("every trial already finished; exporting")
    statuses = [experiment_status(study, plan, e) for e in study.experiments]
    summary, report = export_and_report(study)
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


def _run_experiments(study: Study, plan: StudyPlan, todo: list[str], address: str | None) -> bool:
    """Run the experiments in order; False when one was interrupted (the rest are not started)."""
    from orchestrator.runtime import ray_session, trial_capacity

    with ray_session(address):  # before importing Ray here: it sets RAY_AUTH_MODE first
        from orchestrator.tuner import run_experiment

        if address is not None:  # a cluster: every node must reach the study directory
            from orchestrator.cluster import check_storage_shared

            check_storage_shared(study.uri)
        concurrency = plan.max_concurrent_trials or trial_capacity(
            plan.resources.cpu, plan.resources.gpu
        )
        for experiment in todo:
            outcome = run_experiment(study, plan, experiment, concurrency)
            if outcome.discarded_stale:
                _note(f"{experiment}: no snapshot had been written; started it afresh")
            if outcome.orphans_removed:
                n = len(outcome.orphans_removed)
                _note(f"{experiment}: removed {n} orphan trial directories left by a restore")
            if outcome.interrupted:
                return False
    return True


def export_and_report(study: Study) -> tuple[Any, str]:
    from results.api import export_study, write_report

    summary = export_study(study.uri)
    return summary, write_report(study.uri)


def _print_plan(plan: StudyPlan, name: str) -> None:
    """The ``--dry-run`` plan: ``search_spaces.summary.plan_summary``, one line per item."""
    from search_spaces.summary import plan_summary

    print(f"study {name}: plan (dry run; nothing written)")
    for key, value in plan_summary(plan).items():
        if isinstance(value, dict):
            value = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in value.items())
        print(f"  {key.replace('_', ' ')}: {value}")


# --- status ---------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    from orchestrator.status import experiment_status, format_status

    study = open_existing(args.study_dir)
    plan = expand(study.spec)
    print(f"study {study.uri} (spec {study.spec_hash})")
    statuses = [experiment_status(study, plan, e) for e in study.experiments]
    for status in statuses:
        print(format_status(status))
    started = any(s.phase != "absent" for s in statuses)
    print(_gain_line(study) if started else _NO_GAIN)
    job = _job_line(study)
    if job:
        print(job)
    return 0


_NO_GAIN = "gain: none yet (no pruned trial with finished matched baselines)"


def _gain_line(study: Study) -> str:
    """Best and worst gain over the pruned trials that have one so far (computed, not stored:
    `status` must not write into a study another process may be running)."""
    from results.api import gain_extremes, study_tables

    e = gain_extremes(study_tables(study.uri).tables.trials)
    if e is None:
        return _NO_GAIN
    return (
        f"gain: best {e.best:+.4f} (trial {e.best_trial}, instability {_num(e.best_instability)}), "
        f"worst {e.worst:+.4f} (trial {e.worst_trial}, instability {_num(e.worst_instability)}); "
        f"n = {e.n} pruned trials with a gain"
    )


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _job_line(study: Study) -> str | None:
    from orchestrator import submit

    return submit.job_status_line(study.uri)


# --- presets --------------------------------------------------------------------------------------


def cmd_presets(args: argparse.Namespace) -> int:
    from search_spaces.presets import list_presets, preset_description

    names = list_presets()
    width = max((len(n) for n in names), default=0)
    for name in names:
        print(f"{name:<{width}}  {preset_description(name)}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from search_spaces.presets import preset_text

    sys.stdout.write(preset_text(args.name))
    return 0


def _note(text: str) -> None:
    print(f"prunetune: {text}", file=sys.stderr, flush=True)

"""`prunetune status | ls | presets | show`: read-only views; none of them writes anything.

``status`` and ``ls`` read Tune's stored snapshots (:mod:`orchestrator.study.overview`), never a running
driver's memory, so they are safe on a study that is running. ``--json`` prints one JSON object
(``status``, ``ls``) or list (``presets``) on stdout instead of the text lines.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from orchestrator.study.overview import find_study, gain_extremes, list_studies, study_status
from search_spaces.spec import DEFAULT_STORAGE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="trials per status and the gain so far, of one study")
    where = "a study directory (path or URI), or a study name under --storage"
    p.add_argument("study", metavar="STUDY_DIR_OR_NAME", help=where)
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="where a NAME is looked up")
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("ls", help="the studies in a storage: name, hash, trials, state, updated")
    where = f"a directory or URI holding studies (default: {DEFAULT_STORAGE})"
    p.add_argument("storage", nargs="?", default=DEFAULT_STORAGE, metavar="STORAGE", help=where)
    p.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("presets", help="list the shipped study presets")
    p.add_argument("--json", action="store_true", help="a JSON list of {name, description}")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("show", help="print a preset's YAML (to copy and edit)")
    p.add_argument("name", metavar="NAME", help="a preset name (see `prunetune presets`)")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="print the resolved spec with these fields changed (as `run` would run it)",
    )
    p.add_argument(
        "--smoke", action="store_true", help="print the resolved spec `run --smoke` would run"
    )
    p.set_defaults(func=cmd_show)


# --- status ---------------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    from orchestrator.cluster.submission import job_report, with_job
    from orchestrator.study.status import format_status

    study = find_study(args.study, args.storage)
    status = study_status(study)
    statuses = status.pop("statuses")
    started = any(s.phase != "absent" for s in statuses)
    gain = gain_extremes(study) if started else None
    job = job_report(study.uri)
    status.update(with_job(status["state"], job))  # state, job, resume
    if args.json:
        print(json.dumps({**status, "gain": gain}, indent=2))
        return 0
    print(f"study {study.uri} (spec {study.spec_hash}): {status['state']}")
    if status["driver"]:
        print(f"driver: {status['driver']}")
    for s in statuses:
        print(format_status(s))
    print(_gain_line(gain))
    if job is not None:
        print("\n".join(job.lines(with_resume=status["resume"] is not None)))
    return 0


def _gain_line(gain: dict[str, Any] | None) -> str:
    if gain is None:
        return "gain: none yet (no pruned trial with finished matched baselines)"
    return (
        f"gain: best {gain['best']:+.4f} (trial {gain['best_trial']}, instability "
        f"{_num(gain['best_instability'])}), worst {gain['worst']:+.4f} (trial "
        f"{gain['worst_trial']}, instability {_num(gain['worst_instability'])}); "
        f"n = {gain['n']} pruned trials with a gain"
    )


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# --- ls -------------------------------------------------------------------------------------------


def cmd_ls(args: argparse.Namespace) -> int:
    rows = list_studies(args.storage)
    if args.json:
        print(json.dumps({"storage": args.storage, "studies": rows}, indent=2))
        return 0
    if not rows:
        print(f"no studies in {args.storage}", file=sys.stderr)
        return 0
    table = [("NAME", "SPEC HASH", "TRIALS", "STATE", "UPDATED (UTC)")]
    for r in rows:
        trials = f"{r['finished']}/{r['expected']}" if r["spec_hash"] else "-"
        state = r["state"] if r["state"] != "damaged" else f"damaged: {r['reason']}"
        table.append((r["name"], r["spec_hash"] or "-", trials, state, r.get("updated") or "-"))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    return 0


# --- presets and show -----------------------------------------------------------------------------


def cmd_presets(args: argparse.Namespace) -> int:
    from search_spaces.presets import list_presets, preset_description

    names = list_presets()
    if args.json:
        rows = [{"name": n, "description": preset_description(n)} for n in names]
        print(json.dumps(rows, indent=2))
        return 0
    width = max((len(n) for n in names), default=0)
    for name in names:
        print(f"{name:<{width}}  {preset_description(name)}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """The preset as shipped (comments kept); with overrides or ``--smoke``, the resolved spec
    `run` would run."""
    from search_spaces.presets import preset_text

    text = preset_text(args.name)
    if args.overrides or args.smoke:
        from orchestrator.cli.run import note
        from search_spaces.smoke import smoke_spec
        from search_spaces.spec import spec_from_yaml

        spec = spec_from_yaml(
            text, f"preset {args.name}", default_name=args.name, overrides=args.overrides
        )
        text = (smoke_spec(spec, note) if args.smoke else spec).to_yaml()
    sys.stdout.write(text)
    return 0

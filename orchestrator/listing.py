"""`prunetune status | ls | presets | show`: read-only views; none of them writes anything.

``status`` and ``ls`` read Tune's stored snapshots (:mod:`orchestrator.status`), never a running
driver's memory, so they are safe on a study that is running. ``--json`` prints one JSON object
(``status``, ``ls``) or list (``presets``) on stdout instead of the text lines.
"""

from __future__ import annotations

import argparse
import json
import posixpath
import sys
from typing import Any

import pyarrow.fs as pafs

from orchestrator.study import Study, open_existing
from results import storage
from search_spaces.expand import expand
from search_spaces.spec import DEFAULT_STORAGE, NAME_RE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="trials per status and the gain so far, of one study")
    p.add_argument(
        "study",
        metavar="STUDY_DIR_OR_NAME",
        help="a study directory (path or URI), or a study name under --storage",
    )
    p.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        help="where a NAME is looked up (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("ls", help="the studies in a storage: name, hash, trials, state, updated")
    p.add_argument(
        "storage",
        nargs="?",
        default=DEFAULT_STORAGE,
        metavar="STORAGE",
        help="a directory or URI holding studies (default: %(default)s)",
    )
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


def find_study(study: str, storage_root: str = DEFAULT_STORAGE) -> Study:
    """A study by directory or URI; a bare name (no ``/``, not an existing path) is looked up
    under `storage_root`."""
    import os

    if "/" not in study and not os.path.exists(study) and NAME_RE.fullmatch(study):
        return open_existing(storage.study_uri(storage_root, study))
    return open_existing(study)


def study_status(study: Study) -> dict[str, Any]:
    """Where a study stands, as plain data: its experiments' counts, the driver, the gain."""
    from orchestrator.lock import driver_of
    from orchestrator.status import experiment_status

    plan = expand(study.spec)
    statuses = [experiment_status(study, plan, e) for e in study.experiments]
    driver = driver_of(study.fs, study.path)
    return {
        "study": study.uri,
        "name": study.spec.name,
        "spec_hash": study.spec_hash,
        "state": _state(statuses, driver is not None),
        "driver": None if driver is None else driver.describe(),
        "experiments": [
            {
                "experiment": s.experiment,
                "phase": s.phase,
                "counts": s.counts,
                "expected": s.expected,
                "snapshot_age_s": None if s.snapshot_age_s is None else round(s.snapshot_age_s, 1),
            }
            for s in statuses
        ],
        "statuses": statuses,
    }


def _state(statuses: list, driven: bool) -> str:
    """running (a driver holds the lock) | complete | incomplete | not started."""
    if driven:
        return "running"
    if all(s.counts["ok"] + s.counts["diverged"] == s.expected for s in statuses):
        return "complete" if any(s.phase == "snapshotted" for s in statuses) else "not started"
    if all(s.phase == "absent" for s in statuses):
        return "not started"
    return "incomplete"


def cmd_status(args: argparse.Namespace) -> int:
    from orchestrator.status import format_status

    study = find_study(args.study, args.storage)
    status = study_status(study)
    statuses = status.pop("statuses")
    started = any(s.phase != "absent" for s in statuses)
    gain = _gain(study) if started else None
    job = _job_line(study)
    if args.json:
        print(json.dumps({**status, "gain": gain, "job": job}, indent=2))
        return 0
    print(f"study {study.uri} (spec {study.spec_hash}): {status['state']}")
    if status["driver"]:
        print(f"driver: {status['driver']}")
    for s in statuses:
        print(format_status(s))
    print(_gain_line(gain))
    if job:
        print(job)
    return 0


def _gain(study: Study) -> dict[str, Any] | None:
    """Best and worst gain over the pruned trials that have one so far (computed, not stored:
    `status` must not write into a study another process may be running)."""
    from dataclasses import asdict

    from results.api import gain_extremes, study_tables

    e = gain_extremes(study_tables(study.uri).tables.trials)
    return None if e is None else asdict(e)


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


def _job_line(study: Study) -> str | None:
    from orchestrator import submit

    return submit.job_status_line(study.uri)


# --- ls -------------------------------------------------------------------------------------------


def list_studies(storage_root: str) -> list[dict[str, Any]]:
    """One row per study directory under `storage_root` (sorted by name). A directory whose
    study record cannot be read is listed with state ``damaged`` and the reason."""
    from trainables.errors import UserError

    fs, path, info = storage.open_location(storage_root)
    if info.type == pafs.FileType.NotFound:
        return []
    if info.type != pafs.FileType.Directory:
        raise UserError(f"{storage_root}: not a directory of studies")
    rows = []
    for entry in sorted(fs.get_file_info(pafs.FileSelector(path)), key=lambda e: e.base_name):
        meta = posixpath.join(entry.path, storage.META_FILE)
        if (
            entry.type != pafs.FileType.Directory
            or fs.get_file_info(meta).type != pafs.FileType.File
        ):
            continue
        uri = storage.study_uri(storage_root, entry.base_name)
        try:
            rows.append(_ls_row(find_study(uri)))
        except UserError as exc:
            rows.append(
                {
                    "name": entry.base_name,
                    "study": uri,
                    "spec_hash": None,
                    "state": "damaged",
                    "reason": str(exc),
                }
            )
    return rows


def _ls_row(study: Study) -> dict[str, Any]:
    status = study_status(study)
    statuses = status.pop("statuses")
    expected = sum(s.expected for s in statuses)
    counts = {k: sum(s.counts[k] for s in statuses) for k in statuses[0].counts}
    updated = _last_update(study)
    return {
        "name": status["name"],
        "study": study.uri,
        "spec_hash": study.spec_hash,
        "state": status["state"],
        "finished": counts["ok"] + counts["diverged"],
        "expected": expected,
        "counts": counts,
        "updated": updated,
    }


def _last_update(study: Study) -> str | None:
    """The newest modification time among the study record and its experiments' snapshots."""
    from results.snapshot import read_snapshot

    files = [posixpath.join(study.path, storage.META_FILE)]
    for e in study.experiments:
        snapshot = read_snapshot(study.fs, study.tune_path(e))
        if snapshot is not None:
            files.append(snapshot.file)
    times = [i.mtime for i in study.fs.get_file_info(files) if i.mtime is not None]
    return max(times).isoformat(timespec="seconds") if times else None


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
        from orchestrator.commands import note
        from search_spaces.smoke import smoke_spec
        from search_spaces.spec import spec_from_yaml

        spec = spec_from_yaml(
            text, f"preset {args.name}", default_name=args.name, overrides=args.overrides
        )
        text = (smoke_spec(spec, note) if args.smoke else spec).to_yaml()
    sys.stdout.write(text)
    return 0

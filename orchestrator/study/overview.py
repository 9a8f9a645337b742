"""Where studies stand, as plain data (read-only; safe on a running study): one study's status
(:func:`study_status`) and the studies of a storage (:func:`list_studies`). The commands that
print them are in :mod:`orchestrator.cli.listing`."""

from __future__ import annotations

import os
import posixpath
from typing import Any

import pyarrow.fs as pafs

from orchestrator.study.directory import Study, open_existing
from results.tables import storage
from results.tables.status import FINISHED
from search_spaces.expand import expand
from search_spaces.spec import DEFAULT_STORAGE, NAME_RE
from trainables.errors import UserError


def find_study(study: str, storage_root: str = DEFAULT_STORAGE) -> Study:
    """A study by directory or URI; a bare name (no ``/``, not an existing path) is looked up
    under `storage_root`."""
    if "/" not in study and not os.path.exists(study) and NAME_RE.fullmatch(study):
        return open_existing(storage.study_uri(storage_root, study))
    return open_existing(study)


def study_status(study: Study) -> dict[str, Any]:
    """Where a study stands, as plain data: its experiments' counts, the driver, the gain."""
    from orchestrator.study.holder import driver_of
    from orchestrator.study.status import experiment_status, interrupted

    plan = expand(study.spec)
    statuses = [experiment_status(study, plan, e) for e in study.experiments]
    driver = driver_of(study.fs, study.path)
    if driver is None:  # "running" at the last snapshot, but no driver runs them now
        statuses = [interrupted(s) for s in statuses]
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
    if all(_finished(s.counts) == s.expected for s in statuses):
        return "complete" if any(s.phase == "snapshotted" for s in statuses) else "not started"
    if all(s.phase == "absent" for s in statuses):
        return "not started"
    return "incomplete"


def _finished(counts: dict[str, int]) -> int:
    return sum(counts[status] for status in FINISHED)


def gain_extremes(study: Study) -> dict[str, Any] | None:
    """Best and worst gain over the pruned trials that have one so far (computed, not stored:
    `status` must not write into a study another process may be running)."""
    from dataclasses import asdict

    from results.api import gain_extremes, study_tables

    e = gain_extremes(study_tables(study.uri).tables.trials)
    return None if e is None else asdict(e)


def list_studies(storage_root: str) -> list[dict[str, Any]]:
    """One row per study directory under `storage_root` (sorted by name). A directory whose
    study record cannot be read is listed with state ``damaged`` and the reason."""
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
        "finished": _finished(counts),
        "expected": expected,
        "counts": counts,
        "updated": updated,
    }


def _last_update(study: Study) -> str | None:
    """The newest modification time among the study record and its experiments' snapshots."""
    from results.tables.snapshot import newest_snapshot_info

    infos = study.fs.get_file_info([posixpath.join(study.path, storage.META_FILE)])
    for e in study.experiments:
        newest = newest_snapshot_info(study.fs, study.tune_path(e))
        if newest is not None:
            infos.append(newest)
    times = [i.mtime for i in infos if i.mtime is not None]
    return max(times).isoformat(timespec="seconds") if times else None

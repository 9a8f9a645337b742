"""Read Ray Tune's experiment snapshots (``experiment_state-*.json``) without importing Ray.

Tune (2.60, ``execution/tune_controller.py``) writes one snapshot file per driver session into
the experiment directory and restores from the lexicographically newest one. Each entry of its
``trial_data`` is a pair of JSON strings: the trial's state (``trial_id``, ``status``,
``relative_logdir``, ``config``, ...) and its run metadata (``last_result``, ``num_failures``,
the pickled checkpoint manager). This module reads the plain-JSON parts only; it never globs
trial directories, so an orphan directory left by a restore (trials generated after the last
snapshot, then re-generated) is never counted.

An experiment directory is in one of three phases: ``absent``; ``stale`` (Tune wrote
``tuner.pkl`` when the Tuner was built but the driver died before the first snapshot: restoring
it would make Tune silently start from scratch); ``snapshotted``.
"""

from __future__ import annotations

import fnmatch
import json
import posixpath
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow.fs as pafs

from trainables.errors import UserError

SNAPSHOT_PATTERN = "experiment_state-*.json"
TUNER_FILE = "tuner.pkl"
Phase = Literal["absent", "stale", "snapshotted"]
# What `prunetune status` reports, in order.
OUTCOMES = ("done", "diverged", "running", "errored", "stopped", "pending")


@dataclass(frozen=True)
class TrialState:
    """One trial as the newest snapshot records it."""

    trial_id: str
    status: str  # Tune's: PENDING | RUNNING | PAUSED | TERMINATED | ERROR
    logdir: str  # the trial's directory name inside the experiment directory
    last_result: dict[str, Any]  # the last reported record plus Tune's keys (training_iteration)
    metadata: str  # Tune's raw run-metadata JSON (holds the pickled checkpoint manager)

    @property
    def outcome(self) -> str:
        """done | diverged | running | errored | stopped | pending (see `OUTCOMES`)."""
        if self.status == "ERROR":
            return "errored"
        record_status = self.last_result.get("status")
        if self.status == "TERMINATED":
            return record_status if record_status in ("done", "diverged") else "stopped"
        return "running" if self.last_result.get("training_iteration") else "pending"


@dataclass(frozen=True)
class Snapshot:
    """The newest snapshot of one experiment."""

    file: str  # its path on the filesystem
    trials: tuple[TrialState, ...]

    def counts(self, expected: int | None = None) -> dict[str, int]:
        """Trials per outcome; trials the searcher has not created yet count as pending."""
        counts = Counter(t.outcome for t in self.trials)
        out = {k: counts.get(k, 0) for k in OUTCOMES}
        if expected is not None:
            out["pending"] += max(0, expected - len(self.trials))
        return out

    def complete(self, expected: int) -> bool:
        """Every expected trial exists and finished (done or diverged)."""
        finished = sum(t.outcome in ("done", "diverged") for t in self.trials)
        return len(self.trials) >= expected and finished == len(self.trials)


def phase(fs: pafs.FileSystem, exp_path: str) -> Phase:
    """absent | stale | snapshotted (see the module docstring)."""
    names = _list(fs, exp_path)
    if fnmatch.filter(names, SNAPSHOT_PATTERN):
        return "snapshotted"
    return "stale" if TUNER_FILE in names else "absent"


def read_snapshot(fs: pafs.FileSystem, exp_path: str, retry_s: float = 0.5) -> Snapshot | None:
    """The newest snapshot, or None when the experiment has none yet.

    Tune copies a snapshot into place while a study runs, so an unparsable file is read once
    more after `retry_s`. If it still cannot be parsed (a copy cut short by a crash), this raises
    UserError: Tune would restart the experiment from scratch, so nothing may resume it blindly.
    """
    files = sorted(fnmatch.filter(_list(fs, exp_path), SNAPSHOT_PATTERN))
    if not files:
        return None
    file = posixpath.join(exp_path, files[-1])
    try:
        return Snapshot(file, _parse(fs, file))
    except (ValueError, KeyError, TypeError):
        time.sleep(retry_s)
    try:
        return Snapshot(file, _parse(fs, file))
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"{file}: Tune experiment snapshot unreadable ({type(exc).__name__}: {exc}); "
            "move it aside to resume from the previous session's snapshot"
        ) from None


def _parse(fs: pafs.FileSystem, file: str) -> tuple[TrialState, ...]:
    with fs.open_input_stream(file) as f:
        state = json.loads(f.readall())
    return tuple(_trial(state_json, meta_json) for state_json, meta_json in state["trial_data"])


def _trial(state_json: str, meta_json: str) -> TrialState:
    state = json.loads(state_json)
    meta = json.loads(meta_json)
    return TrialState(
        trial_id=str(state["trial_id"]),
        status=str(state["status"]),
        logdir=str(state.get("relative_logdir") or ""),
        last_result=dict(meta.get("last_result") or {}),
        metadata=meta_json,
    )


def _list(fs: pafs.FileSystem, path: str) -> list[str]:
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except NotADirectoryError:
        return []
    return [i.base_name for i in infos]

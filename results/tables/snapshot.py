"""Read a study's Ray Tune experiments from their snapshots, without importing Ray.

Tune (checked against Ray 2.60, ``tune/execution/tune_controller.py``) writes one snapshot
``experiment_state-<timestamp>.json`` per driver session into the experiment directory and
restores from the lexicographically newest one. Each entry of its ``trial_data`` is a pair of
JSON strings written by ``Trial.get_json_state()``: the trial's state (``trial_id``, ``status``,
``config``, ``relative_logdir``, ...) and its run metadata (``last_result``, ``num_failures``,
``error_filename``, and the pickled checkpoint manager, which only the orchestrator's checkpoint
janitor reads). Only the plain-JSON parts are read here, so this is fast (10,000 trials) and
needs no Ray.

Trials are never found by globbing trial directories: an Optuna restore can leave orphan
directories that no snapshot lists. An experiment directory is in one of three phases:
``absent``; ``stale`` (Tune wrote ``tuner.pkl`` when the Tuner was built, but the driver died
before the first snapshot: restoring it would make Tune silently start from scratch);
``snapshotted``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import posixpath
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow.fs as pafs

from results.tables.history import RESULT_FILE
from results.tables.status import FINISHED, count_statuses, trial_status
from trainables.errors import UserError

SNAPSHOT_PATTERN = "experiment_state-*.json"
# The last good copy of a run-state file, beside it (orchestrator.tune.good_state writes it): read in
# place of a snapshot that does not parse.
GOOD_COPY = ".good"
TUNER_FILE = "tuner.pkl"
# Tune's statuses of a trial that ended: it finished or was stopped (TERMINATED), or failed
TUNE_ENDED: tuple[str, ...] = ("TERMINATED", "ERROR")
Phase = Literal["absent", "stale", "snapshotted"]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colour codes Ray puts in error.txt


@dataclass(frozen=True)
class TuneTrial:
    """One trial as the newest snapshot of its experiment records it."""

    experiment: str
    trial_id: str
    tune_status: str  # PENDING | RUNNING | PAUSED | TERMINATED | ERROR
    config: dict[str, Any]  # the Tune config: {"trial": {...}, "checkpoint_frequency": ..., ...}
    logdir: str  # the trial's directory name inside the experiment directory ("" = none yet)
    trial_dir: str  # its path on the filesystem ("" = none yet)
    last_result: dict[str, Any]  # the last reported record plus Tune's keys
    num_failures: int
    error_file: str  # path of Tune's error text when the trial errored ("" = none)
    metadata: str  # Tune's raw run-metadata JSON
    error: str | None = None  # that error text (read by read_study)
    # "<n>_<params>": n counts the trials a searcher created, 1 first (the snapshot lists trials
    # in no particular order); "" when Tune recorded none
    experiment_tag: str = ""

    @property
    def result_path(self) -> str:
        """Its result.json ("" when Tune never made the trial a directory)."""
        return posixpath.join(self.trial_dir, RESULT_FILE) if self.logdir else ""

    @property
    def status(self) -> str:
        """``results.tables.status`` of the trial as of the snapshot."""
        last = self.last_result
        return trial_status(
            self.tune_status, last.get("status"), bool(last.get("training_iteration"))
        )


@dataclass(frozen=True)
class Snapshot:
    """The newest snapshot of one experiment."""

    file: str  # its path on the filesystem
    trials: tuple[TuneTrial, ...]

    def counts(self, expected: int | None = None) -> dict[str, int]:
        """Trials per status; trials the searcher has not created yet count as pending."""
        return count_statuses((t.status for t in self.trials), expected)

    def complete(self, expected: int) -> bool:
        """Every expected trial exists and finished (ok or diverged)."""
        finished = sum(t.status in FINISHED for t in self.trials)
        return len(self.trials) >= expected and finished == len(self.trials)


@dataclass(frozen=True)
class TuneStudy:
    """Every experiment under a study's ``tune`` directory."""

    experiments: tuple[str, ...]  # names of experiments with a snapshot
    unreadable: tuple[tuple[str, str], ...]  # (experiment, why): no snapshot written yet
    trials: tuple[TuneTrial, ...]  # sorted by (experiment, trial_id)


def phase(fs: pafs.FileSystem, exp_path: str) -> Phase:
    """absent | stale | snapshotted (see the module docstring)."""
    names = _list(fs, exp_path)
    if fnmatch.filter(names, SNAPSHOT_PATTERN):
        return "snapshotted"
    return "stale" if TUNER_FILE in names else "absent"


def newest_snapshot_name(names: Iterable[str]) -> str | None:
    """The snapshot Tune restores from among the file names of an experiment directory: the
    lexicographically greatest ``experiment_state-*.json``; None when there is none."""
    return max(fnmatch.filter(names, SNAPSHOT_PATTERN), default=None)


def newest_snapshot_info(fs: pafs.FileSystem, exp_path: str) -> pafs.FileInfo | None:
    """The directory listing's entry (name, mtime, size) of the experiment's newest snapshot,
    without opening it; None when it has none yet."""
    infos = {i.base_name: i for i in _infos(fs, exp_path)}
    name = newest_snapshot_name(infos)
    return None if name is None else infos[name]


def read_snapshot(
    fs: pafs.FileSystem,
    exp_path: str,
    attempts: int = 3,
    retry_s: float = 0.5,
    suffix: str = "",
) -> Snapshot | None:
    """The newest snapshot of the experiment at `exp_path`, or None when it has none yet.

    Tune copies a snapshot into place while a study runs, so an unparsable file is read again
    after `retry_s`. If it still cannot be parsed (a copy cut short by a crash or a full disk),
    this raises UserError: Tune would restart the experiment from scratch, so nothing may resume
    it blindly, unless the snapshot's last good copy (:data:`GOOD_COPY`) parses: that is read
    instead. With `suffix` it reads the newest snapshot's copy of that name.
    """
    names = _list(fs, exp_path)
    name = newest_snapshot_name(names)
    if name is None:
        return None
    file = posixpath.join(exp_path, name + suffix)
    experiment = posixpath.basename(exp_path.rstrip("/"))
    for attempt in range(attempts):
        try:
            with fs.open_input_stream(file) as f:
                state = json.loads(f.readall())
            entries = state["trial_data"]
            return Snapshot(file, tuple(_trial(exp_path, experiment, *e) for e in entries))
        except (ValueError, KeyError, TypeError) as exc:
            if attempt == attempts - 1 and not suffix:
                if _has(fs, file):  # cut short by a full disk: read its last good copy
                    with contextlib.suppress(UserError):
                        return read_snapshot(fs, exp_path, 1, retry_s, GOOD_COPY)
            if attempt == attempts - 1:
                earlier = max(set(fnmatch.filter(names, SNAPSHOT_PATTERN)) - {name}, default=None)
                advice = (
                    f"moving it aside would resume from the earlier snapshot {earlier}"
                    if earlier
                    else "there is no earlier snapshot: moving it aside would start the "
                    "experiment over"
                )
                raise UserError(
                    f"{file}: Tune experiment snapshot unreadable ({type(exc).__name__}: {exc}); "
                    f"{advice}"
                ) from None
            time.sleep(retry_s)
    raise AssertionError("unreachable")


def _has(fs: pafs.FileSystem, file: str) -> bool:
    """Whether `file` has a last good copy beside it."""
    return fs.get_file_info(file + GOOD_COPY).type == pafs.FileType.File


def read_study(fs: pafs.FileSystem, tune_path: str) -> TuneStudy:
    """Every experiment under `tune_path` (a study's ``tune`` directory on `fs`)."""
    names, unreadable, trials = [], [], []
    for name in _subdirectories(fs, tune_path):
        path = posixpath.join(tune_path, name)
        state = phase(fs, path)
        if state == "stale":
            unreadable.append((name, "no experiment_state-*.json snapshot yet"))
        elif state == "snapshotted":
            snapshot = read_snapshot(fs, path)
            names.append(name)
            for t in snapshot.trials if snapshot else ():
                trials.append(
                    dataclasses.replace(t, error=read_error(fs, t)) if t.error_file else t
                )
    trials.sort(key=lambda t: (t.experiment, t.trial_id))
    return TuneStudy(tuple(names), tuple(unreadable), tuple(trials))


def read_error(fs: pafs.FileSystem, trial: TuneTrial) -> str | None:
    """Tune's error text of an errored trial (colour codes removed); None when there is none."""
    if not trial.error_file:
        return None
    try:
        with fs.open_input_stream(trial.error_file) as f:
            return _ANSI.sub("", f.readall().decode("utf-8", errors="replace"))
    except FileNotFoundError:
        return None


def _trial(exp_path: str, experiment: str, state_json: str, meta_json: str) -> TuneTrial:
    state, meta = json.loads(state_json), json.loads(meta_json)
    logdir = str(state.get("relative_logdir") or "")
    trial_dir = posixpath.join(exp_path, logdir) if logdir else ""
    status = str(state["status"])
    error_file = ""
    if status == "ERROR" and meta.get("error_filename") and trial_dir:
        error_file = posixpath.join(trial_dir, meta["error_filename"])
    return TuneTrial(
        experiment=experiment,
        trial_id=str(state["trial_id"]),
        tune_status=status,
        config=dict(state.get("config") or {}),
        logdir=logdir,
        trial_dir=trial_dir,
        last_result=dict(meta.get("last_result") or {}),
        num_failures=int(meta.get("num_failures", 0)),
        error_file=error_file,
        metadata=meta_json,
        experiment_tag=str(state.get("experiment_tag") or ""),
    )


def _infos(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    try:
        return fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except NotADirectoryError:
        return []


def _list(fs: pafs.FileSystem, path: str) -> list[str]:
    return [i.base_name for i in _infos(fs, path)]


def _subdirectories(fs: pafs.FileSystem, path: str) -> list[str]:
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except NotADirectoryError:
        return []
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

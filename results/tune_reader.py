"""The Ray Tune adapter: a study's trials as Tune's experiment snapshot records them.

The only module of ``results`` that imports Ray, and it starts no Ray runtime. An experiment is
a subdirectory of ``<study>/tune`` that ``Tuner.can_restore`` accepts; its trials are those of its
newest ``experiment_state-*.json`` (picked by Tune's own ``_find_newest_experiment_checkpoint``,
the file ``Tuner.restore`` and ``ExperimentAnalysis`` load). Trials are never found by globbing
trial directories: an Optuna restore can leave orphan directories that no snapshot lists.

Each snapshot entry is the pair Tune writes with ``Trial.get_json_state()``: the trial's JSON state
(``trial_id``, ``status``, ``config``, ``relative_logdir``, ...) and its run metadata
(``num_failures``, ``error_filename``, ...). They are read as plain JSON; rebuilding full
``Trial`` objects as ``ExperimentAnalysis`` does unpickles placement groups and storage contexts,
about 1-2 ms a trial, which dominated reading a 10,000-trial study. A test checks this reader
against ``ExperimentAnalysis`` on a real experiment.

A running trial is saved as RUNNING and restored as PENDING; the status mapping in
``results.summarize`` treats both alike (reported at least once: running; else pending).
"""

from __future__ import annotations

import json
import posixpath
import re
import time
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from results.history import RESULT_FILE
from trainables.errors import UserError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colour codes Ray puts in error.txt


@dataclass(frozen=True)
class TuneTrial:
    """One Tune trial of one experiment, as the experiment snapshot records it."""

    experiment: str
    trial_id: str
    tune_status: str  # PENDING | RUNNING | PAUSED | TERMINATED | ERROR
    config: dict[str, Any]  # the Tune config: {"trial": {...}, "checkpoint_frequency": ..., ...}
    error: str | None  # the text of error.txt when tune_status is ERROR
    num_failures: int
    result_path: str  # its result.json ("" when Tune never made the trial a directory)


@dataclass(frozen=True)
class TuneStudy:
    """Every experiment under ``<study>/tune`` that ``Tuner.can_restore`` accepts."""

    filesystem: pafs.FileSystem
    experiments: tuple[str, ...]  # names of readable experiments
    unreadable: tuple[tuple[str, str], ...]  # (experiment, why): e.g. no snapshot written yet
    trials: tuple[TuneTrial, ...]  # sorted by (experiment, trial_id)


def read_tune_study(fs: pafs.FileSystem, tune_path: str) -> TuneStudy:
    """Read all experiments of a study's ``tune`` directory (a filesystem path on `fs`).

    An experiment whose ``tuner.pkl`` exists but whose first snapshot has not been written yet
    (a crash in the first seconds) has no trials to report; it is listed in ``unreadable``.
    """
    from ray.tune import Tuner
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint

    names, unreadable, trials = [], [], []
    for name in _subdirectories(fs, tune_path):
        path = posixpath.join(tune_path, name)
        if not Tuner.can_restore(path, storage_filesystem=fs):
            continue
        snapshot = _find_newest_experiment_checkpoint(path, fs=fs)
        if snapshot is None:
            unreadable.append((name, "no experiment_state-*.json snapshot yet"))
            continue
        state = _read_snapshot(fs, snapshot)
        names.append(name)
        trials.extend(_trial(fs, path, name, *entry) for entry in state["trial_data"])
    trials.sort(key=lambda t: (t.experiment, t.trial_id))
    return TuneStudy(fs, tuple(names), tuple(unreadable), tuple(trials))


def _read_snapshot(fs: pafs.FileSystem, path: str, attempts: int = 3) -> dict[str, Any]:
    """The snapshot's JSON. A live run's driver may be rewriting it: retry briefly, then fail."""
    for attempt in range(attempts):
        with fs.open_input_stream(path) as f:
            raw = f.readall()
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            if attempt == attempts - 1:
                raise UserError(f"{path}: unreadable Tune snapshot ({exc}); try again") from None
            time.sleep(0.5)
    raise AssertionError("unreachable")


def _subdirectories(fs: pafs.FileSystem, path: str) -> list[str]:
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except NotADirectoryError:
        return []
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def _trial(
    fs: pafs.FileSystem, path: str, experiment: str, state_json: str, meta_json: str
) -> TuneTrial:
    state, meta = json.loads(state_json), json.loads(meta_json)
    status = str(state["status"])
    trial_dir = posixpath.join(path, state.get("relative_logdir") or "")
    error = None
    if status == "ERROR" and meta.get("error_filename"):
        error = _read_text(fs, posixpath.join(trial_dir, meta["error_filename"]))
    return TuneTrial(
        experiment=experiment,
        trial_id=str(state["trial_id"]),
        tune_status=status,
        config=dict(state["config"]),
        error=error,
        num_failures=int(meta.get("num_failures", 0)),
        result_path=posixpath.join(trial_dir, RESULT_FILE) if state.get("relative_logdir") else "",
    )


def _read_text(fs: pafs.FileSystem, path: str) -> str | None:
    try:
        with fs.open_input_stream(path) as f:
            return _ANSI.sub("", f.readall().decode("utf-8", errors="replace"))
    except FileNotFoundError:
        return None

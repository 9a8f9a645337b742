"""Checkpoint and orphan cleanup that can never delete what a resume needs.

Why not ``CheckpointConfig(num_to_keep=k)``: Tune deletes a trial's (k+1)-th newest checkpoint
the moment a newer one registers, before the snapshot that stops referring to it has reached
storage. A SIGKILL in that window (tens of milliseconds, but it recurs every k epochs of every
trial; we hit it in 1 of 12 kills of a short-epoch sweep) leaves the newest snapshot pointing at
a deleted checkpoint, and Tune then fails that trial for good ("Could not recover from checkpoint
as it does not exist on storage anymore"). So the Tuner keeps every checkpoint and
:class:`CheckpointJanitor` deletes, every `interval_s`, for each trial of the newest snapshot *on
storage*, only the checkpoints older than the one that snapshot would restore from. Disk use
stays bounded by one checkpoint per finished trial plus the checkpoints a running trial wrote
since the last snapshot.

Without ``num_to_keep`` Tune's per-trial checkpoint manager would also remember every checkpoint
(with that epoch's whole result) and write them all into every snapshot: 13 MB for the 30
100-epoch quickstart trials, growing with epochs x trials. So the janitor also drops the deleted
checkpoints from the live trials' managers (a private list of Tune 2.60, pinned; if its shape
ever changes the trimming is skipped and only the snapshot size suffers).

:func:`remove_orphans` deletes, after an experiment finished, trial directories that its final
snapshot does not list: an Optuna restore re-generates the trials created after the last
snapshot under new ids (same parameters), leaving the first attempts' directories behind.
"""

from __future__ import annotations

import logging
import posixpath
import re
import time
from typing import Any

import pyarrow.fs as pafs
from ray.tune import Callback

from orchestrator.tune_state import read_snapshot

logger = logging.getLogger(__name__)
_CHECKPOINT_RE = re.compile(r"^checkpoint_(\d+)$")


class CheckpointJanitor(Callback):
    """A Tune Callback that prunes superseded checkpoints (see the module docstring).

    Stateless across restores (``get_state`` is None); it finds the experiment directory from
    the trials' storage context, so it follows a study that was moved between sessions.
    """

    def __init__(self, interval_s: float = 15.0):
        self.interval_s = interval_s
        self._last = time.monotonic()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # A finished trial is never restored: its manager needs only its final checkpoint.
        latest = getattr(trial.run_metadata.checkpoint_manager, "latest_checkpoint_result", None)
        if latest is not None and latest.checkpoint is not None:
            forget_checkpoints_before(trial, _result_index(latest) or 0)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.interval_s or not trials:
            return
        self._last = now
        storage = trials[0].storage
        try:
            restore_points = prune_checkpoints(
                storage.storage_filesystem, storage.experiment_fs_path
            )
            for trial in trials:
                if trial.trial_id in restore_points:
                    forget_checkpoints_before(trial, restore_points[trial.trial_id])
        except Exception:  # cleanup must never stop a study; the next pass retries
            logger.warning("checkpoint cleanup failed; will retry", exc_info=True)


def prune_checkpoints(fs: pafs.FileSystem, exp_path: str) -> dict[str, int]:
    """Delete checkpoints older than each trial's restore point in the newest stored snapshot.

    Returns trial id -> restore point (checkpoint index) for the trials that have one; trials
    without a registered checkpoint, and trials the snapshot does not list, are left alone.
    """
    snapshot = read_snapshot(fs, exp_path)
    if snapshot is None:
        return {}
    restore_points = {}
    for trial in snapshot.trials:
        keep_from = _checkpoint_index(latest_checkpoint_name(trial.metadata))
        if keep_from is None or not trial.logdir:
            continue
        restore_points[trial.trial_id] = keep_from
        trial_dir = posixpath.join(exp_path, trial.logdir)
        for name in _checkpoints(fs, trial_dir):
            if _checkpoint_index(name) < keep_from:
                try:
                    fs.delete_dir(posixpath.join(trial_dir, name))
                except FileNotFoundError:  # deleted meanwhile by another pass
                    pass
    return restore_points


def forget_checkpoints_before(trial: Any, keep_from: int) -> int:
    """Drop checkpoints older than index `keep_from` from a live Tune trial's checkpoint manager
    (they are deleted, or about to be); returns how many were dropped."""
    manager = getattr(trial.run_metadata, "checkpoint_manager", None)
    results = getattr(manager, "_checkpoint_results", None)
    if not isinstance(results, list):
        return 0
    kept = [r for r in results if (_result_index(r) or 0) >= keep_from]
    if len(kept) != len(results):
        manager._checkpoint_results = kept
        trial.run_metadata.invalidate_cache()
    return len(results) - len(kept)


def _result_index(result: Any) -> int | None:
    return _checkpoint_index(posixpath.basename(result.checkpoint.path.rstrip("/")))


def remove_orphans(fs: pafs.FileSystem, exp_path: str) -> list[str]:
    """Delete trial directories the newest snapshot does not list; returns their names.

    Call only when the experiment's driver is not running (after ``Tuner.fit`` returned). Only
    directories that look like Tune trial directories (``params.json`` or a checkpoint inside)
    are touched.
    """
    snapshot = read_snapshot(fs, exp_path)
    if snapshot is None:
        return []
    listed = {t.logdir for t in snapshot.trials}
    removed = []
    for info in fs.get_file_info(pafs.FileSelector(exp_path)):
        if info.type != pafs.FileType.Directory or info.base_name in listed:
            continue
        inside = [i.base_name for i in fs.get_file_info(pafs.FileSelector(info.path))]
        if "params.json" in inside or any(_CHECKPOINT_RE.match(n) for n in inside):
            fs.delete_dir(info.path)
            removed.append(info.base_name)
    return sorted(removed)


def latest_checkpoint_name(metadata_json: str) -> str | None:
    """The directory name of the checkpoint Tune restores this trial from (None if none).

    That is the checkpoint manager's latest registered checkpoint, which can lag the last
    result's ``checkpoint_dir_name`` (Tune updates the result before it registers the save).
    """
    from ray.tune.utils.serialization import _loads_with_cloudpickle  # trusted: our own study

    meta = _loads_with_cloudpickle(metadata_json)
    manager = meta.get("checkpoint_manager")
    latest = getattr(manager, "latest_checkpoint_result", None)
    if latest is None or latest.checkpoint is None:
        return None
    return posixpath.basename(latest.checkpoint.path.rstrip("/"))


def _checkpoint_index(name: str | None) -> int | None:
    match = _CHECKPOINT_RE.match(name or "")
    return int(match.group(1)) if match else None


def _checkpoints(fs: pafs.FileSystem, trial_dir: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
    return [
        i.base_name
        for i in infos
        if i.type == pafs.FileType.Directory and _CHECKPOINT_RE.match(i.base_name)
    ]

"""Checkpoint and orphan cleanup that can never delete what a resume needs.

Why not ``CheckpointConfig(num_to_keep=k)``: Tune deletes a trial's (k+1)-th newest checkpoint
the moment a newer one registers, before the snapshot that stops referring to it has reached
storage. A SIGKILL in that window (tens of milliseconds, but it recurs every k epochs of every
trial; we hit it in 1 of 12 kills of a short-epoch sweep) leaves the newest snapshot pointing at
a deleted checkpoint, and Tune then fails that trial for good ("Could not recover from checkpoint
as it does not exist on storage anymore"). So the Tuner keeps every checkpoint and
:class:`CheckpointJanitor` deletes, every `interval_s`, for each trial of the newest snapshot *on
storage*, only the checkpoints older than the one that snapshot would restore from. (It goes by
the last good copy of the snapshot, :mod:`orchestrator.tune.good_state`, which it refreshes first.) Disk use
stays bounded by one checkpoint per finished trial plus the checkpoints a running trial wrote
since the last snapshot.

That pass alone let a study peak at several times its final size (bench/disk_peak.py: 83.7 MB
against 12.3 MB for six 30-epoch MLP trials; 243 MB against 40 MB reported for the quickstart):
every running trial's checkpoints pile up for a snapshot period plus a pass
interval, and short trials finish, checkpoints and all, inside that window. So the janitor also
deletes, at every controller step, each checkpoint this session registered that is older than
its trial's newest registered one and that no snapshot of this session names. Every snapshot
Tune writes goes first to the driver's staging directory, in the driver thread, just before the
step's callbacks run (``TuneController.step``: ``checkpoint()``, then ``on_step_end``), and is
copied to storage from there; so reading the staging copy at every step sees every snapshot that
can ever reach storage, and snapshots written later name only the newest checkpoint or a newer
one. Restores (a resume, a retry) therefore always find their checkpoint, and a finished trial is
down to its final checkpoint (which holds its per-example losses) plus the few that snapshots
named while it ran, which the next pass removes. Peak disk: one checkpoint per finished trial plus
:data:`orchestrator.cli.disk_estimate.PEAK_CHECKPOINTS_PER_RUNNING_TRIAL` per running trial
(``bench/disk_peak.py`` measures it; ``--dry-run`` estimates it).

Without ``num_to_keep`` Tune's per-trial checkpoint manager would also remember every checkpoint
(with that epoch's whole result) and write them all into every snapshot: 13 MB for the 30
100-epoch quickstart trials, growing with epochs x trials. So the janitor also drops the deleted
checkpoints from the live trials' managers (Tune internals: :mod:`orchestrator.tune.internals`).

:func:`remove_orphans` deletes, after an experiment finished, trial directories that its final
snapshot does not list: an Optuna restore re-generates the trials created after the last
snapshot under new ids (same parameters), leaving the first attempts' directories behind.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import posixpath
import time
from typing import Any

import pyarrow.fs as pafs
from ray.tune import Callback

from orchestrator.tune.diskfull import is_no_space
from orchestrator.tune.good_state import keep_good_state, read_good_snapshot
from orchestrator.tune.internals import (
    checkpoint_index,
    forget_checkpoints_before,
    latest_checkpoint_index,
    latest_checkpoint_name,
)
from results.tables.snapshot import SNAPSHOT_PATTERN, TUNE_ENDED, read_snapshot

_LOCAL = pafs.LocalFileSystem()
logger = logging.getLogger(__name__)


class CheckpointJanitor(Callback):
    """A Tune Callback that prunes superseded checkpoints (see the module docstring).

    Stateless across restores (``get_state`` is None); it finds the experiment directory from
    the trials' storage context, so it follows a study that was moved between sessions.
    """

    def __init__(self, interval_s: float = 15.0):
        self.interval_s = interval_s
        self._last = time.monotonic()
        self._pruned: dict[str, int] = {}  # trial id -> the restore point pruned up to
        # trial id -> (trial, {index: (fs, path)}): checkpoints this session registered, not deleted
        self._written: dict[str, tuple[Any, dict[int, tuple[pafs.FileSystem, str]]]] = {}
        # trial id -> the checkpoint indices some snapshot of this session names
        self._named: dict[str, set[int]] = {}
        self._staged: tuple[str, int, int] | None = None  # staging snapshot read: name, mtime, size

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks into tuner.pkl
        return {"interval_s": self.interval_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info):
        # Called before Tune registers it; it becomes a candidate once a newer one is registered.
        index = checkpoint_index(posixpath.basename(checkpoint.path.rstrip("/")))
        if index is not None:
            entry = self._written.setdefault(trial.trial_id, (trial, {}))
            entry[1][index] = (checkpoint.filesystem, checkpoint.path)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # A finished trial is never restored: its manager needs only its final checkpoint.
        latest = latest_checkpoint_index(trial)
        if latest is not None:
            forget_checkpoints_before(trial, latest)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if not trials:
            return
        try:
            self._prune_superseded(trials[0].storage.experiment_driver_staging_path)
        except Exception as exc:  # never stop a study; the next step retries
            if not is_no_space(exc):
                logger.warning("checkpoint cleanup failed; will retry", exc_info=True)
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return
        self._last = now
        fs, exp_path = trials[0].storage.storage_filesystem, trials[0].storage.experiment_fs_path
        try:
            staging = trials[0].storage.experiment_driver_staging_path
            keep_good_state(fs, exp_path, staging)  # first: pruning goes by that copy
            restore_points = prune_checkpoints(fs, exp_path, self._pruned, good=True)
            self._pruned.update(restore_points)
            for trial in trials:
                if trial.trial_id in restore_points:
                    forget_checkpoints_before(trial, restore_points[trial.trial_id])
            self._drop_pruned(restore_points)
        except Exception as exc:  # cleanup must never stop a study; the next pass retries
            if is_no_space(exc):  # a full disk: DiskGuard stops the study with its own line
                return
            logger.warning("checkpoint cleanup failed; will retry", exc_info=True)

    def _prune_superseded(self, staging_path: str) -> None:
        """Delete the checkpoints this session registered that are older than their trial's
        newest registered one and that no snapshot of this session names (module docstring)."""
        if not self._written:
            return
        if not self._read_staged(staging_path):  # first: every snapshot written so far is known
            return
        for trial_id, (trial, written) in list(self._written.items()):
            latest = latest_checkpoint_index(trial)
            if latest is None:
                continue
            named = self._named.get(trial_id, set())
            for index in [i for i in written if i < latest and i not in named]:
                fs, path = written.pop(index)
                try:
                    fs.delete_dir(path)
                except FileNotFoundError:  # deleted meanwhile by the periodic pass
                    pass
            self._forget_if_settled(trial_id, latest)

    def _read_staged(self, staging_path: str) -> bool:
        """Note the checkpoints the driver's newest staged snapshot names, when it changed; False
        when there is none (Tune writes one at its first step: a later step without one means
        the staging directory is not where this reads, and nothing may be deleted)."""
        names = [n for n in _local_names(staging_path) if fnmatch.fnmatch(n, SNAPSHOT_PATTERN)]
        if not names:
            return False
        name = max(names)
        stat = os.stat(posixpath.join(staging_path, name))
        seen = (name, stat.st_mtime_ns, stat.st_size)
        if seen == self._staged:
            return True
        snapshot = read_snapshot(_LOCAL, staging_path, attempts=1)
        assert snapshot is not None  # written whole by this thread before the step's callbacks
        for t in snapshot.trials:
            if t.trial_id in self._written:
                index = checkpoint_index(latest_checkpoint_name(t.metadata))
                if index is not None:
                    self._named.setdefault(t.trial_id, set()).add(index)
        self._staged = seen
        return True

    def _drop_pruned(self, restore_points: dict[str, int]) -> None:
        """Forget what the periodic pass deleted (everything before a trial's restore point)."""
        for trial_id, keep_from in restore_points.items():
            if trial_id in self._named:
                self._named[trial_id] = {i for i in self._named[trial_id] if i >= keep_from}
            if trial_id in self._written:
                written = self._written[trial_id][1]
                for index in [i for i in written if i < keep_from]:
                    del written[index]
                self._forget_if_settled(trial_id, keep_from)

    def _forget_if_settled(self, trial_id: str, latest: int) -> None:
        """Stop tracking an ended trial that holds only its final checkpoint."""
        trial, written = self._written[trial_id]
        if trial.status in TUNE_ENDED and set(written) <= {latest}:
            del self._written[trial_id]
            self._named.pop(trial_id, None)


def prune_checkpoints(
    fs: pafs.FileSystem, exp_path: str, pruned: dict[str, int] | None = None, good: bool = False
) -> dict[str, int]:
    """Delete checkpoints older than each trial's restore point in the newest stored snapshot
    (with `good`: in its last good copy, :mod:`orchestrator.tune.good_state`).

    Returns trial id -> restore point (checkpoint index) for the trials that have one; trials
    without a registered checkpoint, and trials the snapshot does not list, are left alone.
    `pruned` (trial id -> restore point) names trials already pruned up to a restore point: when
    the snapshot's is the same, the trial's directory is not listed again (every checkpoint
    written since is newer; on an object store each listing is a request).
    """
    pruned = pruned or {}
    snapshot = read_good_snapshot(fs, exp_path) if good else read_snapshot(fs, exp_path)
    if snapshot is None:
        return {}
    restore_points = {}
    for trial in snapshot.trials:
        keep_from = checkpoint_index(latest_checkpoint_name(trial.metadata))
        if keep_from is None or not trial.logdir:
            continue
        restore_points[trial.trial_id] = keep_from
        if pruned.get(trial.trial_id) == keep_from:
            continue
        trial_dir = posixpath.join(exp_path, trial.logdir)
        for name in checkpoint_names(fs, trial_dir):
            if checkpoint_index(name) < keep_from:
                try:
                    fs.delete_dir(posixpath.join(trial_dir, name))
                except FileNotFoundError:  # deleted meanwhile by another pass
                    pass
    return restore_points


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
        if "params.json" in inside or any(checkpoint_index(n) is not None for n in inside):
            fs.delete_dir(info.path)
            removed.append(info.base_name)
    return sorted(removed)


def _local_names(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def checkpoint_names(fs: pafs.FileSystem, trial_dir: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
    return [
        i.base_name
        for i in infos
        if i.type == pafs.FileType.Directory and checkpoint_index(i.base_name) is not None
    ]

"""Damaged checkpoints are set aside before a restore, so that a trial never fails on one.

Before ``Tuner.restore``, :func:`set_aside_damaged` checks, for each trial the stored snapshot
would resume, the checkpoint Tune restores it from (and, if that one is bad, the older ones
beside it) against their checksums (:mod:`trainables.state`), renames each bad ``state.pt`` to
``state.pt.corrupt`` and says so in one line naming the trial, the epoch and the file. The
trainable then restores from the newest good checkpoint, or from the start: the same numbers
either way (:mod:`trainables.tune_trainable`).
"""

from __future__ import annotations

import os
import posixpath

import pyarrow.fs as pafs

from orchestrator.tune.internals import checkpoint_index, latest_checkpoint_name
from orchestrator.tune.janitor import checkpoint_names
from results.tables.snapshot import read_snapshot
from trainables.identity import trial_config, trial_key
from trainables.state import (
    SET_ASIDE_SUFFIX,
    STATE_FILE,
    CorruptCheckpoint,
    check_state,
    checkpoint_epoch,
    set_aside,
)


def set_aside_damaged(fs: pafs.FileSystem, exp_path: str) -> list[str]:
    """Set aside the damaged checkpoints a restore would read (module docstring); one line per
    bad file. Checks local storage only: on remote storage the trainable checks (its line goes
    to the worker's log)."""
    snapshot = read_snapshot(fs, exp_path) if isinstance(fs, pafs.LocalFileSystem) else None
    lines = []
    for trial in snapshot.trials if snapshot else ():
        restore_from = checkpoint_index(latest_checkpoint_name(trial.metadata))
        if trial.tune_status == "TERMINATED" or restore_from is None or not trial.logdir:
            continue
        trial_dir = posixpath.join(exp_path, trial.logdir)
        names = [n for n in checkpoint_names(fs, trial_dir) if checkpoint_index(n) <= restore_from]
        bad: list[CorruptCheckpoint] = []
        resume_from = "the start"
        for name in sorted(names, key=checkpoint_index, reverse=True):
            directory = posixpath.join(trial_dir, name)
            try:
                check_state(directory)
            except CorruptCheckpoint as exc:
                if not os.path.exists(exc.path) and os.path.exists(f"{exc.path}{SET_ASIDE_SUFFIX}"):
                    continue  # set aside by an earlier session
                bad.append(exc)
                continue
            epoch = checkpoint_epoch(directory)
            resume_from = f"the checkpoint of epoch {epoch if epoch is not None else name}"
            break
        key = trial_key(trial_config(trial.config))
        for exc in bad:
            if os.path.exists(exc.path):
                set_aside(exc.path)
            epoch = "?" if exc.epoch is None else exc.epoch
            lines.append(
                f"trial {key}: checkpoint of epoch {epoch} is damaged ({exc.reason}): {exc.path};"
                f" set aside as {STATE_FILE}{SET_ASIDE_SUFFIX}, resuming from {resume_from}"
            )
    return lines

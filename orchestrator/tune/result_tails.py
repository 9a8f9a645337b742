"""A resumed trial's ``result.json`` is mended before a restore, so that no epoch's line is lost.

Tune's JSON logger writes a trial's ``result.json`` in the driver's staging directory and copies
it into the trial directory with the rest of the run state, overwriting the copy in place. At a
resumed trial's start it fetches that copy back and appends to it (Ray 2.60,
``JsonLoggerCallback.log_trial_start``). A copy cut short by a full disk loses its last lines and
ends in a partial one. So, before a restore, :func:`mend_result_files`, for each trial the
snapshot would resume:

- cuts the file back to its last whole line: appended to, a partial line would sit in the middle
  of the file, where no reader can tell it from damage (:mod:`results.tables.history` drops a
  partial line only at the end);
- sets aside (``state.pt`` -> ``state.pt.corrupt``, :mod:`trainables.state`) each checkpoint
  written after a later epoch than the file's last line: resumed from it, the trial would never
  report the epochs in between again. The trainable then restores from its newest checkpoint
  left, or from the start, with the same numbers (:mod:`trainables.tune_trainable`), and reports
  every epoch after it again.

A trial directory without ``result.json`` (the trial's checkpoints reached storage, the driver's
copy of its results had not yet when the driver died) counts as a file with no line: Tune would
start a new file and resume from the newest checkpoint, losing every epoch before it, so every
checkpoint is set aside and the trial runs from its first epoch.
"""

from __future__ import annotations

import json
import posixpath

import pyarrow.fs as pafs

from orchestrator.tune.janitor import checkpoint_names
from orchestrator.tune.state_files import read_bytes, write_atomic
from results.tables.history import RESULT_FILE
from results.tables.snapshot import read_snapshot
from trainables.state import CHECKSUM_FILE, SET_ASIDE_SUFFIX, STATE_FILE


def mend_result_files(fs: pafs.FileSystem, exp_path: str) -> list[str]:
    """Mend the ``result.json`` of each trial the newest snapshot would resume (module docs);
    one line for each trial mended."""
    snapshot = read_snapshot(fs, exp_path)
    lines = []
    for trial in snapshot.trials if snapshot else ():
        if trial.tune_status == "TERMINATED" or not trial.logdir:
            continue
        trial_dir = posixpath.join(exp_path, trial.logdir)
        path = posixpath.join(trial_dir, RESULT_FILE)
        missing = False
        try:
            data = read_bytes(fs, path)
        except FileNotFoundError:
            data, missing = b"", True
        said = []
        keep = data.rfind(b"\n") + 1
        if keep < len(data):
            write_atomic(fs, path, data[:keep])
            said.append(f"ended in a line cut short ({len(data) - keep} bytes), cut back")
        last = _last_epoch(data[:keep])
        aside = _set_aside_after(fs, trial_dir, last)
        if aside:
            where = "is missing" if missing else f"ends at epoch {last}"
            which = "from the first" if missing else "between"
            said.append(
                f"{where}: set aside the checkpoints of epochs "
                f"{', '.join(map(str, aside))}, so that the trial reports the epochs {which} again"
            )
        if said:
            lines.append(
                f"{posixpath.basename(exp_path)}: {trial.logdir}/{RESULT_FILE} " + "; ".join(said)
            )
    return lines


def _last_epoch(data: bytes) -> int:
    """The epoch of the last whole line (-1 when there is none)."""
    for line in reversed(data.splitlines()):
        try:
            return int(json.loads(line)["epoch"])
        except (ValueError, KeyError, TypeError):
            continue
    return -1


def _set_aside_after(fs: pafs.FileSystem, trial_dir: str, last: int) -> list[int]:
    """Set aside the ``state.pt`` of each checkpoint in `trial_dir` written after an epoch
    later than `last`; their epochs."""
    aside = []
    for name in sorted(checkpoint_names(fs, trial_dir)):
        directory = posixpath.join(trial_dir, name)
        try:
            epoch = int(
                json.loads(read_bytes(fs, posixpath.join(directory, CHECKSUM_FILE)))["epoch"]
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
        state = posixpath.join(directory, STATE_FILE)
        if epoch > last and fs.get_file_info(state).type == pafs.FileType.File:
            fs.move(state, state + SET_ASIDE_SUFFIX)
            aside.append(epoch)
    return aside

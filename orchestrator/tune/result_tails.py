"""A resumed trial's ``result.json`` is cut back to its last whole line before a restore.

Tune's JSON logger writes a trial's ``result.json`` in the driver's staging directory and copies
it into the trial directory with the rest of the run state, overwriting the copy in place. At a
resumed trial's start it fetches that copy back and appends to it (Ray 2.60,
``JsonLoggerCallback.log_trial_start``). A copy cut short by a full disk ends in a partial line;
appended to, that line would sit in the middle of the file, where no reader can tell it from
damage (:mod:`results.tables.history` drops a partial line only at the end). So before a restore
:func:`cut_partial_lines` cuts each unfinished trial's file back to its last whole line. The
lines lost with it are reported again: the trial resumes from a checkpoint no newer than the last
good run state (:mod:`orchestrator.tune.good_state`), and every epoch after that checkpoint runs
again (a reader keeps the last line of each epoch).
"""

from __future__ import annotations

import posixpath

import pyarrow.fs as pafs

from orchestrator.tune.state_files import read_bytes, write_atomic
from results.tables.history import RESULT_FILE
from results.tables.snapshot import read_snapshot


def cut_partial_lines(fs: pafs.FileSystem, exp_path: str) -> list[str]:
    """Cut the ``result.json`` of each trial the newest snapshot would resume (not finished)
    back to its last whole line where it ends in a partial one; one line saying so for each."""
    snapshot = read_snapshot(fs, exp_path)
    lines = []
    for trial in snapshot.trials if snapshot else ():
        if trial.tune_status == "TERMINATED" or not trial.logdir:
            continue
        path = posixpath.join(exp_path, trial.logdir, RESULT_FILE)
        try:
            with fs.open_input_file(path) as f:
                size = f.size()
                whole = size == 0 or f.read_at(1, size - 1) == b"\n"
        except FileNotFoundError:
            continue
        if whole:
            continue
        data = read_bytes(fs, path)
        keep = data.rfind(b"\n") + 1
        write_atomic(fs, path, data[:keep])
        lines.append(
            f"{posixpath.basename(exp_path)}: {trial.logdir}/{RESULT_FILE} ended in a line cut "
            f"short ({len(data) - keep} bytes); cut back to its last whole line"
        )
    return lines

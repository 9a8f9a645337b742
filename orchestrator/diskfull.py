"""A full disk stops the driver at once, with one line, and a resume loses nothing.

Without this, a trial whose checkpoint write fails for lack of space is retried, fails again,
and so on through every remaining trial, for minutes. :class:`DiskGuard` (a Tune Callback)
watches each trial failure; the first one caused by a full disk (``ENOSPC``, or ``EDQUOT``: a
quota) stops the experiment the way Ctrl-C does (Tune's graceful stop: the trials stay
unfinished in the snapshot, none is marked failed for good) and silences Tune's logging of the
writes that fail meanwhile. The driver then ends with exit code :data:`DISK_FULL` (75, "try
again later") and one line: what could not be written, how much space is free there, and the
command that resumes. The run state Tune needs is never lost to a cut-short write: its last good
copy is kept (:mod:`orchestrator.good_state`) and put back before the resume.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
from typing import Any

from ray.tune import Callback

DISK_FULL = 75
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXT = ("No space left on device", "Disk quota exceeded", "[Errno 28]", "[errno 28]")
_stopped: list[str] = []  # what could not be written, once the disk filled (this process)


def stop_reason() -> str | None:
    """What could not be written, when a full disk stopped the experiment; else None."""
    return _stopped[0] if _stopped else None


def free_space(path: str) -> str:
    """``"12.3 MB free"`` on the filesystem holding `path` (its nearest existing ancestor)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return "free space unknown"
    return f"{free / 1e6:.1f} MB free"


def no_space_error(trial: Any) -> str | None:
    """``Class: message`` of the trial's latest error when a full disk caused it, else None."""
    exc = None
    try:
        if trial.pickled_error_file and os.path.isfile(trial.pickled_error_file):
            from ray import cloudpickle

            with open(trial.pickled_error_file, "rb") as f:
                exc = cloudpickle.load(f)
        with open(trial.error_file or "") as f:
            text = f.read()
    except Exception:
        text = str(exc or "")
    if not any(marker in text for marker in _NO_SPACE_TEXT):
        return None
    cause = getattr(exc, "cause", None)
    exc = cause if isinstance(cause, BaseException) else exc
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else 'no space left'}"[:300]


class DiskGuard(Callback):
    """Stops the experiment at the first trial failure caused by a full disk (module docs)."""

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._check(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._check(trial)

    def _check(self, trial: Any) -> None:
        why = no_space_error(trial)
        if why is None or _stopped:
            return
        from trainables.identity import trial_config, trial_key

        where = trial.storage.trial_fs_path
        _stopped.append(
            f"trial {trial_key(trial_config(trial.config))} could not write its checkpoint or "
            f"results under {where} ({why}); {free_space(where)} there"
        )
        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)  # the failing syncs
        logging.getLogger("ray.train").setLevel(logging.CRITICAL)
        os.kill(os.getpid(), signal.SIGINT)  # Tune's graceful stop, as Ctrl-C

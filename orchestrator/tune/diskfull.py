"""A full disk stops the driver at once, with one line, and a resume loses nothing.

Without this, a trial whose checkpoint write fails for lack of space is retried, fails again,
and so on through every remaining trial, for minutes. :class:`DiskGuard` (a Tune Callback)
watches each trial failure; the first one caused by a full disk (``ENOSPC``, or ``EDQUOT``: a
quota) stops the experiment the way Ctrl-C does (Tune's graceful stop: the trials stay
unfinished in the snapshot, none is marked failed for good) and silences Tune's logging of the
writes that fail meanwhile. The driver then ends with exit code :data:`DISK_FULL` (75, "try
again later") and one line: what could not be written, how much space is free there, and the
command that resumes. The run state Tune needs is never lost to a cut-short write: its last good
set is kept, refreshed every second (:mod:`orchestrator.tune.good_state`), and put back whole before
the resume, which then keeps every trial that set records as finished.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import time
from collections.abc import Iterator
from typing import Any

from ray.tune import Callback

from orchestrator.tune.good_state import keep_good_state

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


DISK_FULL_PREFIX = "the disk is full: "


def disk_full_error(what: str, study_uri: str) -> OSError:
    """The driver's one disk-full line (what failed, the space left) with the resume command."""
    resume = f"free space, then: prunetune resume {study_uri}"
    return OSError(errno.ENOSPC, f"{DISK_FULL_PREFIX}{what}. {resume}")


def is_no_space(exc: BaseException) -> bool:
    """True for an error of a write that failed for lack of space."""
    text = str(exc)
    return getattr(exc, "errno", None) in NO_SPACE_ERRNOS or any(m in text for m in _NO_SPACE_TEXT)


class DiskGuard(Callback):
    """Stops the experiment at the first write that fails for lack of space (module docs), and
    refreshes the run state's last good set every `interval_s` (:mod:`orchestrator.tune.good_state`)
    so that it is never more than a few seconds behind Tune's."""

    def __init__(self, interval_s: float = 1.0):
        self.interval_s = interval_s
        self._last = 0.0

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.interval_s or not trials or _stopped:
            return
        self._last = now
        storage = trials[0].storage
        try:
            keep_good_state(
                storage.storage_filesystem,
                storage.experiment_fs_path,
                storage.experiment_driver_staging_path,
            )
        except Exception as exc:  # the next pass retries
            if not is_no_space(exc):
                logging.getLogger(__name__).warning("keeping the run state failed: %s", exc)
                return
            where = storage.experiment_fs_path
            stop(f"the copy of the run state could not be written under {where} ({exc})", where)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._check(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._check(trial)

    def _check(self, trial: Any) -> None:
        why = no_space_error(trial)
        if why is None:
            return
        from trainables.identity import trial_config, trial_key

        where = trial.storage.trial_fs_path
        key = trial_key(trial_config(trial.config))
        stop(f"trial {key} could not write its checkpoint or results under {where} ({why})", where)


class SyncWatch(logging.Filter):
    """Tune's copies of the run state to storage fail in a background sync whose error Ray only
    logs (``ray.train``, with a traceback): a full disk there stops the study too, with the one
    line instead. Installed on Ray's syncer loggers while ``fit`` runs (:func:`watching`)."""

    LOGGERS = ("ray.train._internal.syncer", "ray.tune.execution.experiment_state")

    def __init__(self, where: str):
        super().__init__()
        self.where = where

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]}"
        if not any(marker in text for marker in _NO_SPACE_TEXT):
            return True
        stop(f"Tune's run state could not be copied to {self.where} (No space left on device)",
             self.where)  # fmt: skip
        return False


@contextlib.contextmanager
def watching(where: str) -> Iterator[None]:
    """:class:`SyncWatch` on Ray's syncer loggers for the duration."""
    watch = SyncWatch(where)
    loggers = [logging.getLogger(name) for name in SyncWatch.LOGGERS]
    for logger in loggers:
        logger.addFilter(watch)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(watch)


def stop(what: str, where: str) -> None:
    """Record the one line (what failed, the space left at `where`) and stop the experiment as
    Ctrl-C does; only the first call of this process counts."""
    if _stopped:
        return
    _stopped.append(f"{what}; {free_space(where)} there")
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)  # the failing syncs meanwhile
    logging.getLogger("ray.train").setLevel(logging.CRITICAL)
    os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"  # the running trials' failed writes
    os.kill(os.getpid(), signal.SIGINT)  # Tune's graceful stop

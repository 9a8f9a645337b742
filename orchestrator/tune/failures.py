"""One line per failed trial, in place of Ray's traceback.

A trial that fails gets one line instead of Ray's traceback (the Tuner turns Tune's printing of
it off unless ``-v``): its key, whether it is retried, the exception's class and first line, and
the file that holds the whole traceback::

    [trials] trial 3340ddd08e77 failed (failure 1 of at most 3, retried from its last checkpoint):
    ActorDiedError: The actor died unexpectedly before finishing this task.; traceback: DIR/error.txt

(one line on the terminal). :class:`orchestrator.tune.progress.ProgressCallback` prints it.
"""

from __future__ import annotations

import os
import posixpath
from typing import Any


def failure_line(experiment: str, trial: Any, retried: bool) -> str:
    """The one line about a failed Tune trial (module docstring)."""
    from trainables.identity import trial_config, trial_key

    try:
        key = trial_key(trial_config(trial.config))
    except Exception:  # a config that is not a trial's: name it by Tune's id
        key = trial.trial_id
    attempts = f"failure {trial.num_failures} of at most {trial.max_failures + 1}"
    then = "retried from its last checkpoint" if retried else "failed for good"
    where = posixpath.join(trial.storage.trial_fs_path, trial.run_metadata.error_filename or "")
    return f"[{experiment}] trial {key} failed ({attempts}, {then}): {_error(trial)}; traceback: {where}"


def _error(trial: Any) -> str:
    """``Class: first line of the message`` of the trial's latest error. Read from the driver's
    copy of Tune's error files (the callbacks run before Tune copies them to storage)."""
    exc = None
    try:
        if trial.pickled_error_file and os.path.isfile(trial.pickled_error_file):
            from ray import cloudpickle

            with open(trial.pickled_error_file, "rb") as f:
                exc = cloudpickle.load(f)
    except Exception:  # an error that does not unpickle here: its text below
        exc = None
    if exc is None:
        return _last_line(trial.error_file)
    cause = getattr(exc, "cause", None)
    exc = cause if isinstance(cause, BaseException) else exc
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first[:300]}"


def _last_line(path: str | None) -> str:
    try:
        with open(path or "") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return "see the traceback file"
    return lines[-1][:300] if lines else "see the traceback file"

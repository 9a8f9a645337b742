"""A concise progress line while a study runs: a Tune Callback, not Tune's progress reporter.

Tune 2.60's new output engine ignores a custom ``progress_reporter`` (ray issue #38202), so the
line comes from ``on_step_end``, at most every `interval_s` seconds, plus one at the end::

    [trials] 14/72 finished (12 ok, 2 diverged), 2 running, 0 error, 56 pending | 1m05s, ETA 4m30s

The ETA is (trials left) x (mean run time of the trials finished in this session) / (trials
running), so it is blank until one trial has finished here. Counts come from the Trial objects
Tune passes in (which after a restore include the trials finished before it), classified by
:func:`results.tables.status.trial_status`, the rule every other count uses.

A trial that fails gets one line (:mod:`orchestrator.tune.failures`).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ray.tune import Callback

from orchestrator.tune.diskfull import no_space_error
from orchestrator.tune.failures import failure_line
from results.tables.status import count_statuses, trial_status


def format_progress(
    experiment: str,
    counts: dict[str, int],
    total: int,
    elapsed_s: float,
    eta_s: float | None,
) -> str:
    """The progress line (pure; tested directly). `counts`: ``results.tables.status`` -> trials."""
    finished = counts["ok"] + counts["diverged"]
    active = counts["running"] + counts["stopped"]
    pending = max(0, total - finished - active - counts["error"])
    eta = f", ETA {_duration(eta_s)}" if eta_s is not None else ""
    stopped = f", {counts['stopped']} stopped" if counts["stopped"] else ""
    return (
        f"[{experiment}] {finished}/{total} finished ({counts['ok']} ok, {counts['diverged']} "
        f"diverged), {counts['running']} running{stopped}, {counts['error']} error, "
        f"{pending} pending | {_duration(elapsed_s)}{eta}"
    )


def estimate_eta(remaining: int, running: int, trial_seconds: list[float]) -> float | None:
    """Seconds left: remaining trials x mean trial time / concurrency (None without data)."""
    if not trial_seconds or remaining <= 0:
        return 0.0 if remaining <= 0 else None
    return remaining * (sum(trial_seconds) / len(trial_seconds)) / max(1, running)


class ProgressCallback(Callback):
    """Prints :func:`format_progress` lines to `stream` (stderr by default)."""

    def __init__(self, experiment: str, interval_s: float = 5.0, stream: TextIO | None = None):
        self.experiment = experiment
        self.interval_s = interval_s
        self._stream = stream
        self._total = 0
        self._start = time.monotonic()
        self._last_print = float("-inf")
        self._started: dict[str, float] = {}
        self._durations: list[float] = []

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks into tuner.pkl
        state = self.__dict__.copy()
        state["_stream"] = None
        return state

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info: Any) -> None:
        self._total = int(total_num_samples or num_samples or 0)
        self._start = time.monotonic()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._started[trial.trial_id] = time.monotonic()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        started = self._started.pop(trial.trial_id, None)
        if started is not None:
            self._durations.append(time.monotonic() - started)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if no_space_error(trial) is None:  # a full disk has its own line (DiskGuard)
            self._say(failure_line(self.experiment, trial, retried=True))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if no_space_error(trial) is None:
            self._say(failure_line(self.experiment, trial, retried=False))

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self._last_print >= self.interval_s:
            self._print(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._print(trials)

    def _print(self, trials: list) -> None:
        self._last_print = time.monotonic()
        counts = count_trials(trials)
        total = max(self._total, len(trials))
        remaining = total - counts["ok"] - counts["diverged"] - counts["error"]
        eta = estimate_eta(remaining, counts["running"], self._durations)
        self._say(
            format_progress(self.experiment, counts, total, self._last_print - self._start, eta)
        )

    def _say(self, line: str) -> None:
        print(line, file=self._stream or sys.stderr, flush=True)


def count_trials(trials: list) -> dict[str, int]:
    """Trials per ``results.tables.status`` over Tune Trial objects."""
    return count_statuses(
        trial_status(
            t.status,
            (t.last_result or {}).get("status"),
            bool((t.last_result or {}).get("training_iteration")),
        )
        for t in trials
    )


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"

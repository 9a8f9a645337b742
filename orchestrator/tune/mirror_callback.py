"""The Tune Callback that keeps ``<study>/optuna.db`` current while the Optuna search runs.

What the mirror holds, and why it follows Tune's stored snapshot and never the live trials:
:mod:`orchestrator.optuna_mirror.mirror`. This module is its only tie to Ray.
"""

from __future__ import annotations

import logging
import math
import posixpath
import time
from collections.abc import Iterable
from typing import Any

from ray.tune import Callback

from orchestrator.optuna_mirror.db import Memo, write_mirror
from orchestrator.optuna_mirror.mirror import MirrorSpec, MirrorTrial, mirror_trials, snapshot_view
from results.tables.snapshot import TUNE_ENDED, newest_snapshot_info, read_snapshot
from trainables.identity import KeyCache

logger = logging.getLogger(__name__)


class OptunaMirror(Callback):
    """Updates ``optuna.db`` from the Optuna experiment's stored snapshot each time Tune stored a
    new one (looked for at most every `poll_s` seconds, at the end of a step of Tune's loop).

    It looks only while a trial has ended (live, as Tune's loop sees it) that the snapshot it read
    last does not show ended: the mirror holds ended trials only, and a trial that ended keeps its
    last result, so a newer snapshot with the same ended trials mirrors the same. Within one run
    the live ended trials only grow, and a snapshot is taken from them, so once the stored one
    shows every live ended trial, a later snapshot can differ only after another trial ends. A
    study thus lists the experiment directory for a few seconds after each trial ends (until the
    next snapshot is stored), not once a second throughout.

    Stateless across restores (the file is the state); it finds the study directory from the
    trials' storage context (``<study>/tune/optuna``), so it follows a study that was moved.
    """

    def __init__(self, spec: MirrorSpec, poll_s: float = 1.0):
        self.spec = spec
        self.poll_s = poll_s
        self._reset()

    def _reset(self) -> None:
        self._keys: KeyCache | None = None
        self._memo: Memo | None = None
        self._last: list[MirrorTrial] | None = None  # what it wrote last
        self._seen: tuple[str, int | None, int | None] | None = None  # the snapshot it read last
        self._polled = -math.inf  # time.monotonic() of the last look
        self._ended: frozenset[tuple[str, str]] | None = None  # ended trials of what it read last

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks into tuner.pkl
        return {"spec": self.spec, "poll_s": self.poll_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if not trials or now - self._polled < self.poll_s:
            return
        if _ended((t.trial_id, t.status) for t in trials) == self._ended:
            return  # the stored snapshot it mirrored shows every trial that ended: nothing new
        self._polled = now
        self.update(trials[0].storage)

    def update(self, context: Any) -> None:
        """Mirror the newest stored snapshot of the experiment `context` (a trial's storage
        context) belongs to, unless it was mirrored already."""
        try:
            fs, exp_path = context.storage_filesystem, context.experiment_fs_path
            newest = newest_snapshot_info(fs, exp_path)
            if newest is None:
                return
            seen = (newest.base_name, newest.mtime_ns, newest.size)
            if seen == self._seen:
                return
            snapshot = read_snapshot(fs, exp_path)
            self._keys = self._keys or KeyCache()
            self._memo = self._memo or Memo()
            views = [snapshot_view(t) for t in snapshot.trials] if snapshot else []
            mirrored = mirror_trials(self.spec, views, self._keys)
            if mirrored != self._last:  # else: a seed ended, its suggestion has not
                study_path = posixpath.dirname(posixpath.dirname(exp_path))
                write_mirror(fs, study_path, self.spec.study, mirrored, self._memo)
                self._last = mirrored
            self._seen = seen
            self._ended = _ended(
                (t.trial_id, t.tune_status) for t in (snapshot.trials if snapshot else ())
            )
        except Exception:  # the mirror must never stop a study; the next update repairs it
            logger.warning("optuna.db not updated; the next update repairs it", exc_info=True)


def _ended(trials: Iterable[tuple[str, str]]) -> frozenset[tuple[str, str]]:
    """The (trial id, Tune status) pairs of the trials that ended."""
    return frozenset((trial_id, status) for trial_id, status in trials if status in TUNE_ENDED)

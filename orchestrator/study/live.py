"""The live report: a running study's Parquet tables and ``report.html``, refreshed every
``report_every`` seconds by the driver while the trials run.

A refresh is what ``prunetune aggregate`` then ``prunetune report`` do (:func:`results.api.
export_study`, :func:`results.api.write_report`): it reads only Tune's stored state (the
experiment snapshots and the trials' ``result.json``; :mod:`results.tables.snapshot`) and writes each
file atomically (:mod:`results.tables.storage`), so a reader, or an ``aggregate`` run meanwhile, never
sees a half-written file. The report it writes carries the banner of
:func:`results.tables.status.running_banner` and a title starting with ``running:``.

Rules, with their reasons:

- One daemon thread in the driver refreshes; the next refresh starts ``report_every`` seconds
  after the previous one ended, so refreshes never overlap, and one slower than the interval
  delays the next instead of piling up.
- The trials never wait for it: they run in Ray's worker processes and the thread only reads
  Tune's files. What it costs them (CPU and the driver's interpreter lock, which Tune's result
  handling also needs) is measured by ``bench/sweep_overhead.py``.
- Its failures never stop the study: the first one is printed to stderr in one line, later ones
  are silent (the final export still runs, and fails loudly, when the study ends).
- Before any experiment has a snapshot there is nothing to show; such a refresh is skipped.
- :meth:`LiveReport.stop` waits for a refresh in progress, so the final report, written after it,
  is never overwritten by a live one.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import TextIO

from orchestrator.study.directory import Study
from orchestrator.study.status import expected_trials
from results.api import export_study, write_report
from results.tables.snapshot import phase
from results.tables.status import running_banner
from search_spaces.expand import StudyPlan

MAX_REASON = 300  # characters of an exception's message in the one failure line


class LiveReport:
    """Refreshes a running study's tables and report every `interval_s` seconds (see the module
    docstring); ``interval_s`` 0 never refreshes. `expected`: the study's trial count when
    complete (trials a searcher has not created yet show as pending)."""

    def __init__(
        self, study: Study, expected: int, interval_s: float, stream: TextIO | None = None
    ) -> None:
        self.study = study
        self.expected = expected
        self.interval_s = interval_s
        self.refreshes = 0  # reports written so far
        self._stream = stream
        self._failed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="prunetune-live-report")
        self._thread.daemon = True  # a driver that is exiting does not wait for a refresh
        self._thread.start()

    def stop(self) -> None:
        """Stop refreshing; returns after a refresh in progress has finished."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.refresh()

    def refresh(self) -> bool:
        """Export the tables and write the banner report once; False when skipped or failed."""
        try:
            fs = self.study.fs
            if not any(
                phase(fs, self.study.tune_path(e)) == "snapshotted" for e in self.study.experiments
            ):
                return False
            taken = datetime.now(timezone.utc)
            summary = export_study(self.study.uri)
            counts = dict(summary.by_status)
            counts["pending"] += max(0, self.expected - summary.n_trials)
            write_report(self.study.uri, running=running_banner(counts, self.expected, taken))
        except Exception as exc:  # a refresh must never stop the study (module docstring)
            self._fail(exc)
            return False
        self.refreshes += 1
        return True

    def _fail(self, exc: Exception) -> None:
        if self._failed:
            return
        self._failed = True
        reason = " ".join(str(exc).split())[:MAX_REASON]
        print(
            f"prunetune: live report refresh failed ({type(exc).__name__}: {reason}); the study "
            "goes on, the tables and report are written when it ends",
            file=self._stream or sys.stderr,
            flush=True,
        )


@contextlib.contextmanager
def live_report(study: Study, plan: StudyPlan) -> Iterator[LiveReport]:
    """Refresh the study's tables and report every ``report_every`` seconds of its spec while
    the block runs (the block runs the experiments)."""
    expected = sum(expected_trials(plan, e) for e in study.experiments)
    live = LiveReport(study, expected, study.spec.report_every)
    live.start()
    try:
        yield live
    finally:
        live.stop()

"""The live report's share of the sweep-overhead bench (``bench/sweep_overhead.py``): what the
driver's refreshes of the tables and report.html (``report_every``) cost the trials."""

from __future__ import annotations

import os
import statistics
import time


def driver_lag(study_dir: str, seconds: float = 8.0) -> dict:
    """How late a driver thread wakes from a 2 ms sleep while live refreshes of `study_dir` (a
    finished study) run back to back in another thread, and without them. Tune's controller is
    such a thread: while it waits for the interpreter lock a refresh holds, trials wait for it."""
    import threading

    from orchestrator.study.directory import open_existing
    from orchestrator.study.live import LiveReport

    study = open_existing(study_dir)
    live = LiveReport(study, expected=1, interval_s=0)
    done = threading.Event()

    def refresh() -> None:
        while not done.is_set():
            live.refresh()

    def lags_ms() -> list[float]:
        lags, end = [], time.perf_counter() + seconds
        while time.perf_counter() < end:
            start = time.perf_counter()
            time.sleep(0.002)
            lags.append(1e3 * (time.perf_counter() - start - 0.002))
        return sorted(lags)

    quiet = lags_ms()
    worker = threading.Thread(target=refresh)
    worker.start()
    busy = lags_ms()
    done.set()
    worker.join()

    def summary(lags: list[float]) -> dict:
        return {
            "mean_ms": statistics.mean(lags),
            "p99_ms": lags[int(0.99 * len(lags))],
            "max_ms": lags[-1],
        }

    return {
        "refresh_s": seconds / max(1, live.refreshes),  # wall seconds per back-to-back refresh
        "without_refreshes": summary(quiet),
        "while_refreshing": summary(busy),
    }


def live_comparison(plain: list[dict], live: list[dict]) -> dict:
    """The live runs against the plain ones (summed over the runs of each): ratios > 1 are what
    the refreshes cost."""

    def total(runs: list[dict], key: str) -> float:
        return sum(r[key] for r in runs)

    refreshes = total(live, "refreshes")
    extra_cpu = total(live, "driver_cpu_s") - total(plain, "driver_cpu_s")
    return {
        "report_every_s": live[0]["report_every_s"],
        "refreshes": [r["refreshes"] for r in live],
        "cpu_per_refresh_s": extra_cpu / refreshes if refreshes else None,
        "cpu_share": extra_cpu / (total(live, "fit_s") * (os.cpu_count() or 1)),
        "ratio_wall": total(live, "wall_s") / total(plain, "wall_s"),
        "ratio_fit": total(live, "fit_s") / total(plain, "fit_s"),
        "ratio_per_trial": total(live, "per_trial_s") / total(plain, "per_trial_s"),
        "plain_fit_s": [r["fit_s"] for r in plain],
        "live_fit_s": [r["fit_s"] for r in live],
        "plain_driver_cpu_s": [r["driver_cpu_s"] for r in plain],
        "live_driver_cpu_s": [r["driver_cpu_s"] for r in live],
        "plain_per_trial_s": [r["per_trial_s"] for r in plain],
        "live_per_trial_s": [r["per_trial_s"] for r in live],
    }

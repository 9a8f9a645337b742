"""The best and worst gain so far, computed from the study's Tune results (nothing written).

`prunetune status` must not write into a study another process may be running, so instead of
exporting it builds the trials table in memory with the results package (the same code the
export runs, without the fits).
"""

from __future__ import annotations

import math
import posixpath
from dataclasses import dataclass

from results import storage


@dataclass(frozen=True)
class GainExtremes:
    best: float
    best_trial: str  # trial_key
    best_instability: float | None
    worst: float
    worst_trial: str
    worst_instability: float | None
    n: int  # pruned trials with a gain

    def line(self) -> str:
        return (
            f"gain: best {self.best:+.4f} (trial {self.best_trial}, "
            f"instability {_num(self.best_instability)}), worst {self.worst:+.4f} "
            f"(trial {self.worst_trial}, instability {_num(self.worst_instability)}); "
            f"n = {self.n} pruned trials with a gain"
        )


def gain_extremes(study_dir: str) -> GainExtremes | None:
    """Best / worst gain over pruned trials whose gain is known; None when there is none."""
    from results.export import build_tables
    from results.history import read_histories
    from results.tune_reader import read_tune_study

    fs, path = storage.resolve(study_dir)
    meta = storage.read_meta(fs, path, study_dir)
    tune = read_tune_study(fs, posixpath.join(path, "tune"))
    if not tune.trials:
        return None
    history = read_histories(fs, [t.result_path for t in tune.trials])
    trials = build_tables(tune.trials, history, meta.spec_hash).trials.to_pylist()
    rows = [
        r
        for r in trials
        if not r["is_baseline"] and r["gain"] is not None and math.isfinite(r["gain"])
    ]
    if not rows:
        return None
    best = max(rows, key=lambda r: r["gain"])
    worst = min(rows, key=lambda r: r["gain"])
    return GainExtremes(
        best=best["gain"],
        best_trial=best["trial_key"],
        best_instability=best["mean_instability"],
        worst=worst["gain"],
        worst_trial=worst["trial_key"],
        worst_instability=worst["mean_instability"],
        n=len(rows),
    )


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"

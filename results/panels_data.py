"""The report's correlation panels, each mirroring a figure of Bartoldson et al. 2020 (pure).

Every panel is computed from the trials table's columns (``results.export.trial_arrays``) over
``ok`` trials, and is None (or empty) when the study lacks the dimension it shows:

- :func:`fig2` (Fig. 2): best test accuracy in run (``generalization``) vs mean stability of the
  pruned trials, one series, OLS line (95% band) and correlation per target, and the pooled line
  over all of them; the unpruned baselines as a reference series at stability 100 (not fitted:
  the official ``Figure_2.py`` leaves them out). Needs pruned trials of at least two targets.
- :func:`fig3` (Fig. 3): the same axes per retrain period (``pruning_period``), and per period the
  correlation (Pearson r with its Fisher-z 95% CI, Kendall tau) against the period's pruning rate
  (the mean ``pruning_rate`` of its trials). Needs pruned trials of at least two periods.
- :func:`fig6` (Fig. 6): per flatness measure some ok trial has, the measure vs mean stability and
  generalization vs the measure, over every ok trial: unpruned and scratch trials sit at stability
  100 by definition (``results.aggregate.by_definition``); one series per kind (and per target of
  the pruned ones), one pooled line and correlation.

Correlations (:class:`Corr`) are ``results.stats.pearson`` / ``kendall`` over a group's points
with finite x and y; lines are ``results.report_base.ols_band`` over the same points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from results import stats
from results.aggregate import by_definition, trial_kinds
from results.report_base import ols_band, text
from trainables.records import FLATNESS_KEYS


@dataclass(frozen=True)
class Corr:
    n: int  # points with finite x and y
    r: float
    r_p: float
    r_low: float  # 95% CI
    r_high: float
    tau: float
    tau_p: float


@dataclass(frozen=True)
class Series:
    label: str
    trial_id: tuple[str, ...]
    x: np.ndarray  # (n,), NaN = missing
    y: np.ndarray


@dataclass(frozen=True)
class Line:
    label: str
    corr: Corr
    x: np.ndarray  # (GRID,) or (0,) when undefined
    y: np.ndarray
    low: np.ndarray
    high: np.ndarray


@dataclass(frozen=True)
class Scatter:
    x: str  # trials columns
    y: str
    series: tuple[Series, ...]
    lines: tuple[Line, ...]
    webgl: bool


@dataclass(frozen=True)
class PeriodPanel:
    """Fig. 3: ``scatter`` holds one series and line per period, in period order."""

    scatter: Scatter
    period: np.ndarray  # (n_periods,)
    rate: np.ndarray  # mean pruning rate (%) per period, NaN = unknown


def correlation(x: np.ndarray, y: np.ndarray) -> Corr:
    """Pearson (with CI) and Kendall over the pairs where both are finite."""
    m = np.isfinite(x) & np.isfinite(y)
    r, rp, lo, hi = stats.pearson(x[m], y[m])
    tau, tp = stats.kendall(x[m], y[m])
    return Corr(int(m.sum()), r, rp, lo, hi, tau, tp)


def line(label: str, x: np.ndarray, y: np.ndarray) -> Line:
    m = np.isfinite(x) & np.isfinite(y)
    return Line(label, correlation(x, y), *ols_band(x[m], y[m]))


def _series(cols, label: str, idx: np.ndarray, x: str, y: str) -> Series:
    return Series(label, tuple(str(t) for t in cols["trial_id"][idx]), cols[x][idx], cols[y][idx])


def _pruned_ok(cols) -> np.ndarray:
    return (trial_kinds(cols) == "pruned") & (cols["status"] == "ok")


def fig2(cols: dict[str, np.ndarray], webgl_threshold: int) -> Scatter | None:
    pruned = _pruned_ok(cols)
    targets = sorted(set(cols["pruning_target"][pruned]))
    if len(targets) < 2:
        return None
    x, y = "mean_stability", "generalization"
    series, lines = [], []
    for target in targets:
        idx = np.flatnonzero(pruned & (cols["pruning_target"] == target))
        series.append(_series(cols, f"target {target}", idx, x, y))
        lines.append(line(f"target {target}", cols[x][idx], cols[y][idx]))
    lines.append(line("all pruned trials", cols[x][pruned], cols[y][pruned]))
    base = np.flatnonzero((trial_kinds(cols) == "unpruned") & (cols["status"] == "ok"))
    if len(base):
        series.append(_series(cols, "no pruning (not fitted)", base, x, y))
    return Scatter(x, y, tuple(series), tuple(lines), pruned.sum() > webgl_threshold)


def fig3(cols: dict[str, np.ndarray], webgl_threshold: int) -> PeriodPanel | None:
    pruned = _pruned_ok(cols) & (cols["pruning_method"] == "schedule")
    periods = np.unique(cols["pruning_period"][pruned])
    if len(periods) < 2:
        return None
    x, y = "mean_stability", "generalization"
    series, lines, rates = [], [], []
    for period in periods:
        idx = np.flatnonzero(pruned & (cols["pruning_period"] == period))
        label = f"period {text(int(period))}"
        series.append(_series(cols, label, idx, x, y))
        lines.append(line(label, cols[x][idx], cols[y][idx]))
        rate = cols["pruning_rate"][idx]
        rates.append(rate[np.isfinite(rate)].mean() if np.isfinite(rate).any() else np.nan)
    scatter = Scatter(x, y, tuple(series), tuple(lines), pruned.sum() > webgl_threshold)
    return PeriodPanel(scatter, periods, np.array(rates))


def fig6(cols: dict[str, np.ndarray], webgl_threshold: int) -> tuple[Scatter, ...]:
    """Two scatters per measured flatness key: (stability, measure), then (measure, gen.)."""
    cols = by_definition(cols)
    ok = cols["status"] == "ok"
    kind = trial_kinds(cols)
    groups = [("no pruning", ok & (kind == "unpruned")), ("scratch", ok & (kind == "scratch"))]
    pruned = ok & (kind == "pruned")
    for target in sorted(set(cols["pruning_target"][pruned])):
        groups.append((f"target {target}", pruned & (cols["pruning_target"] == target)))
    groups = [(label, np.flatnonzero(m)) for label, m in groups if m.any()]
    out = []
    for key in FLATNESS_KEYS:
        if not np.isfinite(cols[key][ok]).any():
            continue
        for x, y in (("mean_stability", key), (key, "generalization")):
            series = tuple(_series(cols, label, idx, x, y) for label, idx in groups)
            pooled = line("all ok trials", cols[x][ok], cols[y][ok])
            out.append(Scatter(x, y, series, (pooled,), ok.sum() > webgl_threshold))
    return tuple(out)

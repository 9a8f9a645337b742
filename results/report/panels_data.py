"""The report's correlation panels, each mirroring a figure of Bartoldson et al. 2020 (pure).

One number per figure: a panel computes no correlation. It draws the trial-level rows of
``fits.parquet`` that name it (column ``panel``; ``results.fits.aggregate`` says which rows do, a
spec fit's or the panel's default), each row's r, CI, p, tau and n as the row holds them, over
the trials the row fitted (``results.fits.aggregate.row_members``: unpruned and scratch trials at
stability 100, ``results.fits.aggregate.by_definition``). A panel is None (or empty) without rows:

- :func:`fig2` (Fig. 2): best test accuracy in run (``generalization``) vs mean stability, the
  fitted trials one series per target (unpruned and scratch ones by kind), a line (OLS, 95% band)
  per row, the pooled one last; the ok unpruned baselines the fit leaves out as a reference
  series at stability 100 (not fitted: the official ``Figure_2.py`` leaves them out).
- :func:`fig3` (Fig. 3): the same axes, a series and a line per group of the fit (retrain period),
  and per group the row's correlation (Pearson r with its CI, Kendall tau) against the group's
  pruning rate (the mean ``pruning_rate`` of its trials).
- :func:`fig6` (Figs. 6 and E): one scatter per fit (x, y) naming the panel ``flatness``, series
  by kind and target, a line per row.

Lines are ``results.report.base.ols_band`` over a row's points: a drawing, not a statistic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from results.fits.aggregate import by_definition, row_members, trial_kinds
from results.report.base import ols_band
from search_spaces.fits import DEFAULT_FIT


@dataclass(frozen=True)
class Corr:
    n: int  # the fit's points (the row's n)
    r: float
    r_p: float
    r_low: float  # the row's CI (confidence_level, 0.95 by default)
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


def corr_of(row: dict) -> Corr:
    """The fits row's numbers (None, as Parquet stores NaN, read back as NaN)."""

    def f(key: str) -> float:
        return float("nan") if row[key] is None else float(row[key])

    keys = ("pearson_r", "pearson_p", "pearson_ci_low", "pearson_ci_high", "kendall_tau")
    return Corr(int(row["n"]), *(f(k) for k in keys), f("kendall_p"))


def panel_rows(fit_rows, panel: str) -> list[dict]:
    """The trial-level rows drawn by `panel`, in fits.parquet order."""
    return [r for r in fit_rows if r.get("panel") == panel and r["level"] == "trial"]


def _label(row: dict) -> str:
    if row["grouping"] == "all":
        return "all pruned trials" if row["fit"] == DEFAULT_FIT else f"fit {row['fit']}"
    name = {"target": "target", "pruning_period": "period"}.get(row["grouping"], row["grouping"])
    return f"{name} {row['group']}"


def _line(cols, row: dict) -> tuple[Line, np.ndarray]:
    """The row's line over its points, and the points' trial indices."""
    idx = row_members(cols, row)
    band = ols_band(cols[row["x"]][idx], cols[row["y"]][idx])
    return Line(_label(row), corr_of(row), *band), idx


def _kind_labels(cols) -> np.ndarray:
    """Per trial: 'no pruning', 'scratch' or 'target <t>'."""
    kind = trial_kinds(cols)
    target = np.array([f"target {t}" for t in cols["pruning_target"]], dtype=object)
    return np.where(
        kind == "unpruned", "no pruning", np.where(kind == "scratch", "scratch", target)
    )


def _by_kind(cols, idx: np.ndarray, x: str, y: str) -> list[Series]:
    """Series of the trials `idx`: no pruning, scratch, then per target."""
    labels = _kind_labels(cols)[idx]
    order = sorted(set(labels), key=lambda v: (v != "no pruning", v != "scratch", v))
    return [_series(cols, v, idx[labels == v], x, y) for v in order]


def _series(cols, label: str, idx: np.ndarray, x: str, y: str) -> Series:
    return Series(label, tuple(str(t) for t in cols["trial_id"][idx]), cols[x][idx], cols[y][idx])


def _pooled_last(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: r["grouping"] == "all")


def fig2(cols: dict[str, np.ndarray], fit_rows, webgl_threshold: int) -> Scatter | None:
    rows = _pooled_last(panel_rows(fit_rows, "fig2"))
    if not rows:
        return None
    cols = by_definition(cols)
    drawn = [_line(cols, row) for row in rows]
    idx = np.unique(np.concatenate([i for _, i in drawn])).astype(int)
    x, y = rows[0]["x"], rows[0]["y"]
    series = _by_kind(cols, idx, x, y)
    base = (trial_kinds(cols) == "unpruned") & (cols["status"] == "ok")
    base = np.setdiff1d(np.flatnonzero(base), idx)
    if len(base):
        series.append(_series(cols, "no pruning (not fitted)", base, x, y))
    lines = tuple(ln for ln, _ in drawn)
    return Scatter(x, y, tuple(series), lines, len(idx) > webgl_threshold)


def fig3(cols: dict[str, np.ndarray], fit_rows, webgl_threshold: int) -> PeriodPanel | None:
    rows = panel_rows(fit_rows, "fig3")
    if len(rows) < 2:
        return None
    cols = by_definition(cols)
    x, y = rows[0]["x"], rows[0]["y"]
    series, lines, rates, groups = [], [], [], []
    for row in rows:
        line, idx = _line(cols, row)
        series.append(_series(cols, line.label, idx, x, y))
        lines.append(line)
        rate = cols["pruning_rate"][idx]
        rates.append(rate[np.isfinite(rate)].mean() if np.isfinite(rate).any() else np.nan)
        groups.append(_number(row["group"]))
    n = sum(len(s.x) for s in series)
    scatter = Scatter(x, y, tuple(series), tuple(lines), n > webgl_threshold)
    return PeriodPanel(scatter, np.array(groups), np.array(rates))


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def fig6(cols: dict[str, np.ndarray], fit_rows, webgl_threshold: int) -> tuple[Scatter, ...]:
    """One scatter per fit (x, y) drawn by the flatness panel, in fits.parquet order."""
    fits: dict[tuple, list[dict]] = {}
    for row in panel_rows(fit_rows, "flatness"):
        fits.setdefault((row["fit"], row["x"], row["y"]), []).append(row)
    cols = by_definition(cols)
    out = []
    for (_, x, y), rows in fits.items():
        drawn = [_line(cols, row) for row in _pooled_last(rows)]
        idx = np.unique(np.concatenate([i for _, i in drawn])).astype(int)
        lines = tuple(ln for ln, _ in drawn)
        out.append(
            Scatter(x, y, tuple(_by_kind(cols, idx, x, y)), lines, len(idx) > webgl_threshold)
        )
    return tuple(out)

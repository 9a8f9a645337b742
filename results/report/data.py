"""Every number the report shows, computed from the study's tables (pure; no plotly, no HTML).

:func:`build_report_data` turns the trials / epochs / fits tables into :class:`ReportData`;
``results.report.page`` only maps it to Plotly traces and escaped HTML. Strings here are raw (the
renderer escapes them all).

- Headline: one point per *pruned ok* trial, for every fitted (x, y) pair (NaN where the trial
  lacks a value, e.g. gain without a baseline); per (pair, grouping, group) an OLS line with its
  95% mean-response band ``yhat +- t_{n-2} s sqrt(1/n + (x - xbar)^2 / Sxx)`` over the group's
  points with finite x and y (the fit's points), and the fit's row of ``fits.parquet`` (trial level).
- Training dynamics: test accuracy per epoch of a few trials (the baseline with the smallest
  seed, then up to ``MAX_CURVES`` pruned configs spread over mean instability, smallest seed each);
  an event epoch contributes two points, (e, acc_before) then (e, acc_after), so drops show.
- Per-configuration table: ok trials grouped by ``config_key``: n, mean and sd (ddof 1) of gain
  and mean instability, mean generalization; sorted by (baselines first, mean instability).
- Figure panels (:class:`Panels`), each mirroring a figure of the papers, when the study has its
  dimensions: ``results.report.panels_data`` (Bartoldson et al. Figs. 2, 3, 6 / E, drawn from the
  fits rows that name them, never a correlation of their own) and ``results.report.curves_data``
  (Figs. 5 / D2; Jin et al.'s IMP controls).
- Environment: the driver's, from ``study.json`` (``results.tables.environment``), and the trials per
  (device, torch version, threads) they reported.

"Pruned" means pruned during training: scratch trials (``results.fits.aggregate.trial_kinds``) are
left out of the headline and the exclusion counts, as of the default fits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from results.fits.aggregate import GROUPINGS, exclusions, fit_pairs, trial_kinds
from results.report import curves_data, panels_data
from results.report.base import config_label, ols_band, text, varying_fields
from results.report.curves_data import ImpPanel, NoiseGroup, curve_trials
from results.report.panels_data import PeriodPanel, Scatter
from results.tables.environment import environment_rows, trial_environments
from results.tables.export import trial_arrays as columns
from results.tables.status import INCOMPLETE, STATUSES
from results.tables.storage import StudyMeta
from search_spaces.fits import DEFAULT_FIT

WEBGL_THRESHOLD = 2000  # points per trace above which the report switches to WebGL (Scattergl)
MAX_CURVES = 6
MAX_CONFIG_ROWS = 500
MAX_LISTED = 200
CURVE_COLUMNS = (
    "trial_id", "epoch", "test_acc", "acc_before", "acc_after", "is_event", "imp_round",
    "sparsity", "train_loss", "train_acc_noisy", "train_acc_clean",
)  # fmt: skip
_NUMBERS = (
    "mean_instability",
    "mean_stability",
    "gain",
    "generalization",
    "gen_gap",
    "final_sparsity",
    "pruning_rate",
    "seed",
)


@dataclass(frozen=True)
class FitLine:
    grouping: str
    group: str
    fit: dict | None  # the fits.parquet row (trial level), None when absent
    x: np.ndarray  # (GRID,) or (0,) when undefined
    y: np.ndarray
    low: np.ndarray
    high: np.ndarray


@dataclass(frozen=True)
class PairView:
    x: str
    y: str
    px: np.ndarray  # (n_points,), NaN = missing
    py: np.ndarray
    lines: tuple[FitLine, ...]

    def line(self, grouping: str, group: str) -> FitLine:
        return next(li for li in self.lines if (li.grouping, li.group) == (grouping, group))


@dataclass(frozen=True)
class Headline:
    trial_id: tuple[str, ...]
    target: tuple[str, ...]
    rate: np.ndarray  # pruning rate (%) per point, NaN = unknown
    groups: dict[str, tuple[str, ...]]  # per point: its value for each grouping
    hover: tuple[tuple[tuple[str, str], ...], ...]  # per point: (label, value) pairs
    pairs: tuple[PairView, ...]
    webgl: bool


@dataclass(frozen=True)
class Curve:
    trial_id: str
    label: str
    x: np.ndarray  # epochs, an event epoch twice
    y: np.ndarray  # test accuracy (acc_before then acc_after at an event)
    event_epoch: np.ndarray
    event_after: np.ndarray


@dataclass(frozen=True)
class ConfigRow:
    config_key: str
    label: str
    is_baseline: bool
    n: int
    gain_mean: float
    gain_sd: float
    instability_mean: float
    instability_sd: float
    generalization_mean: float


@dataclass(frozen=True)
class Panels:
    """The figure panels the study has the dimensions for (``results.report.panels_data`` and
    ``results.report.curves_data`` say what each mirrors)."""

    fig2: Scatter | None
    fig3: PeriodPanel | None
    fig6: tuple[Scatter, ...]  # two per measured flatness key
    noise: tuple[NoiseGroup, ...]
    imp: ImpPanel | None


@dataclass(frozen=True)
class ReportData:
    name: str
    spec_hash: str
    spec_text: str
    prunetune_version: str
    n_trials: int
    counts: dict[str, int]
    incomplete: tuple[tuple[str, str], ...]  # (trial_id, status), at most MAX_LISTED
    excluded_counts: dict[str, int]  # headline pair, pruned trials: reason -> n
    excluded: tuple[tuple[str, str], ...]  # (trial_id, reason), at most MAX_LISTED
    headline: Headline
    curves: tuple[Curve, ...]
    config_rows: tuple[ConfigRow, ...]
    n_configs: int
    fit_rows: tuple[dict, ...] = field(default=())
    panels: Panels | None = None
    # The driver's environment (results.tables.environment.environment_rows; () when not recorded) and
    # where the trials ran (results.tables.environment.trial_environments).
    environment: tuple[tuple[str, str], ...] = ()
    trial_environments: tuple[tuple[str, str, str, int], ...] = ()


def _fit_index(fit_rows: list[dict]) -> dict[tuple, dict]:
    """The default fits rows by (x, y, level, grouping, group)."""
    keys = ("x", "y", "level", "grouping", "group")
    return {tuple(r[k] for k in keys): r for r in fit_rows if r["fit"] == DEFAULT_FIT}


def _headline(cols, fits_by_key, fields) -> Headline:
    pruned = trial_kinds(cols) == "pruned"
    idx = np.flatnonzero(pruned & (cols["status"] == "ok"))
    groups = {
        g: tuple(str(v) for v in cols[c][idx]) if c else ("all",) * len(idx)
        for g, c in GROUPINGS.items()
    }
    pairs = []
    for x, y in fit_pairs(cols):
        px, py = cols[x][idx], cols[y][idx]
        lines = []
        for grouping, values in groups.items():
            arr = np.array(values, dtype=object)
            for value in sorted(set(values)):
                m = (arr == value) & np.isfinite(px) & np.isfinite(py)
                grid, fit, low, high = ols_band(px[m], py[m])
                row = fits_by_key.get((x, y, "trial", grouping, value))
                lines.append(FitLine(grouping, value, row, grid, fit, low, high))
        pairs.append(PairView(x, y, px, py, tuple(lines)))
    hover = tuple(
        tuple((name, text(cols[name][i])) for name in fields)
        + tuple((name, f"{cols[name][i]:.6g}") for name in _NUMBERS if np.isfinite(cols[name][i]))
        for i in idx
    )
    return Headline(
        trial_id=tuple(cols["trial_id"][idx]),
        target=tuple(str(t) for t in cols["pruning_target"][idx]),
        rate=cols["pruning_rate"][idx],
        groups=groups,
        hover=hover,
        pairs=tuple(pairs),
        webgl=len(idx) > WEBGL_THRESHOLD,
    )


def dynamics_trials(cols: dict[str, np.ndarray]) -> list[str]:
    """Trial ids whose curves the report draws (module docstring), in drawing order."""
    ok = cols["status"] == "ok"
    chosen = []
    for baseline in (True, False):
        m = ok & (cols["is_baseline"] == baseline)
        if baseline:
            m &= cols["n_baselines"] > 0  # a baseline some pruned trial is compared with
        keys = sorted(set(cols["config_key"][m]))
        firsts = []
        for key in keys:
            members = np.flatnonzero(m & (cols["config_key"] == key))
            first = members[np.lexsort((cols["trial_id"][members], cols["seed"][members]))[0]]
            firsts.append(first)
        if baseline:
            chosen += firsts[:1]
            continue
        firsts.sort(
            key=lambda i: (
                np.nan_to_num(cols["mean_instability"][i], nan=np.inf),
                cols["trial_id"][i],
            )
        )
        if len(firsts) > MAX_CURVES:
            picks = np.unique(np.round(np.linspace(0, len(firsts) - 1, MAX_CURVES)).astype(int))
            firsts = [firsts[p] for p in picks]
        chosen += firsts
    return [str(cols["trial_id"][i]) for i in chosen]


def _curves(cols, epochs: pa.Table, fields) -> tuple[Curve, ...]:
    ids = dynamics_trials(cols)
    row_of = {t: i for i, t in enumerate(cols["trial_id"])}
    tid = np.asarray(epochs.column("trial_id").to_pylist(), dtype=object)
    num = {
        k: epochs.column(k).cast(pa.float64()).to_numpy(zero_copy_only=False)
        for k in ("epoch", "test_acc", "acc_before", "acc_after")
    }
    event = np.asarray(epochs.column("is_event").fill_null(False).to_pylist(), dtype=bool)
    out = []
    for trial in ids:
        m = np.flatnonzero(tid == trial)
        m = m[np.argsort(num["epoch"][m], kind="stable")]
        xs, ys = [], []
        for j in m:
            if event[j] and np.isfinite(num["acc_before"][j]):
                xs += [num["epoch"][j]] * 2
                ys += [num["acc_before"][j], num["acc_after"][j]]
            else:
                xs.append(num["epoch"][j])
                ys.append(num["test_acc"][j])
        ev = m[event[m]]
        label = config_label(cols, row_of[trial], fields)
        out.append(
            Curve(trial, label, np.array(xs), np.array(ys), num["epoch"][ev], num["acc_after"][ev])
        )
    return tuple(out)


def _config_rows(cols, fields) -> tuple[list[ConfigRow], int]:
    ok = np.flatnonzero(cols["status"] == "ok")
    keys = cols["config_key"][ok]
    rows = []
    for key in sorted(set(keys)):
        members = ok[keys == key]
        gain = cols["gain"][members]
        inst = cols["mean_instability"][members]
        rows.append(
            ConfigRow(
                config_key=str(key),
                label=config_label(cols, members[0], fields),
                is_baseline=bool(cols["is_baseline"][members[0]]),
                n=len(members),
                gain_mean=_mean(gain),
                gain_sd=_sd(gain),
                instability_mean=_mean(inst),
                instability_sd=_sd(inst),
                generalization_mean=_mean(cols["generalization"][members]),
            )
        )
    rows.sort(
        key=lambda r: (
            not r.is_baseline,
            np.nan_to_num(r.instability_mean, nan=np.inf),
            r.config_key,
        )
    )
    return rows[:MAX_CONFIG_ROWS], len(rows)


def _mean(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def _sd(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(v.std(ddof=1)) if len(v) > 1 else float("nan")


def build_report_data(
    meta: StudyMeta, trials: pa.Table, epochs: pa.Table, fits: pa.Table
) -> ReportData:
    """All report numbers (module docstring). `epochs` may hold only the curves' trials."""
    cols = columns(trials)
    fit_rows = fits.to_pylist()
    fields = varying_fields(cols)
    status = cols["status"]
    reason = (
        exclusions(cols, "mean_instability", "gain")
        if trials.num_rows
        else np.zeros(0, dtype=object)
    )
    excluded_idx = np.flatnonzero((reason != "") & (trial_kinds(cols) == "pruned"))
    incomplete_idx = np.flatnonzero(np.isin(status, INCOMPLETE))
    config_rows, n_configs = _config_rows(cols, fields)
    return ReportData(
        name=meta.name,
        spec_hash=meta.spec_hash,
        spec_text=meta.spec_text,
        prunetune_version=meta.prunetune_version,
        n_trials=trials.num_rows,
        counts={s: int((status == s).sum()) for s in STATUSES},
        incomplete=tuple(
            (str(cols["trial_id"][i]), str(status[i])) for i in incomplete_idx[:MAX_LISTED]
        ),
        excluded_counts={
            r: int((reason[excluded_idx] == r).sum()) for r in sorted(set(reason[excluded_idx]))
        },
        excluded=tuple(
            (str(cols["trial_id"][i]), str(reason[i])) for i in excluded_idx[:MAX_LISTED]
        ),
        headline=_headline(cols, _fit_index(fit_rows), fields),
        curves=_curves(cols, epochs, fields),
        config_rows=tuple(config_rows),
        n_configs=n_configs,
        fit_rows=tuple(fit_rows),
        panels=_panels(cols, epochs, fit_rows),
        environment=environment_rows(meta.environment),
        trial_environments=trial_environments(cols),
    )


def _panels(cols: dict[str, np.ndarray], epochs: pa.Table, fit_rows: list[dict]) -> Panels:
    threshold = WEBGL_THRESHOLD
    return Panels(
        fig2=panels_data.fig2(cols, fit_rows, threshold),
        fig3=panels_data.fig3(cols, fit_rows, threshold),
        fig6=panels_data.fig6(cols, fit_rows, threshold),
        noise=curves_data.noise_panel(cols, epochs),
        imp=curves_data.imp_panel(cols, epochs),
    )


def epoch_trials(cols: dict[str, np.ndarray]) -> list[str]:
    """Trial ids whose epochs the report reads: the dynamics' and the curve panels'."""
    return list(dict.fromkeys(dynamics_trials(cols) + curve_trials(cols)))

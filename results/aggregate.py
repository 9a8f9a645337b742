"""Matched-baseline gain and the correlation fits of ``fits.parquet`` (pure numpy / scipy).

Inputs are trials-table columns as numpy arrays (one entry per trial; floats with NaN for null,
strings as object arrays), so the functions run on Parquet data or on hand-made test arrays alike.

**Gain** = the trial's generalization - the mean generalization of its matched baselines: the
``ok`` unpruned trials with the same ``baseline_key`` (same config but pruning and seed). No such
baseline: gain is null, and fits on gain count the trial under ``no_baseline``. Never guessed.

**Fits**: one row per (x, y, level, grouping, group) over *pruned* trials (unpruned ones have
instability 0 by definition). Pairs: mean_instability~gain, mean_stability~generalization,
mean_instability~gen_gap and mean_instability~each flatness value that any pruned trial has.
Level ``trial``: one point per trial; ``config``: seeds averaged first (one point per
``config_key``: mean x and mean y over the config's included trials). Grouping ``all`` pools
everything; ``target`` / ``model`` / ``dataset`` fit each value separately. A trial is excluded,
with its reason counted, when it is diverged, error, incomplete (stopped / running / pending),
lacks a baseline (gain only) or lacks x or y (missing_x / missing_y).

**Partial correlations** sit in the same row as the raw fit (columns ``partial_*_sparsity`` and
``partial_*_train_acc``): x~y controlling for the final sparsity, and for the final training
accuracy (on the relabelled subset when label noise > 0: ``control_train_acc``). Computed on the
row's points that have the covariate (``partial_n_*`` of them), by the residual method.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from results import bootstrap, stats
from results.bootstrap import DEFAULT_PLAN, BootstrapPlan
from results.status import INCOMPLETE
from trainables.records import FLATNESS_KEYS

GROUPINGS: dict[str, str | None] = {
    "all": None,
    "target": "pruning_target",
    "model": "model_name",
    "dataset": "dataset_name",
}
LEVELS = ("trial", "config")
BASE_PAIRS = (
    ("mean_instability", "gain"),
    ("mean_stability", "generalization"),
    ("mean_instability", "gen_gap"),
)
CONTROLS = {"sparsity": "final_sparsity", "train_acc": "control_train_acc"}
REASONS = ("diverged", "error", "incomplete", "no_baseline", "missing_x", "missing_y")


def matched_gain(
    baseline_key: np.ndarray,
    is_baseline: np.ndarray,
    status: np.ndarray,
    generalization: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(gain, n_baselines) per trial; gain is NaN where no ok baseline matches (or no value)."""
    ok_base = is_baseline & (status == "ok") & np.isfinite(generalization)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for key, value in zip(baseline_key[ok_base], generalization[ok_base], strict=True):
        sums[key] = sums.get(key, 0.0) + float(value)
        counts[key] = counts.get(key, 0) + 1
    n_base = np.array([counts.get(k, 0) for k in baseline_key], dtype=np.int64)
    mean = np.array([sums[k] / counts[k] if k in counts else np.nan for k in baseline_key])
    return generalization - mean, n_base


def fit_pairs(trials: Mapping[str, np.ndarray]) -> list[tuple[str, str]]:
    """The (x, y) pairs to fit: the base pairs, then each flatness value some pruned trial has."""
    pruned = ~trials["is_baseline"]
    extra = [("mean_instability", k) for k in FLATNESS_KEYS if np.isfinite(trials[k][pruned]).any()]
    return [*BASE_PAIRS, *extra]


def exclusions(trials: Mapping[str, np.ndarray], x: str, y: str) -> np.ndarray:
    """Per trial, why it is left out of the x~y fits ("" = included). Unpruned trials: "baseline"."""
    status = trials["status"]
    reason = np.full(len(status), "", dtype=object)
    reason[~np.isfinite(trials[y])] = "missing_y"
    reason[~np.isfinite(trials[x])] = "missing_x"
    if y == "gain":
        reason[(trials["n_baselines"] == 0)] = "no_baseline"
    reason[np.isin(status, INCOMPLETE)] = "incomplete"
    reason[status == "error"] = "error"
    reason[status == "diverged"] = "diverged"
    reason[trials["is_baseline"]] = "baseline"
    return reason


def fits(trials: Mapping[str, np.ndarray], plan: BootstrapPlan = DEFAULT_PLAN) -> list[dict]:
    """All fit rows (``results.schema.FITS`` columns), in a deterministic order."""
    rows: list[dict] = []
    cache: dict[tuple, dict] = {}
    pruned = ~trials["is_baseline"]
    for x, y in fit_pairs(trials):
        reason = exclusions(trials, x, y)
        for level in LEVELS:
            for grouping, column in GROUPINGS.items():
                values = ["all"] if column is None else sorted(set(trials[column][pruned]))
                for value in values:
                    member = pruned if column is None else pruned & (trials[column] == value)
                    row = {"x": x, "y": y, "level": level, "grouping": grouping, "group": value}
                    row.update(_excluded(reason[member]))
                    used = np.flatnonzero(member & (reason == ""))
                    key = (x, y, level, used.tobytes())
                    if key not in cache:
                        cache[key] = _fit(_points(trials, x, y, level, used), plan)
                    row.update(cache[key])
                    rows.append(row)
    return rows


def _excluded(reasons: np.ndarray) -> dict:
    counts = {r: int((reasons == r).sum()) for r in REASONS if (reasons == r).any()}
    return {"n_excluded": sum(counts.values()), "excluded": counts}


def _points(
    trials: Mapping[str, np.ndarray], x: str, y: str, level: str, used: np.ndarray
) -> dict[str, np.ndarray]:
    """x, y and the covariates of the used trials; at config level, averaged per config_key."""
    cols = {"x": trials[x][used], "y": trials[y][used]}
    cols.update({name: trials[col][used] for name, col in CONTROLS.items()})
    if level == "trial":
        return cols
    keys, inverse = np.unique(trials["config_key"][used], return_inverse=True)
    out = {}
    for name, v in cols.items():
        finite = np.isfinite(v)
        sums = np.bincount(inverse[finite], weights=v[finite], minlength=len(keys))
        counts = np.bincount(inverse[finite], minlength=len(keys))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = sums / counts  # NaN for a config without the value
    return out


def _fit(points: Mapping[str, np.ndarray], plan: BootstrapPlan) -> dict:
    x, y = points["x"], points["y"]
    n = len(x)
    b = plan.resamples(n)
    r, rp, rlo, rhi = stats.pearson(x, y, plan.confidence)
    tau, tp = stats.kendall(x, y)
    rho, sp = stats.spearman(x, y)
    tlo, thi, slo, shi = bootstrap.rank_cis(x, y, b, plan.random_state, plan.confidence)
    s, sse, s_lo, s_hi, i, ise, i_lo, i_hi = stats.ols(x, y, plan.confidence)
    row = {
        "n": n,
        **dict(pearson_r=r, pearson_p=rp, pearson_ci_low=rlo, pearson_ci_high=rhi),
        **dict(kendall_tau=tau, kendall_p=tp, kendall_ci_low=tlo, kendall_ci_high=thi),
        **dict(spearman_rho=rho, spearman_p=sp, spearman_ci_low=slo, spearman_ci_high=shi),
        **dict(slope=s, slope_stderr=sse, slope_ci_low=s_lo, slope_ci_high=s_hi),
        **dict(intercept=i, intercept_stderr=ise, intercept_ci_low=i_lo, intercept_ci_high=i_hi),
        "n_resamples": b,
        "random_state": plan.random_state,
        "confidence_level": plan.confidence,
    }
    for name in CONTROLS:
        z = points[name]
        m = np.isfinite(z)
        pr, pp, plo, phi = stats.partial(x[m], y[m], z[m], plan.confidence)
        row.update(
            {
                f"partial_n_{name}": int(m.sum()),
                f"partial_r_{name}": pr,
                f"partial_p_{name}": pp,
                f"partial_ci_low_{name}": plo,
                f"partial_ci_high_{name}": phi,
            }
        )
    return row

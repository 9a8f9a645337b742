"""Matched-baseline gain and the correlation fits of ``fits.parquet`` (pure numpy / scipy).

Inputs are trials-table columns as numpy arrays (one entry per trial; floats with NaN for null,
strings as object arrays), so the functions run on Parquet data or on hand-made test arrays alike.

**Gain** = the trial's generalization - the mean generalization of its matched baselines: the
``ok`` unpruned trials with the same ``baseline_key`` (same config but pruning and seed). No such
baseline: gain is null, and fits on gain count the trial under ``no_baseline``. Never guessed.
An unpruned trial's own gain is its generalization minus the mean of its group (itself included).

**Trial kinds** (:func:`trial_kinds`): ``unpruned`` (a baseline), ``scratch`` (pruned before
training: config column ``pruning_scratch`` true, where the column exists), ``pruned`` (the
rest). Unpruned and scratch trials have instability 0 / stability 100 by definition (official
``figures_and_tables/utils.py::summarize`` fills 100 for both): :func:`by_definition`.

**Default fits** (``fit`` = ``default``): one row per (x, y, level, grouping, group) over *pruned*
trials. Pairs: mean_instability~gain, mean_stability~generalization, mean_instability~gen_gap and
mean_instability~each flatness value that any pruned trial has. Level ``trial``: one point per
trial; ``config``: seeds averaged first (one point per ``config_key``: mean x and mean y over the
config's included trials). Grouping ``all`` pools everything; ``target`` / ``model`` /
``dataset`` fit each value separately.

**Spec fits** (``search_spaces.fits.FitSpec``, after the defaults, in spec order): the trials of
the listed kinds that pass every ``where`` filter, one row per (level, value of ``group_by``)
(``grouping`` = the column, or ``all`` when pooled), for the one (x, y) pair.

**Panels** (column ``panel``): the report draws each figure panel from the trial-level rows that
name it, and from no other number (:func:`row_members` gives the trials a row fitted). A spec fit
names its panel; a panel that no spec fit draws gets its default (:func:`panel_defaults`, after
the spec fits), only where the study has the panel's dimension: ``fig2``, the default rows of
mean_stability~generalization (groupings all and target) when the pruned trials have two or more
targets; ``fig3``, the fit ``default.fig3`` (pruned schedule trials, one row per
``pruning_period``) when they have two or more periods; ``flatness``, the fits
``default.flatness`` of mean_stability~measure and measure~generalization over every trial
(unpruned and scratch at stability 100), per flatness measure some trial has.

A member trial is excluded, with its reason counted, when it is diverged, error, incomplete
(stopped / running / pending), lacks a baseline (gain only) or lacks x or y (missing_x /
missing_y).

**Partial correlations** sit in the same row as the raw fit (columns ``partial_*_sparsity`` and
``partial_*_train_acc``): x~y controlling for the final sparsity, and for the final training
accuracy (on the relabelled subset when label noise > 0: ``control_train_acc``). Computed on the
row's points that have the covariate (``partial_n_*`` of them), by the residual method.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from results.fits import bootstrap, stats
from results.fits.bootstrap import DEFAULT_PLAN, BootstrapPlan
from results.tables.status import INCOMPLETE
from search_spaces.fits import DEFAULT_FIT, KINDS, FitFilter, FitSpec
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
FIG2_PAIR = ("mean_stability", "generalization")  # the pair of Figs. 2, 3 and E6
SCRATCH = "pruning_scratch"  # the config column of scratch pruning (absent in older tables)


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


def trial_kinds(trials: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per trial: ``unpruned``, ``scratch`` or ``pruned`` (module docstring), as an object array."""
    base = np.asarray(trials["is_baseline"], dtype=bool)
    kind = np.where(base, "unpruned", "pruned").astype(object)
    if SCRATCH in trials:
        kind[~base & (np.asarray(trials[SCRATCH]) == True)] = "scratch"  # noqa: E712 (object array)
    return kind


def by_definition(trials: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`trials` with every scratch trial's mean_instability 0 and mean_stability 100."""
    out = dict(trials)
    scratch = trial_kinds(trials) == "scratch"
    if scratch.any():
        for name, value in (("mean_instability", 0.0), ("mean_stability", 100.0)):
            out[name] = np.where(scratch, value, trials[name])
    return out


def fit_pairs(trials: Mapping[str, np.ndarray]) -> list[tuple[str, str]]:
    """The default (x, y) pairs: the base pairs, then each flatness value some pruned trial has."""
    pruned = trial_kinds(trials) == "pruned"
    extra = [("mean_instability", k) for k in FLATNESS_KEYS if np.isfinite(trials[k][pruned]).any()]
    return [*BASE_PAIRS, *extra]


def exclusions(trials: Mapping[str, np.ndarray], x: str, y: str) -> np.ndarray:
    """Per trial, why it cannot be a point of an x~y fit (one of :data:`REASONS`; "" = usable)."""
    status = trials["status"]
    reason = np.full(len(status), "", dtype=object)
    reason[~np.isfinite(trials[y])] = "missing_y"
    reason[~np.isfinite(trials[x])] = "missing_x"
    if y == "gain":
        reason[(trials["n_baselines"] == 0)] = "no_baseline"
    reason[np.isin(status, INCOMPLETE)] = "incomplete"
    reason[status == "error"] = "error"
    reason[status == "diverged"] = "diverged"
    return reason


def fits(
    trials: Mapping[str, np.ndarray],
    plan: BootstrapPlan = DEFAULT_PLAN,
    specs: Sequence[FitSpec] = (),
) -> list[dict]:
    """All fit rows (``results.tables.schema.FITS`` columns): the defaults, then each spec fit's, then
    the panels' defaults (module docstring)."""
    trials = by_definition(trials)
    kinds = trial_kinds(trials)
    cache: dict[tuple, dict] = {}
    rows: list[dict] = []
    pruned = kinds == "pruned"
    fig2 = "fig2" not in {s.panel for s in specs} and len(set(trials["pruning_target"][pruned])) > 1
    for x, y in fit_pairs(trials):
        reason = exclusions(trials, x, y)
        for level in LEVELS:
            for grouping, column in GROUPINGS.items():
                values = ["all"] if column is None else sorted(set(trials[column][pruned]))
                for value in values:
                    member = pruned if column is None else pruned & (trials[column] == value)
                    head = _head(DEFAULT_FIT, ("pruned",), [], column, x, y, level)
                    drawn = fig2 and (x, y, level) == (*FIG2_PAIR, "trial")
                    drawn &= grouping in ("all", "target")
                    head.update(grouping=grouping, group=value, panel="fig2" if drawn else None)
                    rows.append(_row(trials, head, member, reason, plan, cache))
    for spec in (*specs, *panel_defaults(trials, kinds, specs)):
        rows += _spec_rows(trials, kinds, spec, plan, cache)
    return rows


def panel_defaults(trials, kinds: np.ndarray, specs: Sequence[FitSpec]) -> list[FitSpec]:
    """The default fits of the panels fig3 and flatness that no spec fit draws (module docstring)."""
    stated = {s.panel for s in specs}
    out = []
    periods = np.zeros(0)
    if {"pruning_method", "pruning_period"} <= trials.keys():  # hand-made tables may lack them
        schedule = (kinds == "pruned") & (trials["pruning_method"] == "schedule")
        periods = trials["pruning_period"][schedule]
    if "fig3" not in stated and len(np.unique(periods[np.isfinite(periods)])) > 1:
        where = ((FitFilter("pruning_method", ("schedule",)),),)
        x, y = FIG2_PAIR
        fig3 = FitSpec(f"{DEFAULT_FIT}.fig3", x, y, ("pruned",), where, "pruning_period")
        out.append(dataclasses.replace(fig3, levels=("trial",), panel="fig3"))
    if "flatness" not in stated:
        for key in (k for k in FLATNESS_KEYS if k in trials and np.isfinite(trials[k]).any()):
            for x, y in (("mean_stability", key), (key, "generalization")):
                name = f"{DEFAULT_FIT}.flatness"
                out.append(FitSpec(name, x, y, KINDS, (), "", ("trial",), "flatness"))
    return out


def _spec_rows(trials, kinds, spec: FitSpec, plan: BootstrapPlan, cache: dict) -> list[dict]:
    where = [{f.column: [value_text(v) for v in f.values] for f in c} for c in spec.where]
    member = np.isin(kinds, spec.include) & _passes(trials, where)
    reason = exclusions(trials, spec.x, spec.y)
    if spec.group_by:
        labels = _labels(trials[spec.group_by])
        groups = _ordered(trials[spec.group_by][member])
    else:
        labels, groups = np.full(len(kinds), "all", dtype=object), ["all"]
    rows = []
    for level in spec.levels:
        for value in groups:
            group_by = spec.group_by or None
            head = _head(spec.name, spec.include, where, group_by, spec.x, spec.y, level)
            panel = spec.panel if spec.panel != "none" and level == "trial" else None
            head.update(grouping=spec.group_by or "all", group=value, panel=panel)
            rows.append(_row(trials, head, member & (labels == value), reason, plan, cache))
    return rows


def row_members(trials: Mapping[str, np.ndarray], row: Mapping) -> np.ndarray:
    """Indices of the trials a fits row fitted (its points at trial level), from the row's own
    include / where / group_by / group / x / y, as stored in fits.parquet or as :func:`fits`
    returns it; `trials` as :func:`fits` sees them (after :func:`by_definition`)."""
    member = np.isin(trial_kinds(trials), list(row["include"])) & _passes(trials, row["where"])
    if row["group_by"]:
        member &= _labels(trials[row["group_by"]]) == row["group"]
    return np.flatnonzero(member & (exclusions(trials, row["x"], row["y"]) == ""))


def _head(fit, include, where, group_by, x, y, level) -> dict:
    return {
        "fit": fit,
        "include": list(include),
        "where": where,
        "group_by": group_by,
        "x": x,
        "y": y,
        "level": level,
    }


def _row(trials, head: dict, member: np.ndarray, reason, plan: BootstrapPlan, cache) -> dict:
    """One fits row: `head`, the members' exclusion counts, the fit of the usable members."""
    row = {**head, **_excluded(reason[member])}
    used = np.flatnonzero(member & (reason == ""))
    x, y, level = head["x"], head["y"], head["level"]
    key = (x, y, level, used.tobytes())
    if key not in cache:
        cache[key] = _fit(_points(trials, x, y, level, used), plan)
    row.update(cache[key])
    return row


def _passes(trials: Mapping[str, np.ndarray], where) -> np.ndarray:
    """Trials that pass a clause of `where` (all trials when it has none): a clause passes when
    each of its columns holds one of the filter's values, compared as :func:`value_text` (NaN /
    null never matches). `where` as the rows hold it: per clause {column: [text]} or its items."""
    n = len(trials["status"])
    if not where:
        return np.ones(n, dtype=bool)
    keep = np.zeros(n, dtype=bool)
    for clause in where:
        passes = np.ones(n, dtype=bool)
        for column, values in dict(clause).items():
            allowed = set(values) - {"null"}
            passes &= np.isin(_labels(trials[column]), list(allowed))
        keep |= passes
    return keep


def _labels(values: np.ndarray) -> np.ndarray:
    return np.array([value_text(v) for v in values], dtype=object)


def value_text(value: object) -> str:
    """A column value as fits.parquet's group / where text: true, 40, 0.5, smallest, null."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "null"
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, float, np.number)):
        return f"{float(value):.12g}"
    return str(value)


def _ordered(values: np.ndarray) -> list[str]:
    """The distinct values' texts, numbers in numeric order (null last), text sorted."""
    distinct = {value_text(v): v for v in values}
    numeric = values.dtype.kind == "f"
    return sorted(distinct, key=lambda t: (t == "null", float(distinct[t]) if numeric else 0, t))


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

"""Helpers the report's data modules share (pure numpy / scipy): labels of configurations and the
OLS line with its 95% mean-response band."""

from __future__ import annotations

import numpy as np
from scipy import stats as st

from results.tables.schema import CONFIG_FIELDS

GRID = 25  # points along a fitted line


def varying_fields(cols: dict[str, np.ndarray]) -> list[str]:
    """Config columns (seed excluded) whose values differ between trials.

    Pruning fields count only among pruned trials: baselines differ from every pruned trial in
    them anyway (their labels say "no pruning").
    """
    pruned = ~cols["is_baseline"]
    out = []
    for name, _, _ in CONFIG_FIELDS:
        if name == "seed" or name not in cols:
            continue
        values = cols[name][pruned] if name.startswith("pruning_") else cols[name]
        if _n_distinct(values) > 1:
            out.append(name)
    return out


def _n_distinct(values: np.ndarray) -> int:
    if values.dtype.kind in "fbi":
        return len(np.unique(values))  # NaNs count as one value
    try:
        return len(set(values.tolist()))
    except TypeError:  # lists / structs
        return len({text(v) for v in values})


def text(value: object) -> str:
    """A config value as a label shows it: 0.001, [1, 2], {k: v}, smallest."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {text(v)}" for k, v in value.items()) + "}"
    return str(value)


def config_label(cols: dict[str, np.ndarray], i: int, fields: list[str]) -> str:
    """'k=v, ...' of the varying fields; pruning fields of a baseline read 'no pruning'."""
    parts = []
    baseline = bool(cols["is_baseline"][i])
    for name in fields:
        if baseline and name.startswith("pruning_"):
            continue
        parts.append(f"{name}={text(cols[name][i])}")
    if baseline:
        parts.insert(0, "no pruning")
    return ", ".join(parts) or "all trials share one config"


def ols_band(x: np.ndarray, y: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, ...]:
    """(grid, fit, low, high) of the OLS line and its mean-response band; empty if undefined.

    Band: ``yhat +- t_{n-2} s sqrt(1/n + (x - xbar)^2 / Sxx)`` over ``GRID`` points spanning x.
    """
    if len(x) < 3 or np.ptp(x) == 0:
        return (np.zeros(0),) * 4
    res = st.linregress(x, y)
    grid = np.linspace(x.min(), x.max(), GRID)
    fit = res.intercept + res.slope * grid
    resid = y - (res.intercept + res.slope * x)
    s = np.sqrt((resid @ resid) / (len(x) - 2))
    sxx = ((x - x.mean()) ** 2).sum()
    half = (
        st.t.ppf(0.5 + confidence / 2, len(x) - 2)
        * s
        * np.sqrt(1 / len(x) + (grid - x.mean()) ** 2 / sxx)
    )
    return grid, fit, fit - half, fit + half

"""Correlation statistics over paired samples (pure numpy / scipy).

All functions take 1-d float arrays ``x``, ``y`` (and ``z``) of equal length n with no NaN, and
return plain floats; an undefined value (n too small, a constant input) is NaN.

- Pearson r and p: ``scipy.stats.pearsonr``; CI: its Fisher-z interval
  (``tanh(atanh(r) +- z_q / sqrt(n - 3))``), defined for n > 3.
- Kendall tau-b and Spearman rho with p: ``scipy.stats.kendalltau`` / ``spearmanr``; their CIs come
  from a seeded paired bootstrap (:mod:`results.fits.bootstrap`).
- OLS: ``scipy.stats.linregress``; CIs: ``estimate +- t_{q, n-2} * stderr``.
- Partial correlation given z, by the residual method: r of the residuals of x and of y after
  least squares on (1, z); p from t = r sqrt(df / (1 - r^2)) with df = n - 3 (one covariate);
  Fisher-z CI with standard error 1 / sqrt(n - 4).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats as st

MIN_N = 3
NAN = float("nan")


def _quiet(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args)


def degenerate(x: np.ndarray, y: np.ndarray) -> bool:
    """Too few points, or a constant input: no correlation is defined."""
    return len(x) < MIN_N or np.ptp(x) == 0 or np.ptp(y) == 0


def pearson(
    x: np.ndarray, y: np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float, float]:
    """(r, p, ci_low, ci_high)."""
    if degenerate(x, y):
        return NAN, NAN, NAN, NAN
    res = _quiet(st.pearsonr, x, y)
    low = high = NAN
    if len(x) > 3:
        ci = res.confidence_interval(confidence_level=confidence)
        low, high = float(ci.low), float(ci.high)
    return float(res.statistic), float(res.pvalue), low, high


def kendall(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(tau-b, p) as ``scipy.stats.kendalltau`` (exact p for small n without ties)."""
    if degenerate(x, y):
        return NAN, NAN
    res = _quiet(st.kendalltau, x, y)
    return float(res.statistic), float(res.pvalue)


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(rho, p) as ``scipy.stats.spearmanr``."""
    if degenerate(x, y):
        return NAN, NAN
    res = _quiet(st.spearmanr, x, y)
    return float(res.statistic), float(res.pvalue)


def ols(x: np.ndarray, y: np.ndarray, confidence: float = 0.95) -> tuple[float, ...]:
    """(slope, slope_stderr, slope_lo, slope_hi, intercept, intercept_stderr, int_lo, int_hi)."""
    if degenerate(x, y):
        return (NAN,) * 8
    res = st.linregress(x, y)
    q = st.t.ppf(0.5 + confidence / 2, len(x) - 2)
    s, se, i, ise = res.slope, res.stderr, res.intercept, res.intercept_stderr
    return tuple(
        float(v) for v in (s, se, s - q * se, s + q * se, i, ise, i - q * ise, i + q * ise)
    )


def residuals(v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """v minus its least-squares fit on (1, z)."""
    design = np.column_stack([np.ones_like(z), z])
    coef, *_ = np.linalg.lstsq(design, v, rcond=None)
    return v - design @ coef


def partial(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float, float]:
    """(r_xy.z, p, ci_low, ci_high) by the residual method (module docstring)."""
    n = len(x)
    if n < 4 or degenerate(x, y):
        return NAN, NAN, NAN, NAN
    ex, ey = residuals(x, z), residuals(y, z)
    if np.ptp(ex) == 0 or np.ptp(ey) == 0:
        return NAN, NAN, NAN, NAN
    r = float(np.clip(_quiet(st.pearsonr, ex, ey).statistic, -1.0, 1.0))
    df = n - 3
    with np.errstate(divide="ignore"):
        t = r * np.sqrt(df / (1 - r * r)) if abs(r) < 1 else np.copysign(np.inf, r)
    p = float(2 * st.t.sf(abs(t), df))
    low = high = NAN
    if n > 4:
        zq = st.norm.ppf(0.5 + confidence / 2)
        with np.errstate(divide="ignore"):
            zr, se = np.arctanh(r), 1 / np.sqrt(n - 4)
        low, high = float(np.tanh(zr - zq * se)), float(np.tanh(zr + zq * se))
    return r, p, low, high


def min_detectable_r(n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest |r| a two-sided Pearson test on n pairs detects with the given power:
    ``tanh((z_{1-alpha/2} + z_{power}) / sqrt(n - 3))`` (Fisher z); NaN for n <= 3."""
    if n <= 3:
        return NAN
    z = st.norm.ppf(1 - alpha / 2) + st.norm.ppf(power)
    return float(np.tanh(z / np.sqrt(n - 3)))

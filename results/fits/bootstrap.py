"""Seeded paired percentile bootstrap of Kendall's tau-b and Spearman's rho (pure numpy).

Resample b draws ``idx[b]`` = row b of ``default_rng(random_state).integers(0, n, (B, n))``; its
statistics equal ``scipy.stats.kendalltau(x[idx[b]], y[idx[b]])`` and ``spearmanr(...)`` (a
constant resample gives NaN and is left out), and the CI bounds are ``np.nanpercentile`` of the B
values at ``50 (1 -+ confidence)``. Tests check this against a direct loop over scipy.

All B resamples are computed together from the copy counts ``c[b, a]`` (how often original
point a was drawn), without materialising the resamples:

- Spearman: the average rank of a value in a resample is (copies of smaller values) +
  (copies of it + 1) / 2; O(B n) after one sort.
- Kendall, concordant - discordant = sum over pairs a, b of ``c_a c_b sign(x_a - x_b)
  sign(y_a - y_b)`` / 2: for n <= ``PAIRWISE_MAX_N`` as one matrix product (O(B n^2) flops in
  BLAS), above it by a Fenwick tree over y-ranks swept in x order (O(n log n) steps, each a numpy
  operation over all B resamples), where one scipy call per resample would cost O(B n log n) in
  Python-level calls. Ties: the pairs not tied in x number (N^2 - sum over x-values of
  (copies)^2) / 2, likewise y; tau-b divides by the root of their product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from results.fits.stats import NAN, _quiet, degenerate

PAIRWISE_MAX_N = 1500  # the O(B n^2) matrix form is faster up to about here
CHUNK_ELEMENTS = 4_000_000  # resamples x points handled together (memory: 32 MB per array)


@dataclass(frozen=True)
class BootstrapPlan:
    """Resampling settings of every fit, stored with each row of fits.parquet.

    ``n_resamples`` per fit; when ``n * n_resamples`` exceeds ``budget`` the count drops to
    ``budget // n``, never below ``min_resamples``: past a few thousand points the percentile
    bounds move little with more resamples, and a 10,000-trial study has dozens of fits.
    """

    n_resamples: int = 1000
    min_resamples: int = 200
    budget: int = 1_000_000
    random_state: int = 0
    confidence: float = 0.95

    def resamples(self, n: int) -> int:
        return max(self.min_resamples, min(self.n_resamples, self.budget // max(n, 1)))


DEFAULT_PLAN = BootstrapPlan()


def resample_indices(n: int, n_resamples: int, random_state: int) -> np.ndarray:
    """(n_resamples, n) int64 indices drawn with replacement from ``default_rng(random_state)``."""
    return np.random.default_rng(random_state).integers(0, n, size=(n_resamples, n))


def rank_cis(
    x: np.ndarray, y: np.ndarray, n_resamples: int, random_state: int = 0, confidence: float = 0.95
) -> tuple[float, float, float, float]:
    """(tau_low, tau_high, rho_low, rho_high): percentile-bootstrap CIs (module docstring)."""
    if degenerate(x, y):
        return NAN, NAN, NAN, NAN
    idx = resample_indices(len(x), n_resamples, random_state)
    taus, rhos = [], []
    kendall = _KendallPairwise(x, y) if len(x) <= PAIRWISE_MAX_N else _KendallTree(x, y)
    step = max(1, CHUNK_ELEMENTS // len(x))
    for lo in range(0, len(idx), step):
        chunk = idx[lo : lo + step]
        taus.append(kendall(chunk))
        rhos.append(_spearman(x, y, chunk))
    q = [50 * (1 - confidence), 50 * (1 + confidence)]
    bounds = []
    for values in (np.concatenate(taus), np.concatenate(rhos)):
        values = np.clip(values, -1.0, 1.0)  # rounding can step past +-1
        bounds += [float(v) for v in _quiet(np.nanpercentile, values, q)]
    return bounds[0], bounds[1], bounds[2], bounds[3]


def levels(values: np.ndarray) -> np.ndarray:
    """Dense 0-based rank of each value: equal values share a level."""
    order = np.argsort(values, kind="stable")
    level = np.empty(len(values), dtype=np.int64)
    level[order] = np.concatenate([[0], np.cumsum(np.diff(values[order]) != 0)])
    return level


def copies(idx: np.ndarray, level: np.ndarray, n_levels: int) -> np.ndarray:
    """(B, n_levels) float counts: how many draws of each resample fall on each level."""
    b = idx.shape[0]
    drawn = level[idx] + (np.arange(b) * n_levels)[:, None]
    return np.bincount(drawn.ravel(), minlength=b * n_levels).reshape(b, n_levels).astype(float)


def _tau_b(con_minus_dis: np.ndarray, idx: np.ndarray, x_levels, y_levels) -> np.ndarray:
    n = idx.shape[1]
    untied = [
        0.5 * (n * n - (copies(idx, lv, int(lv.max()) + 1) ** 2).sum(axis=1))
        for lv in (x_levels, y_levels)
    ]
    with np.errstate(invalid="ignore", divide="ignore"):
        return con_minus_dis / np.sqrt(untied[0]) / np.sqrt(untied[1])


class _KendallPairwise:
    """tau-b of resamples as c^T sign c / 2 (small n)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.sign = np.sign(x[:, None] - x[None, :]) * np.sign(y[:, None] - y[None, :])
        self.lx, self.ly = levels(x), levels(y)

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        n = idx.shape[1]
        c = copies(idx, np.arange(n), n)
        return _tau_b(0.5 * np.einsum("bi,bi->b", c @ self.sign, c), idx, self.lx, self.ly)


class _KendallTree:
    """tau-b of resamples by a Fenwick-tree sweep in x order, all resamples at once (large n)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.lx, self.ly = levels(x), levels(y)
        self.order = np.lexsort((y, x))  # positions in x order
        self.n_y = int(self.ly.max()) + 1
        ly = self.ly[self.order] + 1  # 1-based tree indices
        self.below = [_prefix_path(int(r) - 1) for r in ly]  # y-levels < y
        self.upto = [_prefix_path(int(r)) for r in ly]  # y-levels <= y
        self.update = [_update_path(int(r), self.n_y) for r in ly]
        lx = self.lx[self.order]
        self.group_end = np.append(lx[1:] != lx[:-1], True)  # last position of each x-value

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        n = idx.shape[1]
        position = np.empty(n, dtype=np.int64)
        position[self.order] = np.arange(n)
        c = copies(idx, position, n).T.copy()  # (n, B): copies of the point at each x position
        tree = np.zeros((self.n_y + 1, idx.shape[0]))
        inserted = np.zeros(idx.shape[0])
        s = np.zeros(idx.shape[0])
        start = 0
        for p in range(n):
            below = tree[self.below[p]].sum(axis=0)
            above = inserted - tree[self.upto[p]].sum(axis=0)
            s += c[p] * (below - above)
            if self.group_end[p]:  # insert a whole x-value at once: x-ties do not count
                for q in range(start, p + 1):
                    tree[self.update[q]] += c[q]
                    inserted += c[q]
                start = p + 1
        return _tau_b(s, idx, self.lx, self.ly)


def _prefix_path(i: int) -> np.ndarray:
    """Fenwick indices whose sum is the prefix 1..i."""
    path = []
    while i > 0:
        path.append(i)
        i -= i & -i
    return np.array(path, dtype=np.int64)


def _update_path(i: int, size: int) -> np.ndarray:
    path = []
    while i <= size:
        path.append(i)
        i += i & -i
    return np.array(path, dtype=np.int64)


def _spearman(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Spearman rho of each resample: Pearson r of their average ranks."""
    rx, ry = _resample_ranks(x, idx), _resample_ranks(y, idx)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(axis=1) / np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))


def _resample_ranks(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``scipy.stats.rankdata(values[idx], axis=1)`` (average ranks) in O(B n) from one sort."""
    b = idx.shape[0]
    level = levels(values)
    g = int(level.max()) + 1
    counts = copies(idx, level, g)
    avg = (np.cumsum(counts, axis=1) - counts + (counts + 1) / 2).ravel()
    return avg[level[idx] + (np.arange(b) * g)[:, None]]

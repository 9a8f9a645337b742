"""Correlation statistics equal scipy.stats exactly; partial r equals a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import stats as st

from results.fits import bootstrap, stats

RTOL = 1e-12


@pytest.fixture
def xy() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=40)
    return x, 0.6 * x + rng.normal(size=40)


def test_pearson_equals_scipy_with_fisher_z_ci(xy):
    x, y = xy
    r, p, lo, hi = stats.pearson(x, y)
    ref = st.pearsonr(x, y)
    ci = ref.confidence_interval(0.95)
    assert_allclose([r, p, lo, hi], [ref.statistic, ref.pvalue, ci.low, ci.high], rtol=RTOL)
    z = np.arctanh(ref.statistic)
    half = st.norm.ppf(0.975) / np.sqrt(len(x) - 3)
    assert_allclose([lo, hi], np.tanh([z - half, z + half]), rtol=1e-9)


def test_rank_correlations_and_ols_equal_scipy(xy):
    x, y = xy
    assert_allclose(stats.kendall(x, y), tuple(st.kendalltau(x, y)), rtol=RTOL)
    assert_allclose(stats.spearman(x, y), tuple(st.spearmanr(x, y)), rtol=RTOL)
    ref = st.linregress(x, y)
    q = st.t.ppf(0.975, len(x) - 2)
    expected = [
        ref.slope,
        ref.stderr,
        ref.slope - q * ref.stderr,
        ref.slope + q * ref.stderr,
        ref.intercept,
        ref.intercept_stderr,
        ref.intercept - q * ref.intercept_stderr,
        ref.intercept + q * ref.intercept_stderr,
    ]
    assert_allclose(stats.ols(x, y), expected, rtol=RTOL)


def test_degenerate_inputs_give_nan_not_errors():
    flat = np.ones(10)
    assert np.isnan(stats.pearson(flat, np.arange(10.0))).all()
    assert np.isnan(stats.kendall(np.arange(2.0), np.arange(2.0))).all()
    assert np.isnan(stats.ols(flat, np.arange(10.0))).all()
    assert np.isnan(bootstrap.rank_cis(flat, np.arange(10.0), 50)).all()


def test_partial_correlation_equals_closed_form_and_precision_matrix():
    rng = np.random.default_rng(3)
    z = rng.normal(size=60)
    x = z + rng.normal(size=60)
    y = 0.5 * z + 0.3 * x + rng.normal(size=60)
    r, p, lo, hi = stats.partial(x, y, z)
    rxy, rxz, ryz = st.pearsonr(x, y)[0], st.pearsonr(x, z)[0], st.pearsonr(y, z)[0]
    closed = (rxy - rxz * ryz) / np.sqrt((1 - rxz**2) * (1 - ryz**2))
    precision = np.linalg.inv(np.corrcoef([x, y, z]))
    from_precision = -precision[0, 1] / np.sqrt(precision[0, 0] * precision[1, 1])
    assert_allclose(r, closed, rtol=1e-10)
    assert_allclose(r, from_precision, rtol=1e-10)
    df = len(x) - 3
    t = closed * np.sqrt(df / (1 - closed**2))
    assert_allclose(p, 2 * st.t.sf(abs(t), df), rtol=1e-9)
    assert lo < r < hi
    assert abs(r - rxy) > 0.05  # controlling for z really changes the correlation


def test_partial_on_a_constant_covariate_is_the_raw_correlation(xy):
    x, y = xy
    r, *_ = stats.partial(x, y, np.full(len(x), 0.3))
    assert_allclose(r, st.pearsonr(x, y)[0], rtol=1e-10)


def test_partial_needs_four_points():
    assert np.isnan(stats.partial(np.arange(3.0), np.array([1.0, 3.0, 2.0]), np.zeros(3))).all()

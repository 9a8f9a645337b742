"""The vectorised bootstrap equals one scipy call per resample, exactly."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import stats as st

from results.fits import bootstrap


def _loop_cis(x, y, b, seed, confidence=0.95):
    idx = bootstrap.resample_indices(len(x), b, seed)
    taus = np.array([st.kendalltau(x[i], y[i]).statistic for i in idx])
    rhos = np.array([st.spearmanr(x[i], y[i]).statistic for i in idx])
    q = [50 * (1 - confidence), 50 * (1 + confidence)]
    return [*np.nanpercentile(np.clip(taus, -1, 1), q), *np.nanpercentile(np.clip(rhos, -1, 1), q)]


@pytest.mark.parametrize("n", [5, 37])
def test_cis_equal_a_scipy_loop_on_the_same_resamples(n):
    rng = np.random.default_rng(n)
    x = np.round(rng.normal(size=n), 1)  # rounding makes ties, which tau-b must handle
    y = np.round(x + rng.normal(size=n), 1)
    got = bootstrap.rank_cis(x, y, 300, random_state=11)
    with np.errstate(invalid="ignore"):
        assert_allclose(got, _loop_cis(x, y, 300, 11), rtol=1e-12)


@pytest.mark.parametrize("kendall", [bootstrap._KendallPairwise, bootstrap._KendallTree])
def test_both_kendall_forms_equal_scipy_per_resample(kendall):
    rng = np.random.default_rng(5)
    x = np.round(rng.normal(size=120), 1)
    y = np.round(0.4 * x + rng.normal(size=120), 1)
    idx = bootstrap.resample_indices(120, 40, 2)
    expected = [st.kendalltau(x[i], y[i]).statistic for i in idx]
    assert_allclose(kendall(x, y)(idx), expected, rtol=1e-12)


def test_large_n_uses_the_tree_and_still_matches(monkeypatch):
    monkeypatch.setattr(bootstrap, "PAIRWISE_MAX_N", 10)
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=60), rng.normal(size=60)
    assert_allclose(bootstrap.rank_cis(x, y, 100, 4), _loop_cis(x, y, 100, 4), rtol=1e-12)


def test_resample_ranks_are_average_ranks():
    rng = np.random.default_rng(1)
    values = np.round(rng.normal(size=30), 1)
    idx = bootstrap.resample_indices(30, 20, 0)
    assert_allclose(bootstrap._resample_ranks(values, idx), st.rankdata(values[idx], axis=1))


def test_seed_fixes_the_interval_and_a_new_seed_moves_it():
    rng = np.random.default_rng(2)
    x = rng.normal(size=50)
    y = x + rng.normal(size=50)
    a = bootstrap.rank_cis(x, y, 200, random_state=0)
    assert a == bootstrap.rank_cis(x, y, 200, random_state=0)
    assert a != bootstrap.rank_cis(x, y, 200, random_state=1)
    tau = st.kendalltau(x, y).statistic
    assert a[0] < tau < a[1]


def test_plan_shrinks_resamples_with_n_but_not_below_the_minimum():
    plan = bootstrap.BootstrapPlan(n_resamples=1000, min_resamples=200, budget=1_000_000)
    assert plan.resamples(50) == 1000
    assert plan.resamples(2500) == 400
    assert plan.resamples(50_000) == 200


def test_cis_equal_scipy_stats_bootstrap_paired_percentile():
    """scipy.stats.bootstrap(paired=True, method='percentile') draws the same resamples from the
    same generator: the library gives these very intervals (bench/results_scale.py shows it is
    1.6x to 150x slower, which is why results.fits.bootstrap stays)."""
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=40), 1)
    y = np.round(0.5 * x + rng.normal(size=40), 1)
    ours = bootstrap.rank_cis(x, y, 400, random_state=7)
    theirs = []
    for statistic in (st.kendalltau, st.spearmanr):
        res = st.bootstrap(
            (x, y),
            lambda a, b, f=statistic: f(a, b).statistic,
            paired=True,
            vectorized=False,
            n_resamples=400,
            method="percentile",
            random_state=np.random.default_rng(7),
        )
        theirs += [res.confidence_interval.low, res.confidence_interval.high]
    assert_allclose(ours, theirs, rtol=1e-12)

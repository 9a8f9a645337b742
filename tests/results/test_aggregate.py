"""Gain matching, exclusions and fits rows, checked against direct scipy computations."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import stats as st

from results.fits import aggregate, bootstrap
from results.fits.bootstrap import BootstrapPlan
from search_spaces.fits import FitFilter, FitSpec

PLAN = BootstrapPlan(n_resamples=100, min_resamples=50, budget=100_000, random_state=3)


def test_gain_is_generalization_minus_mean_of_ok_matched_baselines():
    key = np.array(["a", "a", "a", "a", "b", "c", "c"], dtype=object)
    base = np.array([True, True, True, False, False, True, False])
    status = np.array(["ok", "ok", "error", "ok", "ok", "diverged", "ok"], dtype=object)
    gen = np.array([0.80, 0.90, 0.99, 0.95, 0.70, 0.60, 0.65])
    gain, n_base = aggregate.matched_gain(key, base, status, gen)
    assert_allclose(gain[3], 0.95 - 0.85)  # the errored baseline (0.99) does not count
    assert_allclose(gain[:2], [0.80 - 0.85, 0.90 - 0.85])
    assert list(n_base) == [2, 2, 2, 2, 0, 0, 0]
    assert np.isnan(gain[4])  # no baseline with key "b": null, never guessed
    assert np.isnan(gain[6])  # only a diverged baseline: null


def _trials(n_configs: int = 6, seeds: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n = n_configs * seeds
    config = np.repeat([f"c{i}" for i in range(n_configs)], seeds).astype(object)
    inst = np.repeat(np.linspace(0.01, 0.2, n_configs), seeds) + rng.normal(0, 0.01, n)
    cols = {
        "status": np.full(n, "ok", dtype=object),
        "is_baseline": np.zeros(n, dtype=bool),
        "n_baselines": np.full(n, 2),
        "config_key": config,
        "pruning_target": np.where(np.arange(n) % 2, "largest", "smallest").astype(object),
        "model_name": np.full(n, "cnn1d", dtype=object),
        "dataset_name": np.full(n, "mnist1d", dtype=object),
        "mean_instability": inst,
        "mean_stability": 100 * (1 - inst),
        "gain": 0.3 * inst + rng.normal(0, 0.01, n),
        "generalization": 0.8 + 0.3 * inst + rng.normal(0, 0.01, n),
        "gen_gap": 0.1 - 0.2 * inst + rng.normal(0, 0.01, n),
        "final_sparsity": np.linspace(0.2, 0.6, n),
        "control_train_acc": 0.9 + rng.normal(0, 0.02, n),
        "hessian_topk_sum": np.full(n, np.nan),
        "grad_noise_trace": np.full(n, np.nan),
        "eps_flatness": np.full(n, np.nan),
    }
    return cols


def _row(rows, **key):
    (found,) = [r for r in rows if all(r[k] == v for k, v in key.items())]
    return found


def test_trial_level_row_equals_scipy_on_the_included_points():
    cols = _trials()
    cols["status"][0] = "diverged"
    cols["status"][1] = "running"
    cols["n_baselines"][2] = 0
    cols["gain"][2] = np.nan
    cols["gain"][3] = np.nan  # a baseline but no value: missing_y
    cols["is_baseline"][4] = True  # unpruned trials never enter
    rows = aggregate.fits(cols, PLAN)
    row = _row(rows, x="mean_instability", y="gain", level="trial", grouping="all")
    keep = np.arange(5, len(cols["gain"]))
    x, y = cols["mean_instability"][keep], cols["gain"][keep]
    assert row["n"] == len(keep)
    assert row["excluded"] == {"diverged": 1, "incomplete": 1, "no_baseline": 1, "missing_y": 1}
    assert row["n_excluded"] == 4
    ref = st.pearsonr(x, y)
    assert_allclose([row["pearson_r"], row["pearson_p"]], [ref.statistic, ref.pvalue], rtol=1e-12)
    assert_allclose(row["kendall_tau"], st.kendalltau(x, y).statistic, rtol=1e-12)
    assert_allclose(row["spearman_rho"], st.spearmanr(x, y).statistic, rtol=1e-12)
    assert_allclose(row["slope"], st.linregress(x, y).slope, rtol=1e-12)
    b = PLAN.resamples(len(x))
    assert row["n_resamples"] == b
    cis = bootstrap.rank_cis(x, y, b, PLAN.random_state)
    assert_allclose([row["kendall_ci_low"], row["kendall_ci_high"]], cis[:2], rtol=1e-12)
    z = cols["final_sparsity"][keep]
    rxy, rxz, ryz = st.pearsonr(x, y)[0], st.pearsonr(x, z)[0], st.pearsonr(y, z)[0]
    closed = (rxy - rxz * ryz) / np.sqrt((1 - rxz**2) * (1 - ryz**2))
    assert_allclose(row["partial_r_sparsity"], closed, rtol=1e-10)
    assert row["partial_n_sparsity"] == len(keep)


def test_config_level_averages_seeds_first():
    cols = _trials(n_configs=5, seeds=4)
    cols["status"][0] = "error"  # config c0 keeps 3 of its 4 seeds
    rows = aggregate.fits(cols, PLAN)
    row = _row(rows, x="mean_instability", y="gain", level="config", grouping="all")
    used = np.arange(1, 20)
    keys = cols["config_key"][used]
    mx = [cols["mean_instability"][used][keys == k].mean() for k in sorted(set(keys))]
    my = [cols["gain"][used][keys == k].mean() for k in sorted(set(keys))]
    assert row["n"] == 5
    assert row["excluded"] == {"error": 1}
    assert_allclose(row["pearson_r"], st.pearsonr(mx, my).statistic, rtol=1e-12)
    assert_allclose(row["kendall_tau"], st.kendalltau(mx, my).statistic, rtol=1e-12)


def test_groups_split_by_target_and_pool_as_all():
    cols = _trials()
    rows = aggregate.fits(cols, PLAN)
    groups = {
        (r["grouping"], r["group"]) for r in rows if r["y"] == "gain" and r["level"] == "trial"
    }
    assert groups == {
        ("all", "all"),
        ("target", "largest"),
        ("target", "smallest"),
        ("model", "cnn1d"),
        ("dataset", "mnist1d"),
    }
    largest = _row(rows, y="gain", level="trial", grouping="target", group="largest")
    m = cols["pruning_target"] == "largest"
    assert largest["n"] == m.sum()
    ref = st.pearsonr(cols["mean_instability"][m], cols["gain"][m]).statistic
    assert_allclose(largest["pearson_r"], ref, rtol=1e-12)
    pooled = _row(rows, y="gain", level="trial", grouping="all")
    single_model = _row(rows, y="gain", level="trial", grouping="model")
    label = ("grouping", "group", "group_by")
    assert {k: v for k, v in pooled.items() if k not in label} == {
        k: v for k, v in single_model.items() if k not in label
    }


def test_pairs_include_flatness_only_when_measured():
    cols = _trials()
    assert ("mean_instability", "hessian_topk_sum") not in aggregate.fit_pairs(cols)
    cols["hessian_topk_sum"][3] = 120.0
    assert ("mean_instability", "hessian_topk_sum") in aggregate.fit_pairs(cols)
    rows = aggregate.fits(cols, PLAN)
    row = _row(rows, fit="default", y="hessian_topk_sum", level="trial", grouping="all")
    assert row["n"] == 1 and row["excluded"]["missing_y"] == len(cols["gain"]) - 1
    assert np.isnan(row["pearson_r"])  # one point: undefined, reported as such


@pytest.mark.parametrize("status", ["error", "diverged", "stopped", "pending"])
def test_every_non_ok_status_is_a_named_exclusion(status):
    cols = _trials()
    cols["status"][5] = status
    reason = aggregate.exclusions(cols, "mean_instability", "gain")
    assert reason[5] == {"stopped": "incomplete", "pending": "incomplete"}.get(status, status)
    assert (reason[np.arange(len(reason)) != 5] == "").all()


STATS = ("n", "pearson_r", "kendall_tau", "spearman_rho", "slope", "excluded", "n_excluded")


def test_a_spec_fit_spelled_like_a_default_grouping_gives_its_numbers():
    cols = _trials()
    cols["status"][0] = "error"
    spec = FitSpec(name="by_target", group_by="pruning_target")
    rows = aggregate.fits(cols, PLAN, [spec])
    for level in ("trial", "config"):
        for target in ("largest", "smallest"):
            default = _row(
                rows, fit="default", y="gain", level=level, grouping="target", group=target
            )
            named = _row(rows, fit="by_target", level=level, group=target)
            assert {k: named[k] for k in STATS} == {k: default[k] for k in STATS}
            assert (named["grouping"], named["group_by"]) == ("pruning_target", "pruning_target")
    assert default["include"] == ["pruned"] and default["where"] == []


def test_unpruned_and_scratch_trials_enter_at_instability_zero_when_included():
    cols = _trials(n_configs=6, seeds=2)
    cols["is_baseline"][:2] = True  # c0: the unpruned baselines (instability 0 by definition)
    cols["mean_instability"][:2], cols["mean_stability"][:2] = 0.0, 100.0
    cols["pruning_scratch"] = np.zeros(12, dtype=bool)
    cols["pruning_scratch"][2:4] = True  # c1: scratch, recorded instability not 0
    spec = FitSpec(name="all", include=("pruned", "unpruned", "scratch"), levels=("trial",))
    only_pruned = FitSpec(name="pruned", levels=("trial",))
    rows = aggregate.fits(cols, PLAN, [spec, only_pruned])
    everyone = _row(rows, fit="all")
    x = np.concatenate([[0.0] * 4, cols["mean_instability"][4:]])
    ref = st.pearsonr(x, cols["gain"])
    assert everyone["n"] == 12
    assert_allclose(everyone["pearson_r"], ref.statistic, rtol=1e-12)
    assert _row(rows, fit="pruned")["n"] == 8
    assert _row(rows, fit="default", y="gain", level="trial", grouping="all")["n"] == 8


def test_where_clauses_union_and_group_values_order_numerically():
    cols = _trials(n_configs=6, seeds=2)
    cols["pruning_period"] = np.repeat([4.0, 40.0, 4.0, 40.0, 300.0, 20.0], 2)
    clause = (FitFilter("pruning_target", ("smallest",)), FitFilter("pruning_period", (4, 40)))
    spec = FitSpec(
        name="w", where=(clause, (FitFilter("pruning_period", (300,)),)), levels=("trial",)
    )
    grouped = FitSpec(name="g", group_by="pruning_period", levels=("trial",))
    rows = aggregate.fits(cols, PLAN, [spec, grouped])
    smallest = cols["pruning_target"] == "smallest"
    kept = (smallest & np.isin(cols["pruning_period"], [4, 40])) | (cols["pruning_period"] == 300)
    assert _row(rows, fit="w")["n"] == kept.sum()
    assert [r["group"] for r in rows if r["fit"] == "g"] == ["4", "20", "40", "300"]


def test_imp_val_selected_gain_is_against_the_dense_models_final_accuracy():
    """Jin et al.: the sparsity level chosen on validation vs the dense model at the end of its
    training (OpenLTH's level-0 final model), not an early-stopped dense model. A schedule trial
    keeps the baselines' own generalization."""
    from results.tables.export import _add_gain
    from trainables.config import PruningConfig, TrialConfig

    def trial(method, is_baseline, generalization, final, measure="val_selected"):
        row = {
            "baseline_key": "b", "is_baseline": is_baseline, "status": "ok",
            "generalization": generalization, "test_acc_final": final,
        }  # fmt: skip
        return row, TrialConfig(pruning=PruningConfig(method=method), generalization=measure)

    rows, cfgs = zip(
        trial("none", True, 0.85, 0.80),  # early-stopped on validation: 0.85; at the end: 0.80
        trial("none", True, 0.83, 0.78),
        trial("imp", False, 0.82, 0.70),
        trial("schedule", False, 0.82, 0.70),
        trial("imp", False, 0.82, 0.70, measure="best_after_last_event"),
        strict=True,
    )
    _add_gain(rows, cfgs)
    assert rows[2]["gain"] == pytest.approx(0.82 - (0.80 + 0.78) / 2)
    assert rows[3]["gain"] == pytest.approx(0.82 - (0.85 + 0.83) / 2)
    assert rows[4]["gain"] == pytest.approx(0.82 - (0.85 + 0.83) / 2)
    assert rows[0]["gain"] == pytest.approx(0.85 - 0.84) and rows[2]["n_baselines"] == 2

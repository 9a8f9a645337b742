"""The figure panels' numbers (pure, exact): Figs. 2, 3, 5 / D2 and 6, and Jin et al.'s curves."""

from __future__ import annotations

import numpy as np
import pytest
import synthetic as S
from numpy.testing import assert_allclose, assert_array_equal
from scipy import stats as st

from results.report import page, panels
from results.report.curves_data import trial_rounds
from results.report.data import build_report_data
from results.tables.export import fits_table, trial_arrays
from results.tables.storage import StudyMeta

META = StudyMeta("panels", "h", "name: panels\n", "0.1.0")


def _data(tables):
    return build_report_data(META, tables.trials, tables.epochs, S.fits(tables))


@pytest.fixture(scope="module")
def figures():
    tables = S.figure_study(seeds=4)
    return tables, trial_arrays(tables.trials), _data(tables).panels


def _check_corr(corr, x, y):
    m = np.isfinite(x) & np.isfinite(y)
    r, tau = st.pearsonr(x[m], y[m]), st.kendalltau(x[m], y[m])
    assert corr.n == m.sum()
    assert_allclose([corr.r, corr.r_p, corr.tau, corr.tau_p], [r[0], r[1], tau[0], tau[1]])
    ci = r.confidence_interval(0.95)
    assert_allclose([corr.r_low, corr.r_high], [ci.low, ci.high])


def _pruned(cols):
    return ~cols["is_baseline"] & ~cols["pruning_scratch"] & (cols["status"] == "ok")


def test_fig2_one_series_and_line_per_target_and_the_baselines_unfitted(figures):
    _, cols, p = figures
    sc = p.fig2
    pruned = _pruned(cols)
    labels = [s.label for s in sc.series]
    assert labels == [
        "target largest",
        "target random",
        "target smallest",
        "no pruning (not fitted)",
    ]
    for s, ln, target in zip(sc.series, sc.lines, ("largest", "random", "smallest"), strict=False):
        m = pruned & (cols["pruning_target"] == target)
        assert_array_equal(s.x, cols["mean_stability"][m])
        assert_array_equal(s.y, cols["generalization"][m])
        _check_corr(ln.corr, s.x, s.y)
    assert sc.lines[-1].label == "all pruned trials"
    _check_corr(sc.lines[-1].corr, cols["mean_stability"][pruned], cols["generalization"][pruned])
    assert (sc.series[-1].x == 100).all() and len(sc.series[-1].x) == 4


def test_fig3_correlation_per_period_against_its_rate(figures):
    _, cols, p = figures
    pruned = _pruned(cols)
    assert_array_equal(p.fig3.period, S.PERIODS)
    for period, rate, ln in zip(p.fig3.period, p.fig3.rate, p.fig3.scatter.lines, strict=True):
        m = pruned & (cols["pruning_period"] == period)
        assert m.sum() == 12  # 3 targets x 4 seeds
        _check_corr(ln.corr, cols["mean_stability"][m], cols["generalization"][m])
        assert_allclose(rate, cols["pruning_rate"][m].mean())


def test_fig6_puts_unpruned_and_scratch_at_stability_100(figures):
    _, cols, p = figures
    assert [(sc.x, sc.y) for sc in p.fig6] == [
        ("mean_stability", "hessian_topk_sum"),
        ("hessian_topk_sum", "generalization"),
        ("mean_stability", "grad_noise_trace"),
        ("grad_noise_trace", "generalization"),
    ]
    sc = p.fig6[0]
    by_label = {s.label: s for s in sc.series}
    assert list(by_label)[:2] == ["no pruning", "scratch"]
    assert (by_label["scratch"].x == 100).all() and (by_label["no pruning"].x == 100).all()
    x = np.where(cols["pruning_scratch"], 100.0, cols["mean_stability"])
    _check_corr(sc.lines[0].corr, x, cols["hessian_topk_sum"])
    assert sc.lines[0].corr.n == len(x) == 4 * 11


def test_no_panel_without_its_dimension():
    tables = S.tables(*S.study_inputs(n_per_target=1))  # period 1 only
    one_target = tables.trials.filter(
        np.isin(tables.trials.column("pruning_target").to_numpy(zero_copy_only=False), ["smallest"])
    )
    fits = fits_table(one_target, "h", S.FAST_PLAN)
    p = build_report_data(META, one_target, tables.epochs, fits).panels
    assert p.fig2 is None and p.fig3 is None and p.noise == () and p.imp is None
    assert not {"fig2", "fig3"} & set(fits.column("panel").to_pylist())


def test_noise_groups_mirror_fig5_and_d2_with_seed_means():
    tables = S.noise_study(seeds=3)
    groups = _data(tables).panels.noise
    assert [g.title for g in groups] == [
        "gaussian, iter (Fig. 5)",
        "zeroing, cumulative (Fig. D2)",
        "zeroing, iter (Fig. 5)",
    ]
    zeroing = groups[2]
    assert [(c.label, c.role, c.n) for c in zeroing.curves] == [
        ("no pruning", "unpruned", 3),
        ("pruning reference", "reference", 3),
        ("zeroing 0 steps", "arm", 3),
        ("zeroing 50 steps", "arm", 3),
    ]
    ep = tables.epochs.to_pydict()
    for curve, prefix in zip(zeroing.curves, ("b", "n0s", "n1s", "n2s"), strict=True):
        rows = [i for i, t in enumerate(ep["trial_id"]) if t.startswith(prefix)]
        acc = np.array(
            [[ep["test_acc"][i] for i in rows if ep["epoch"][i] == e] for e in curve.epoch]
        )
        assert_allclose(curve.mean, acc.mean(axis=1))
        assert_allclose(curve.sem, acc.std(axis=1, ddof=1) / np.sqrt(3))
    assert groups[1].curves[-1].label == "zeroing 89 steps, restore"


def test_imp_levels_are_the_trained_models_of_the_level_end_rows():
    """Each level's numbers are its level-end row's, the level's trained model (before its prune):
    test error, training loss, noisy/clean accuracy and the sparsity it trained at, one model."""
    tables = S.imp_study(seeds=2, noise=(0.0, 0.2))
    keys = ("epoch", "imp_round", "sparsity", "test_acc", "train_loss")
    ep = {k: np.asarray(v, dtype=float) for k, v in tables.epochs.to_pydict().items() if k in keys}
    ep["trial_id"] = np.asarray(tables.epochs.column("trial_id").to_pylist(), dtype=object)
    for k in ("train_acc_noisy", "train_acc_clean"):
        ep[k] = np.asarray(tables.epochs.column(k).to_pylist(), dtype=float)
    rounds = trial_rounds(ep, "none0")
    assert_array_equal(rounds["round"], [0, 1, 2])
    assert_allclose(rounds["sparsity"], [0, 0.2, 0.36])  # the sparsity each level trained at
    assert_allclose(rounds["test_error"], [1 - 0.62, 1 - 0.67, 1 - 0.72])  # before the prune
    assert_allclose(rounds["train_loss"], [0.5, 0.49, 0.48])
    assert_allclose(rounds["noisy"], [0.2, 0.3, 0.4])
    panel = _data(tables).panels.imp
    assert panel.noise_levels == (0.0, 0.2) and panel.has_noise
    by = {(c.control, c.noise): c for c in panel.curves}
    assert set(by) == {(c, n) for c in ("none", "extended_dense", "sparse_from_start")
                       for n in (0.0, 0.2)}  # fmt: skip
    assert len({c.label for c in panel.curves}) == 3  # one label (and colour) per arm
    dense = by["extended_dense", 0.2]
    assert_allclose(dense.sparsity, [0, 0.2, 0.36])  # IMP's sparsity after as many rounds
    assert_allclose(dense.test_error, 1 - np.array([0.6205, 0.6705, 0.7205]))  # seed mean
    scratch = by["sparse_from_start", 0.2]
    assert_array_equal(scratch.round, [3]) and scratch.n == 2
    assert_allclose(scratch.sparsity, [0.36])
    assert_allclose(scratch.test_error, [1 - (0.6 + 0.15 + 0.02 + 0.0005)])
    assert np.isnan(by["none", 0.0].train_acc_noisy).all()
    fig = panels.imp_figure(panel, "s")
    assert len(fig.layout.annotations) == 3 * 2  # 3 rows x 2 noise levels
    assert "training loss, label noise 0.2" in {a.text for a in fig.layout.annotations}


def test_panels_render_with_their_figure_names_and_escape_labels(figures):
    tables, _, p = figures
    sections = panels.panel_sections(p, "<b>x</b>")
    assert list(sections) == ["fig2", "fig3", "flatness"]
    assert "Fig. 2" in sections["fig2"] and "Fig. 3" in sections["fig3"]
    assert "Fig. 6" in sections["flatness"] and "<b>x</b>" not in "".join(sections.values())
    imp = _data(S.imp_study()).panels
    noise = _data(S.noise_study()).panels
    assert "Jin et al. 2022" in panels.panel_sections(imp, "s")["imp"]
    assert "Figs. 5 and D2" in panels.panel_sections(noise, "s")["noise"]
    html = page.render_report(_data(S.noise_study()))
    assert html.index('id="noise"') < html.index('id="dynamics"')


def test_the_spec_fits_get_their_own_table_saying_which_trials_they_fit(figures):
    from search_spaces.fits import FitFilter, FitSpec

    tables = figures[0]
    where = ((FitFilter("pruning_target", ("smallest",)), FitFilter("pruning_period", (1, 2))),)
    spec = FitSpec(name="fig2_subset", where=where + ((FitFilter("pruning_period", (3,)),),))
    fits = fits_table(tables.trials, "h", S.FAST_PLAN, [spec])
    html = page.render_report(build_report_data(META, tables.trials, tables.epochs, fits))
    table = html[html.index("Figure fits") :]
    assert table.count('<td class="l">fig2_subset</td>') == 2  # trial and config level
    assert "pruned; pruning_target in {smallest}, pruning_period in {1, 2} or " in table
    assert "pruning_period in {3}" in table
    no_spec = page.render_report(
        build_report_data(META, tables.trials, tables.epochs, S.fits(tables))
    )
    assert "fig2_subset" not in no_spec and '<td class="l">default.fig3</td>' in no_spec

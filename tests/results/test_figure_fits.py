"""Spec fits against Bartoldson et al.'s official analysis, re-implemented here from its definition.

The official rules (repository bbartoldson/GeneralizationStabilityTradeoff, ``figures_and_tables``):

- ``utils.py::add_stability_vars``: per epoch, Stability = 100 * (1 - (pre_prune_acc - test) /
  pre_prune_acc), ``test`` being the accuracy after that epoch's pruning;
- ``utils.py::add_pruning_status_vars``: pruned epochs are those that removed something; the
  last one (1-based epoch) counts only when > 1, else it is 0 and no epoch counts as pruned (a
  run pruned once before training, i.e. scratch pruning, or never pruned); ``post_prune`` =
  epoch >= that last pruned epoch;
- ``utils.py::summarize``: per run, Mean Stability (%) = the mean Stability of its pruned epochs,
  100 when it has none; Best Test Accuracy in Run = the max ``test`` over post-prune epochs;
  Generalization Gap = train - test at the first epoch reaching that max;
- ``Figure_3.py``: one ``scipy.stats.pearsonr`` / ``kendalltau`` of Mean Stability vs Best Test
  Accuracy per retrain period, over every run of that period (Prune_S, _R and _L);
- ``Figure_2.py`` (VGG): the same over the runs left after dropping no pruning, Prune_R 13% and
  scratch (Prune_S 1%, Prune_S 13%, Prune_L 13%);
- ``Figure_4.py``: per ResNet, over its pruned runs, against Best Test Accuracy and against the
  Generalization Gap;
- ``Figure_6.py``: over all six Fig. 2 configurations, unpruned and scratch included: Mean
  Stability vs the Hessian sum and vs the gradient-noise trace, and the Hessian sum vs Best Test
  Accuracy.
- ``Figure_Ei.py``: over the same six configurations, ``TIC = grad_covariance_trace /
  hessian_first_100_eigen_sum`` per run, Mean Stability vs TIC and TIC vs Best Test Accuracy
  (Fig. E5), and Mean Stability vs Best Test Accuracy (Fig. E6);
- ``Figure_2.py`` (ResNet) and ``Figure_B2.py`` (both models): every run but the unpruned
  reference (``F2_RN_0``, ``F2_VGG_0``), i.e. the three pruned cfgs;
- ``Table_C1.py``: each cfg's mean and standard deviation, no correlation.

The toy study (``synthetic.figure_study``): periods 1 / 2 / 3 stand for the paper's retrain
periods; Prune_S at periods 1 and 2 and Prune_R / Prune_L at period 2 stand for Fig. 2's cfgs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import synthetic as S
from numpy.testing import assert_allclose
from scipy import stats as st

from results.fits import aggregate
from results.tables.export import fits_table
from search_spaces.fits import FitFilter, FitSpec

# Fig. 2's configurations in the toy study: (target, period) -> the paper's legend.
FIG2_CFGS = {("smallest", 1): "Prune_S 1%", ("smallest", 2): "Prune_S 13%"}
FIG2_CFGS |= {("random", 2): "Prune_R 13%", ("largest", 2): "Prune_L 13%"}


def official_summary(tables) -> dict[str, dict]:
    """Per trial id: the official ``summarize`` row (see the module docstring), from our epochs."""
    ep = tables.epochs.to_pydict()
    out: dict[str, dict] = {}
    for tid in dict.fromkeys(ep["trial_id"]):
        rows = [i for i, t in enumerate(ep["trial_id"]) if t == tid]
        rows.sort(key=lambda i: ep["epoch"][i])
        epoch = np.array([ep["epoch"][i] + 1 for i in rows])  # the official logs count from 1
        test = np.array([ep["test_acc"][i] for i in rows])
        train = np.array([ep["train_acc"][i] for i in rows])
        pruned = np.array([bool(ep["is_event"][i]) for i in rows])
        before = np.array(
            [np.nan if ep["acc_before"][i] is None else ep["acc_before"][i] for i in rows]
        )
        last = epoch[pruned].max() if pruned.any() else 0
        if not last > 1:
            last, pruned = 0, np.zeros_like(pruned)
        stability = 100 * (1 - (before - test) / before)
        mean = stability[pruned].mean() if pruned.any() else 100.0
        post = epoch >= last
        best = int(np.flatnonzero(post)[np.argmax(test[post])])
        out[tid] = {"stability": mean, "best": test[best], "gap": train[best] - test[best]}
    return out


def _config(tables) -> dict[str, dict]:
    t = tables.trials.to_pydict()
    keys = ("is_baseline", "pruning_scratch", "pruning_target", "pruning_period", "model_name")
    cols = {k: t[k] for k in keys} | {
        "hessian": t["hessian_topk_sum"],
        "noise": t["grad_noise_trace"],
    }
    return {tid: {k: v[i] for k, v in cols.items()} for i, tid in enumerate(t["trial_id"])}


def _cfg_name(c: dict) -> str:
    """The run_cfg of the official logs: no pruning, scratch, or Prune_<target> at a period."""
    if c["is_baseline"]:
        return "No Pruning"
    if c["pruning_scratch"]:
        return "Scratch Pruning"
    return FIG2_CFGS.get((c["pruning_target"], c["pruning_period"]), "other")


def _official(x, y) -> dict:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    r, tau = st.pearsonr(x, y), st.kendalltau(x, y)
    return {
        "n": len(x),
        "pearson_r": r.statistic,
        "pearson_p": r.pvalue,
        "kendall_tau": tau.statistic,
        "kendall_p": tau.pvalue,
    }


def _assert_row(row: dict, expected: dict) -> None:
    assert row["n"] == expected["n"]
    for key in ("pearson_r", "pearson_p", "kendall_tau", "kendall_p"):
        assert_allclose(row[key], expected[key], rtol=1e-10, atol=1e-15, err_msg=key)


@pytest.fixture(scope="module")
def study():
    tables = S.figure_study(seeds=5, models=("cnn1d", "mlp"))
    return tables, official_summary(tables), _config(tables)


def _rows(tables, *specs: FitSpec) -> list[dict]:
    rows = fits_table(tables.trials, "feedface", S.FAST_PLAN, specs).to_pylist()
    return [r for r in rows if not r["fit"].startswith("default")]


def test_fig3_one_correlation_per_retrain_period(study):
    """``Figure_3.py``: per period, all pruned runs of that period (15 per model here)."""
    tables, summary, cfg = study
    spec = FitSpec(
        name="fig3",
        x="mean_stability",
        y="generalization",
        group_by="pruning_period",
        where=((FitFilter("model_name", ("cnn1d",)),),),
        levels=("trial",),
    )
    rows = _rows(tables, spec)
    assert [r["group"] for r in rows] == ["1", "2", "3"]
    for row, period in zip(rows, S.PERIODS, strict=True):
        runs = [
            t
            for t, c in cfg.items()
            if c["model_name"] == "cnn1d"
            and not c["is_baseline"]
            and not c["pruning_scratch"]
            and c["pruning_period"] == period
        ]
        assert len(runs) == 15
        _assert_row(
            row,
            _official([summary[t]["stability"] for t in runs], [summary[t]["best"] for t in runs]),
        )
        assert (row["grouping"], row["group_by"], row["include"]) == (
            "pruning_period",
            "pruning_period",
            ["pruned"],
        )


FIG2_WHERE = (
    (
        FitFilter("model_name", ("cnn1d",)),
        FitFilter("pruning_target", ("smallest",)),
        FitFilter("pruning_period", (1, 2)),
    ),
    (
        FitFilter("model_name", ("cnn1d",)),
        FitFilter("pruning_target", ("largest",)),
        FitFilter("pruning_period", (2,)),
    ),
)


def test_fig2_vgg_leaves_out_prune_r_unpruned_and_scratch(study):
    """``Figure_2.py`` (VGG): Prune_S 1%, Prune_S 13%, Prune_L 13% only."""
    tables, summary, cfg = study
    spec = FitSpec(
        name="fig2", x="mean_stability", y="generalization", where=FIG2_WHERE, levels=("trial",)
    )
    (row,) = _rows(tables, spec)
    fig2 = [t for t, c in cfg.items() if c["model_name"] == "cnn1d" and _cfg_name(c) != "other"]
    kept = [
        t for t in fig2 if _cfg_name(cfg[t]) not in ("No Pruning", "Prune_R 13%", "Scratch Pruning")
    ]
    assert len(kept) == 15
    _assert_row(
        row, _official([summary[t]["stability"] for t in kept], [summary[t]["best"] for t in kept])
    )
    assert row["where"] == [
        [
            ("model_name", ["cnn1d"]),
            ("pruning_target", ["smallest"]),
            ("pruning_period", ["1", "2"]),
        ],
        [("model_name", ["cnn1d"]), ("pruning_target", ["largest"]), ("pruning_period", ["2"])],
    ]


def test_fig4_per_model_against_accuracy_and_gap(study):
    """``Figure_4.py``: per ResNet, its pruned runs (here every pruned cfg of each model)."""
    tables, summary, cfg = study
    specs = [
        FitSpec(name=f"fig4_{y}", x="mean_stability", y=y, group_by="model_name", levels=("trial",))
        for y in ("generalization", "gen_gap")
    ]
    rows = _rows(tables, *specs)
    assert [(r["fit"], r["group"]) for r in rows] == [
        ("fig4_generalization", "cnn1d"),
        ("fig4_generalization", "mlp"),
        ("fig4_gen_gap", "cnn1d"),
        ("fig4_gen_gap", "mlp"),
    ]
    for row in rows:
        runs = [
            t
            for t, c in cfg.items()
            if c["model_name"] == row["group"] and not c["is_baseline"] and not c["pruning_scratch"]
        ]
        key = "best" if row["y"] == "generalization" else "gap"
        _assert_row(
            row, _official([summary[t]["stability"] for t in runs], [summary[t][key] for t in runs])
        )


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ("mean_stability", "hessian_topk_sum"),
        ("hessian_topk_sum", "generalization"),
        ("mean_stability", "grad_noise_trace"),
        ("mean_stability", "tic"),  # Fig. E5
        ("tic", "generalization"),  # Fig. E5
        ("mean_stability", "generalization"),  # Fig. E6
    ],
)
def test_fig6_includes_the_unpruned_and_scratch_runs(study, x, y):
    """``Figure_6.py`` and ``Figure_Ei.py`` (E5, E6): all six Fig. 2 cfgs, no pruning and scratch
    at stability 100."""
    tables, summary, cfg = study
    spec = FitSpec(
        name="fig6",
        x=x,
        y=y,
        include=("pruned", "unpruned", "scratch"),
        levels=("trial",),
        where=(
            (FitFilter("model_name", ("cnn1d",)), FitFilter("is_baseline", (True,))),
            (FitFilter("model_name", ("cnn1d",)), FitFilter("pruning_scratch", (True,))),
            *(
                (
                    FitFilter("model_name", ("cnn1d",)),
                    FitFilter("pruning_target", (t,)),
                    FitFilter("pruning_period", (p,)),
                )
                for t, p in FIG2_CFGS
            ),
        ),
    )
    (row,) = _rows(tables, spec)
    runs = [t for t, c in cfg.items() if c["model_name"] == "cnn1d" and _cfg_name(c) != "other"]
    assert len(runs) == 30  # 6 cfgs x 5 seeds
    value = {
        "mean_stability": lambda t: summary[t]["stability"],
        "generalization": lambda t: summary[t]["best"],
        "hessian_topk_sum": lambda t: cfg[t]["hessian"],
        "grad_noise_trace": lambda t: cfg[t]["noise"],
        "tic": lambda t: cfg[t]["noise"] / cfg[t]["hessian"],  # Figure_Ei.py's summary['TIC']
    }
    _assert_row(row, _official([value[x](t) for t in runs], [value[y](t) for t in runs]))
    assert row["include"] == ["pruned", "unpruned", "scratch"]


def test_scratch_trials_count_as_pruned_only_without_the_column(study):
    """Without ``pruning_scratch`` (an older table) a scratch trial is an ordinary pruned one."""
    tables, _, cfg = study
    spec = FitSpec(name="all_pruned", x="mean_instability", y="gain", levels=("trial",))
    with_column = _rows(tables, spec)[0]
    older = dataclasses.replace(tables, trials=tables.trials.drop_columns(["pruning_scratch"]))
    without = _rows(older, spec)[0]
    n_scratch = sum(bool(c["pruning_scratch"]) for c in cfg.values())
    assert n_scratch == 10
    assert without["n"] == with_column["n"] + n_scratch


# --- the presets ask for these rules on their own trials --------------------------------------


def _plan_columns(name: str) -> tuple[dict[str, np.ndarray], tuple[FitSpec, ...]]:
    """A preset's expanded trials as trials-table columns (all ok, random outcomes) and its fits."""
    from results.tables.schema import CONFIG_FIELDS, TRIAL_FIELDS
    from search_spaces.expand import expand
    from search_spaces.spec import load_spec
    from trainables.identity import config_key

    spec = load_spec(name)
    trials = expand(spec).trials
    n = len(trials)
    rng = np.random.default_rng(0)
    cols = {k: rng.uniform(0.5, 1.0, n) for k, t in TRIAL_FIELDS if str(t) in ("double", "int64")}
    for column, path, _ in CONFIG_FIELDS:
        values = []
        for cfg in trials:
            value = cfg.to_dict()
            for key in path:
                value = value[key]
            values.append(value)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        cols[column] = np.asarray(values, dtype=float if numeric else object)
    cols.update(
        status=np.full(n, "ok", dtype=object),
        is_baseline=np.array([cfg.is_baseline for cfg in trials]),
        config_key=np.array([config_key(cfg) for cfg in trials], dtype=object),
    )
    return cols, spec.fits


def _n(rows, fit: str) -> dict[str, int]:
    return {r["group"]: r["n"] for r in rows if r["fit"] == fit and r["level"] == "trial"}


def test_the_vgg11_preset_fits_figs_2_and_3_on_their_runs():
    cols, fits = _plan_columns("bartoldson2020-vgg11")
    rows = aggregate.fits(cols, S.FAST_PLAN, fits)
    periods = ("4", "20", "40", "60", "100", "200", "300")
    assert _n(rows, "fig3_per_period") == dict.fromkeys(periods, 15)  # 3 targets x 5 seeds
    assert _n(rows, "fig2_vgg") == {"all": 15}  # Prune_S 1%, Prune_S 13%, Prune_L 13% x 5
    (fig2,) = [r for r in rows if r["fit"] == "fig2_vgg" and r["level"] == "trial"]
    member = aggregate.row_members(cols, fig2)
    chosen = set(zip(cols["pruning_target"][member], cols["pruning_period"][member], strict=True))
    assert chosen == {("smallest", 4), ("smallest", 40), ("largest", 40)}


def test_the_flatness_preset_fits_fig_6_on_every_run_and_fig_2_without_prune_r():
    cols, fits = _plan_columns("bartoldson2020-flatness")
    rows = aggregate.fits(cols, S.FAST_PLAN, fits)
    n_runs = len(cols["status"])
    for fit in fits:
        expected = 30 if fit.name == "fig2_vgg" else n_runs  # Fig. 6 / E3: every run
        assert _n(rows, fit.name) == {"all": expected}, fit.name


def test_the_sgd_presets_fit_fig_4_per_resnet_on_the_pruned_runs():
    cols, fits = _plan_columns("bartoldson2020-resnet-sgd")
    rows = aggregate.fits(cols, S.FAST_PLAN, fits)
    for fit in ("fig4_accuracy", "fig4_gap"):
        assert _n(rows, fit) == {"resnet20": 20, "resnet56": 20}
    cols, fits = _plan_columns("bartoldson2020-resnet18-sgd")
    assert _n(aggregate.fits(cols, S.FAST_PLAN, fits), "fig4_gap") == {"all": 20}


def test_the_jin_preset_summarises_gain_against_label_noise_per_control():
    cols, fits = _plan_columns("jin2022-imp")
    rows = aggregate.fits(cols, S.FAST_PLAN, fits)
    three = {"none": 12, "extended_dense": 12, "sparse_from_start": 12}  # LR rewinding
    assert _n(rows, "gain_vs_label_noise") == three
    assert _n(rows, "gain_vs_label_noise_wr") == {"all": 12}  # IMP with weight rewinding


def _members(cols, rows, fit: str) -> set[tuple]:
    """The (target, period, baseline) of the trials a fit's trial-level row fitted."""
    (row,) = [r for r in rows if r["fit"] == fit and r["level"] == "trial"]
    idx = aggregate.row_members(cols, row)
    keys = ("pruning_target", "pruning_period", "is_baseline")
    return set(zip(*(cols[k][idx] for k in keys), strict=True))


PRUNED_CFGS = {("smallest", 4, False), ("smallest", 40, False), ("largest", 40, False)}


@pytest.mark.parametrize(
    ("preset", "fit"),
    [
        ("bartoldson2020-resnet18", "fig2_resnet18"),  # Figure_2.py: F2_RN_1..3
        ("bartoldson2020-ebn", "figB2_vgg"),  # Figure_B2.py: FB2_VGG_1..3
        ("bartoldson2020-ebn-resnet18", "figB2_resnet18"),  # Figure_B2.py: FB2_RN_1..3
    ],
)
def test_the_fig2_and_b2_presets_fit_their_three_pruned_cfgs(preset, fit):
    cols, fits = _plan_columns(preset)
    rows = aggregate.fits(cols, S.FAST_PLAN, fits)
    assert _n(rows, fit) == {"all": 30}  # 3 cfgs x 10 seeds; the 10 unpruned left out
    assert _members(cols, rows, fit) == PRUNED_CFGS
    assert [(f.name, f.panel) for f in fits] == [(fit, "fig2")]


def test_table_c1_fits_nothing_and_every_paper_preset_says_so():
    """``Table_C1.py`` prints means; every Bartoldson preset states its fits, [] when none."""
    from search_spaces.presets import PRESETS, preset_text

    assert _plan_columns("bartoldson2020-resnet18-c1")[1] == ()
    papers = [p for p in PRESETS if p.startswith("bartoldson2020-")]
    assert len(papers) == 9
    for name in papers:
        assert "\nfits:" in preset_text(name), name


def test_the_presets_name_the_panels_that_draw_their_figures():
    from search_spaces.spec import load_spec

    panels = {
        "bartoldson2020-vgg11": {"fig3_per_period": "fig3", "fig2_vgg": "fig2"},
        "bartoldson2020-flatness": {"fig2_vgg": "fig2"},
    }
    for preset, expected in panels.items():
        named = {f.name: f.panel for f in load_spec(preset).fits}
        assert {k: named[k] for k in expected} == expected
    flatness = [f for f in load_spec("bartoldson2020-flatness").fits if f.name != "fig2_vgg"]
    assert {f.panel for f in flatness} == {"flatness"}
    assert {(f.x, f.y) for f in flatness} >= {
        ("mean_stability", "tic"),
        ("tic", "generalization"),
        ("mean_stability", "generalization"),
    }

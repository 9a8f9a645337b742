"""One number per figure: every correlation the report shows is a row of fits.parquet.

The report is built from a toy study's tables and its fits table, as ``prunetune report`` builds
it from the Parquet files (so the rows come back from Parquet, NaN as null). Every r is read twice:
from the report's data (each panel line's numbers, each headline line's row) and from the page
itself (every ``n=.. · r=.. [.., ..]`` in the rendered HTML, plotly.js left out), and each must be
one trial-level row's n, Pearson r and CI. Then, with the vgg11 and flatness presets' kind of spec
fits (toy periods for the paper's), each panel must draw the fit that names it and no other: its
lines are those rows, its points the trials those rows fitted.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pytest
import synthetic as S
from scipy import stats as st

from results.report.data import build_report_data
from results.report.html import num
from results.report.page import render_report
from results.report.panels_data import Corr, corr_of
from results.tables.export import fits_table
from results.tables.storage import StudyMeta
from search_spaces.fits import KINDS, FitFilter, FitSpec

META = StudyMeta("fits", "h", "name: fits\n", "0.1.0")
SHOWN = re.compile(r"n=(\d+) · r=(\S+) \[(\S+), (\S+)\]")

# The vgg11 / flatness presets' figure fits on the toy study (periods 1, 2, 3 for the paper's).
FIG2 = FitSpec(
    name="fig2_vgg",
    x="mean_stability",
    y="generalization",
    where=(
        (FitFilter("pruning_target", ("smallest",)), FitFilter("pruning_period", (1, 2))),
        (FitFilter("pruning_target", ("largest",)), FitFilter("pruning_period", (2,))),
    ),
    levels=("trial",),
    panel="fig2",
)
FIG3 = FitSpec(
    name="fig3_per_period",
    x="mean_stability",
    y="generalization",
    group_by="pruning_period",
    levels=("trial",),
    panel="fig3",
)
FLATNESS = tuple(
    FitSpec(name=name, x=x, y=y, include=KINDS, levels=("trial",), panel="flatness")
    for name, x, y in (
        ("fig6_stability_hessian", "mean_stability", "hessian_topk_sum"),
        ("fig6_hessian_accuracy", "hessian_topk_sum", "generalization"),
        ("figE5_stability_tic", "mean_stability", "tic"),
        ("figE6_stability_accuracy", "mean_stability", "generalization"),
    )
)


@pytest.fixture(scope="module")
def study():
    return S.figure_study(seeds=4)


def _report(tables, specs=()):
    fits = fits_table(tables.trials, "h", S.FAST_PLAN, specs)
    fits = pa.table(fits.to_pydict(), schema=fits.schema)  # as read back from Parquet
    data = build_report_data(META, tables.trials, tables.epochs, fits)
    return data, render_report(data), fits.to_pylist()


def _same(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or a == b


def _is_row(corr: Corr, rows: list[dict]) -> bool:
    return any(
        all(
            _same(float(u), float(v))
            for u, v in zip(vars(corr).values(), vars(corr_of(r)).values(), strict=True)
        )
        for r in rows
        if r["level"] == "trial"
    )


def _panel_corrs(data) -> list[Corr]:
    p = data.panels
    scatters = [p.fig2] if p.fig2 else []
    scatters += [p.fig3.scatter] if p.fig3 else []
    scatters += list(p.fig6)
    return [line.corr for sc in scatters for line in sc.lines]


def _shown(html: str) -> list[tuple[str, ...]]:
    """Every (n, r, low, high) the page shows as text, past the embedded plotly.js."""
    body = html[html.index("<h1>") :]
    shown = SHOWN.findall(body)
    assert len(shown) == len(re.findall(r"(?<![\w.])r=", body))  # no r shown any other way
    return shown


def _row_texts(rows: list[dict]) -> set[tuple[str, ...]]:
    keys = ("pearson_r", "pearson_ci_low", "pearson_ci_high")
    return {(str(r["n"]), *(num(r[k]) for k in keys)) for r in rows if r["level"] == "trial"}


def _check_every_r_is_a_row(data, html, rows) -> None:
    corrs = _panel_corrs(data)
    assert corrs  # the study has the panels' dimensions
    for corr in corrs:
        assert _is_row(corr, rows), corr
    for pair in data.headline.pairs:
        for line in pair.lines:
            assert line.fit in rows
    texts = _row_texts(rows)
    shown = _shown(html)
    assert len(shown) >= len(corrs)
    for item in shown:
        assert item in texts, item


def test_every_r_the_report_shows_is_a_fits_row(study):
    """Default fits only: Figs. 2, 3 and 6 draw the default rows and panel defaults."""
    data, html, rows = _report(study)
    _check_every_r_is_a_row(data, html, rows)
    drawn = {r["panel"] for r in rows} - {None}
    assert drawn == {"fig2", "fig3", "flatness"}
    assert data.panels.fig2 and data.panels.fig3 and data.panels.fig6


def test_each_panel_draws_the_fit_that_names_it(study):
    specs = (FIG2, FIG3, *FLATNESS)
    data, html, rows = _report(study, specs)
    _check_every_r_is_a_row(data, html, rows)
    named = {r["fit"] for r in rows if r["panel"]}
    assert named == {s.name for s in specs}  # no default panel fit where the spec states one
    p = data.panels

    (fig2,) = [r for r in rows if r["fit"] == "fig2_vgg"]
    assert [ln.corr for ln in p.fig2.lines] == [corr_of(fig2)]
    fitted = [s for s in p.fig2.series if s.label != "no pruning (not fitted)"]
    assert {s.label for s in fitted} == {"target smallest", "target largest"}
    x = np.concatenate([s.x for s in fitted])
    y = np.concatenate([s.y for s in fitted])
    assert len(x) == fig2["n"] == 12  # Prune_S at periods 1 and 2, Prune_L at 2: 3 cfgs x 4 seeds
    assert st.pearsonr(x, y).statistic == pytest.approx(fig2["pearson_r"], rel=1e-12)

    fig3 = [r for r in rows if r["fit"] == "fig3_per_period"]
    assert [ln.corr for ln in p.fig3.scatter.lines] == [corr_of(r) for r in fig3]
    for series, row in zip(p.fig3.scatter.series, fig3, strict=True):
        assert len(series.x) == row["n"]
        r = st.pearsonr(series.x, series.y).statistic
        assert r == pytest.approx(row["pearson_r"], rel=1e-12, abs=1e-12)

    assert [(sc.x, sc.y) for sc in p.fig6] == [(s.x, s.y) for s in FLATNESS]
    for sc, spec in zip(p.fig6, FLATNESS, strict=True):
        (row,) = [r for r in rows if r["fit"] == spec.name]
        assert [ln.corr for ln in sc.lines] == [corr_of(row)]
        assert sum(len(s.x) for s in sc.series) == row["n"] == 4 * 11  # every trial


def test_a_spec_names_each_single_panel_once_and_a_drawable_fit():
    from search_spaces.spec import spec_from_yaml
    from trainables.errors import UserError

    bad = """name: s
fits:
  - {name: a, panel: fig2}
  - {name: b, panel: fig2}
  - {name: c, panel: fig3}
  - {name: d, panel: flatness, levels: [config]}
  - {name: e, panel: fig4}
"""
    with pytest.raises(UserError) as err:
        spec_from_yaml(bad)
    assert str(err.value).splitlines() == [
        "fits[2].group_by: must name a column for panel 'fig3' (one r per group)",
        "fits[3].levels: must hold trial for panel 'flatness' to draw it",
        "fits[4].panel: must be one of none, fig2, fig3, flatness, got 'fig4'",
        "fits[1].panel: only one fit may draw panel 'fig2'",
    ]
    with pytest.raises(UserError, match="'default.fig3' names the default fits"):
        spec_from_yaml("name: s\nfits:\n  - {name: default.fig3, group_by: pruning.period}\n")

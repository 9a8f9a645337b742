"""Render the figure panels of :class:`results.report.data.Panels` (Plotly; numbers come as given:
every correlation is a fits.parquet row's, ``results.report.panels_data``).

One figure per panel, each titled with the figure it mirrors; every label from the study is
escaped; point traces switch to WebGL with the panel's ``webgl`` flag (lines and bands follow, as
WebGL draws above SVG).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from results.report.curves_data import ImpPanel, NoiseGroup
from results.report.data import Panels
from results.report.html import num, pval
from results.report.panels_data import Corr, Line, PeriodPanel, Scatter
from results.report.style import PALETTE, band_trace, div, esc, label, series_colour

BARTOLDSON = "Bartoldson et al. 2020"
JIN = "Jin et al. 2022"
ROLE_STYLE = {"unpruned": ("#222222", "solid"), "reference": ("#7f7f7f", "dash")}


def corr_text(c: Corr) -> str:
    """'n=15 · r=0.52 [0.31, 0.68] p=0.01 · τ=0.40 p=0.03'."""
    return (
        f"n={c.n} · r={num(c.r)} [{num(c.r_low)}, {num(c.r_high)}] p={pval(c.r_p)}"
        f" · τ={num(c.tau)} p={pval(c.tau_p)}"
    )


def _points(sc: Scatter, fig: go.Figure, row: int, col: int, legend: bool) -> None:
    scatter = go.Scattergl if sc.webgl else go.Scatter
    for i, s in enumerate(sc.series):
        fig.add_trace(
            scatter(
                x=s.x,
                y=s.y,
                mode="markers",
                name=esc(s.label),
                legendgroup=esc(s.label),
                showlegend=legend,
                marker={"color": series_colour(s.label, i), "size": 8},
                hovertext=[esc(t) for t in s.trial_id],
                hoverinfo="text+x+y",
            ),
            row,
            col,
        )


def _line(ln: Line, colour: str, webgl: bool, fig: go.Figure, row: int, col: int) -> None:
    scatter = go.Scattergl if webgl else go.Scatter
    band = band_trace(ln.x, ln.high, ln.low, colour, 0.12, webgl=webgl, mode="lines")
    name = f"{esc(ln.label)}: OLS ± 95% CI · {corr_text(ln.corr)}"
    fit = scatter(x=ln.x, y=ln.y, mode="lines", line={"color": colour, "width": 2}, name=name)
    fig.add_trace(band, row, col)
    fig.add_trace(fit, row, col)


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        title={"text": title},
        template="plotly_white",
        height=height,
        legend={"orientation": "h", "y": -0.2, "font": {"size": 11}},
    )
    return fig


def fig2_figure(sc: Scatter, name: str) -> go.Figure:
    fig = make_subplots(rows=1, cols=1)
    _points(sc, fig, 1, 1, True)
    for i, ln in enumerate(sc.lines):
        pooled = i == len(sc.lines) - 1
        _line(ln, "#222222" if pooled else series_colour(ln.label, i), sc.webgl, fig, 1, 1)
    fig.update_xaxes(title_text=label(sc.x))
    fig.update_yaxes(title_text="best test accuracy in run")
    title = f"{esc(name)}: test accuracy vs. mean stability per target ({BARTOLDSON}, Fig. 2)"
    return _layout(fig, title, 640)


def fig3_figure(panel: PeriodPanel, name: str) -> go.Figure:
    sc = panel.scatter
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.6, 0.4],
        subplot_titles=("test accuracy vs. mean stability, per period", "correlation per period"),
    )
    _points(sc, fig, 1, 1, True)
    for i, ln in enumerate(sc.lines):
        _line(ln, PALETTE[i % len(PALETTE)], sc.webgl, fig, 1, 1)
    by_rate = bool(np.isfinite(panel.rate).all())
    x = panel.rate if by_rate else panel.period.astype(float)
    r = np.array([ln.corr.r for ln in sc.lines])
    low = np.array([ln.corr.r_low for ln in sc.lines])
    high = np.array([ln.corr.r_high for ln in sc.lines])
    hover = [f"period {p:g}" for p in panel.period]
    fig.add_trace(
        go.Scatter(
            x=x,
            y=r,
            mode="lines+markers",
            name="Pearson r (95% CI)",
            line={"color": "#222222"},
            hovertext=hover,
            error_y={"type": "data", "array": high - r, "arrayminus": r - low},
        ),
        1,
        2,
    )
    tau = [ln.corr.tau for ln in sc.lines]
    fig.add_trace(
        go.Scatter(
            x=x,
            y=tau,
            mode="lines+markers",
            name="Kendall τ",
            hovertext=hover,
            line={"color": "#1f77b4", "dash": "dot"},
        ),
        1,
        2,
    )
    fig.update_xaxes(title_text=label(sc.x), row=1, col=1)
    fig.update_yaxes(title_text="best test accuracy in run", row=1, col=1)
    axis = "iterative pruning rate (%, log scale)" if by_rate else "retrain period (epochs)"
    fig.update_xaxes(title_text=axis, type="log", row=1, col=2)
    fig.update_yaxes(title_text="correlation (generalization, stability)", row=1, col=2)
    title = f"{esc(name)}: generalization vs. stability per retrain period ({BARTOLDSON}, Fig. 3)"
    return _layout(fig, title, 620)


def fig6_figure(scatters: tuple[Scatter, ...], name: str) -> go.Figure:
    titles = [  # a fit grouped by a column has a line (and its r in the legend) per group
        f"{label(sc.y)} vs. {label(sc.x)}"
        + (f"<br><sub>{corr_text(sc.lines[0].corr)}</sub>" if len(sc.lines) == 1 else "")
        for sc in scatters
    ]
    rows = (len(scatters) + 1) // 2
    fig = make_subplots(rows=rows, cols=2, subplot_titles=titles, vertical_spacing=0.14)
    for i, sc in enumerate(scatters):
        row, col = i // 2 + 1, i % 2 + 1
        _points(sc, fig, row, col, i == 0)
        for j, ln in enumerate(sc.lines):
            pooled = j == len(sc.lines) - 1
            _line(ln, "#222222" if pooled else PALETTE[j % len(PALETTE)], sc.webgl, fig, row, col)
        fig.update_xaxes(title_text=label(sc.x), row=row, col=col)
        fig.update_yaxes(title_text=label(sc.y), row=row, col=col)
    title = f"{esc(name)}: flatness vs. stability and generalization ({BARTOLDSON}, Figs. 6, E)"
    return _layout(fig, title, 420 * rows + 120)


def noise_figure(groups: tuple[NoiseGroup, ...], name: str) -> go.Figure:
    fig = make_subplots(
        rows=1, cols=len(groups), shared_yaxes=True, subplot_titles=[esc(g.title) for g in groups]
    )
    shown: set[str] = set()
    for col, group in enumerate(groups, start=1):
        arms = 0
        for curve in group.curves:
            colour, dash = ROLE_STYLE.get(curve.role, (PALETTE[arms % len(PALETTE)], "solid"))
            arms += curve.role == "arm"
            if np.isfinite(curve.sem).any():
                high, low = curve.mean + curve.sem, curve.mean - curve.sem
                band = band_trace(curve.epoch, high, low, colour, 0.12, mode="lines")
                fig.add_trace(band, 1, col)
            legend = f"{esc(curve.label)} (n={curve.n})"
            fig.add_trace(
                go.Scatter(
                    x=curve.epoch,
                    y=curve.mean,
                    mode="lines",
                    name=legend,
                    legendgroup=legend,
                    showlegend=legend not in shown,
                    line={"color": colour, "dash": dash},
                ),
                1,
                col,
            )
            shown.add(legend)
        fig.update_xaxes(title_text="epoch", row=1, col=col)
    fig.update_yaxes(title_text="test accuracy (mean ± s.e.m. over seeds)", row=1, col=1)
    title = f"{esc(name)}: noise injection vs. its pruning reference ({BARTOLDSON}, Figs. 5, D2)"
    return _layout(fig, title, 560)


def imp_figure(panel: ImpPanel, name: str) -> go.Figure:
    """One column per label-noise level; rows: test error, training loss and (with label noise)
    training accuracy on relabelled / untouched examples, each against sparsity."""
    rows = ["test error", "training loss"] + (["training accuracy"] if panel.has_noise else [])
    cols = panel.noise_levels
    titles = [f"{y}, label noise {noise:g}" for y in rows for noise in cols]
    fig = make_subplots(rows=len(rows), cols=len(cols), subplot_titles=titles)
    labels = list(dict.fromkeys(c.label for c in panel.curves))
    shown: set[str] = set()
    for c in panel.curves:
        colour = PALETTE[labels.index(c.label) % len(PALETTE)]
        dash = "dash" if c.control == "extended_dense" else "solid"
        symbol = "star" if c.control == "sparse_from_start" else "circle"
        col = cols.index(c.noise) + 1
        ys = [(c.test_error, dash, 1), (c.train_loss, dash, 2)]
        if panel.has_noise:
            ys += [(c.train_acc_noisy, dash, 3), (c.train_acc_clean, "dot", 3)]
        for y, line_dash, row in ys:
            fig.add_trace(
                go.Scatter(
                    x=c.sparsity,
                    y=y,
                    mode="lines+markers",
                    name=esc(c.label),
                    legendgroup=esc(c.label),
                    showlegend=c.label not in shown,
                    line={"color": colour, "dash": line_dash},
                    marker={"color": colour, "symbol": symbol, "size": 9},
                    hovertext=[f"round {r:g}, n={c.n}" for r in c.round],
                ),
                row,
                col,
            )
            shown.add(c.label)
    for col in range(1, len(cols) + 1):
        fig.update_xaxes(title_text="sparsity", row=len(rows), col=col)
    for row, y in enumerate(rows, start=1):
        fig.update_yaxes(title_text=y, row=row, col=1)
    title = (
        f"{esc(name)}: IMP, extended dense training and sparse-from-start per label-noise level"
        f" ({JIN}); relabelled examples solid, untouched dotted"
    )
    return _layout(fig, title, 300 * len(rows) + 120)


def _section(title: str, note: str, fig: go.Figure, div_id: str) -> str:
    return f'<section><h2>{title}</h2><p class="muted">{note}</p>{div(fig, div_id)}</section>'


# (div id, Panels attribute, title, note, figure function), in the page's order.
_PANELS = (
    ("fig2", "fig2", f"Test accuracy vs. stability per target ({BARTOLDSON}, Fig. 2)",
     "The Fig. 2 fit's trials by target, an OLS line per fits row; unpruned baselines unfitted.",
     fig2_figure),
    ("fig3", "fig3", f"Correlation per retrain period ({BARTOLDSON}, Fig. 3)",
     "One correlation per retrain period (and its iterative pruning rate), pruned trials.",
     fig3_figure),
    ("noise", "noise", f"Noise injection ({BARTOLDSON}, Figs. 5 and D2)",
     "Perturbed units re-enter after their window; the reference prunes the same units.",
     noise_figure),
    ("flatness", "fig6", f"Flatness ({BARTOLDSON}, Fig. 6)",
     "Every ok trial; unpruned and scratch trials at stability 100 by definition.",
     fig6_figure),
    ("imp", "imp", f"Pruning vs. its controls ({JIN})",
     "Per level, the level's trained model (before its prune): the rows val_selected ranks. "
     "Extended dense training at IMP's sparsity for the same rounds; sparse-from-start (star) "
     "is the final mask trained once from initialisation.",
     imp_figure),
)  # fmt: skip


def panel_sections(panels: Panels | None, name: str) -> dict[str, str]:
    """HTML section per present panel, keyed by its div id: fig2, fig3, noise, flatness, imp."""
    if panels is None:
        return {}
    out = {}
    for key, attribute, title, note, figure in _PANELS:
        data = getattr(panels, attribute)
        if data:  # absent: None or () (the panel dataclasses are always true)
            out[key] = _section(title, note, figure(data, name), key)
    return out

"""Render :class:`results.report.data.ReportData` as one self-contained HTML page (Plotly).

This layer only maps numbers to traces and text to escaped HTML: plotly.js is embedded once in the
page head (no CDN, opens offline), each figure is a ``<div>`` drawn by ``Plotly.newPlot``. Every
string that comes from the spec, a config or a trial goes through :func:`html.escape`, in the page
and inside Plotly titles, legend names and hover text too (Plotly renders a subset of HTML there).
Above ``WEBGL_THRESHOLD`` points a scatter is drawn with ``Scattergl``.

The figure panels of the papers (Figs. 2, 3, 5 / D2, 6; Jin et al.'s controls) are drawn by
``results.report.panels``. The headline's two menus are independent: the pair menu replaces the x/y data (and fit lines) of
all traces, the grouping menu only toggles which groups' fit lines are visible.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from results.report.data import Curve, FitLine, PairView, ReportData
from results.report.html import (
    config_section,
    environment_section,
    facts_section,
    fit_text,
    fits_section,
    page,
    running_section,
    slope_text,
)
from results.report.panels import panel_sections
from results.report.style import LABELS, PALETTE, SYMBOLS, TARGET_COLOURS, band_trace, div, esc


def _colour(grouping: str, group: str, index: int) -> str:
    if grouping == "all":
        return "#222222"
    if grouping == "target" and group in TARGET_COLOURS:
        return TARGET_COLOURS[group]
    return PALETTE[index % len(PALETTE)]


def _rate_symbols(rate: np.ndarray) -> tuple[list[str], dict[str, str]]:
    keys = ["unknown" if not np.isfinite(r) else f"{r:.3g}%" for r in rate]
    ordered = sorted(
        set(keys), key=lambda k: (k == "unknown", float(k[:-1]) if k != "unknown" else 0)
    )
    legend = {k: SYMBOLS[i % len(SYMBOLS)] for i, k in enumerate(ordered)}
    return [legend[k] for k in keys], legend


def _line_name(line: FitLine) -> str:
    group = (
        "all pruned trials" if line.grouping == "all" else f"{esc(line.grouping)} {esc(line.group)}"
    )
    return f"{group}: OLS ± 95% CI<br>{fit_text(line.fit)}"


def _line_traces(line: FitLine, colour: str, visible: bool, webgl: bool = False) -> list:
    """Band and line of one fit; WebGL like the points when they are (WebGL draws above SVG)."""
    scatter = go.Scattergl if webgl else go.Scatter
    band = band_trace(line.x, line.high, line.low, colour, 0.15, webgl=webgl, visible=visible)
    fit = scatter(
        x=line.x,
        y=line.y,
        mode="lines",
        line={"color": colour, "width": 2},
        name=_line_name(line),
        visible=visible,
    )
    return [band, fit]


def headline_figure(data: ReportData) -> go.Figure:
    h = data.headline
    first = h.pairs[0]
    scatter = go.Scattergl if h.webgl else go.Scatter
    symbols, symbol_legend = _rate_symbols(h.rate)
    hover = [
        "<br>".join([f"<b>{esc(t)}</b>", *(f"{esc(k)}: {esc(v)}" for k, v in items)])
        for t, items in zip(h.trial_id, h.hover, strict=True)
    ]
    points = scatter(
        x=first.px,
        y=first.py,
        mode="markers",
        name="trials",
        uid="trials",
        meta="trials",
        marker={
            "color": [TARGET_COLOURS.get(t, PALETTE[0]) for t in h.target],
            "symbol": symbols,
            "size": 8,
            "opacity": 0.8,
            "line": {"width": 0.5, "color": "white"},
        },
        hovertext=hover,
        hoverinfo="text",
        showlegend=False,
    )
    fig = go.Figure([points])
    for target in sorted(set(h.target)):
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=f"target {esc(target)}",
                marker={"color": TARGET_COLOURS.get(target, PALETTE[0]), "size": 9},
            )
        )
    for key, symbol in symbol_legend.items():
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=f"rate {esc(key)}",
                marker={"color": "#777", "symbol": symbol, "size": 9},
            )
        )
    fit_start = len(fig.data)
    colours = [_colour(li.grouping, li.group, i) for i, li in enumerate(first.lines)]
    for line, colour in zip(first.lines, colours, strict=True):
        fig.add_traces(_line_traces(line, colour, line.grouping == "all", h.webgl))
    fit_idx = list(range(fit_start, len(fig.data)))
    fig.update_layout(
        title={"text": _title(data.name, first), "y": 0.98},
        xaxis_title=LABELS.get(first.x, first.x),
        yaxis_title=LABELS.get(first.y, first.y),
        annotations=[_pooled_annotation(first)],
        height=720,
        template="plotly_white",
        legend={"orientation": "h", "y": -0.18, "font": {"size": 11}},
        updatemenus=[_pair_menu(data.name, h.pairs, fit_idx), _grouping_menu(first, fit_idx)],
        margin={"t": 150},
    )
    return fig


def _title(name: str, pair: PairView) -> str:
    short = {"mean_instability": "pruning instability", "mean_stability": "mean stability"}
    return f"{esc(name)}: {pair.y.replace('_', ' ')} vs. {short.get(pair.x, pair.x)}"


def _pooled_annotation(pair: PairView) -> dict:
    row = pair.line("all", "all").fit
    text = f"all pruned trials: {fit_text(row)} · OLS slope={slope_text(row)}"
    return {
        "text": text,
        "xref": "paper",
        "yref": "paper",
        "x": 0,
        "y": 1.01,
        "showarrow": False,
        "xanchor": "left",
        "yanchor": "bottom",
        "font": {"size": 12},
    }


def _pair_menu(name: str, pairs: tuple[PairView, ...], fit_idx: list[int]) -> dict:
    buttons = []
    for pair in pairs:
        xs, ys, names = [pair.px], [pair.py], ["trials"]
        for line in pair.lines:
            xs += [np.concatenate([line.x, line.x[::-1]]), line.x]
            ys += [np.concatenate([line.high, line.low[::-1]]), line.y]
            names += ["", _line_name(line)]
        restyle = {"x": [_plain(v) for v in xs], "y": [_plain(v) for v in ys], "name": names}
        layout = {
            "xaxis.title.text": LABELS.get(pair.x, pair.x),
            "yaxis.title.text": LABELS.get(pair.y, pair.y),
            "annotations[0].text": _pooled_annotation(pair)["text"],
            "title.text": _title(name, pair),
        }
        buttons.append(
            {
                "label": f"{pair.y} vs {pair.x}",
                "method": "update",
                "args": [restyle, layout, [0, *fit_idx]],
            }
        )
    return {
        "buttons": buttons,
        "x": 0,
        "y": 1.07,
        "xanchor": "left",
        "yanchor": "bottom",
        "direction": "down",
    }


def _grouping_menu(pair: PairView, fit_idx: list[int]) -> dict:
    groupings = list(dict.fromkeys(li.grouping for li in pair.lines))
    buttons = []
    for grouping in groupings:
        visible = [li.grouping == grouping for li in pair.lines for _ in (0, 1)]
        buttons.append(
            {
                "label": f"fits: {grouping}",
                "method": "restyle",
                "args": [{"visible": visible}, fit_idx],
            }
        )
    return {
        "buttons": buttons,
        "x": 0.4,
        "y": 1.07,
        "xanchor": "left",
        "yanchor": "bottom",
        "direction": "down",
    }


def _plain(v: np.ndarray) -> list:
    """Menu arguments as JSON lists (7 significant digits; NaN -> null so Plotly skips the point)."""
    return [None if not np.isfinite(a) else float(f"{a:.7g}") for a in np.asarray(v, dtype=float)]


def dynamics_figure(curves: tuple[Curve, ...], name: str) -> go.Figure:
    fig = go.Figure()
    for i, c in enumerate(curves):
        colour = PALETTE[i % len(PALETTE)] if i else "#222222"
        label = esc(f"{c.label} ({c.trial_id})")
        fig.add_trace(
            go.Scatter(
                x=c.x,
                y=c.y,
                mode="lines",
                name=label,
                legendgroup=c.trial_id,
                line={"color": colour},
                hovertemplate="epoch %{x}<br>test acc %{y:.4f}<extra></extra>",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=c.event_epoch,
                y=c.event_after,
                mode="markers",
                legendgroup=c.trial_id,
                marker={"symbol": "triangle-down", "size": 8, "color": colour},
                showlegend=False,
                hovertemplate="pruning event, epoch %{x}<br>after: %{y:.4f}<extra></extra>",
            )
        )
    fig.update_layout(
        title={"text": f"{esc(name)}: test accuracy per epoch (▼ pruning events)"},
        xaxis_title="epoch",
        yaxis_title="test accuracy",
        template="plotly_white",
        height=520,
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def render_report(data: ReportData, *, running: str | None = None) -> str:
    """The whole page as a string (UTF-8 when written).

    `running`: the banner of a report written while the study runs (its title then starts with
    ``running:``); None for a study that is not running.
    """
    panels = panel_sections(data.panels, data.name)
    title = esc(data.name) if running is None else f"running: {esc(data.name)}"
    body = [
        *([running_section(running)] if running is not None else []),
        f"<h1>prunetune report: {esc(data.name)}</h1>",
        facts_section(data, summary_only=True),
    ]
    heading = "<section><h2>Generalization gain vs. instability</h2>"
    if data.headline.trial_id:
        body.append(heading + div(headline_figure(data), "headline") + "</section>")
    else:
        body.append(heading + "<p>No pruned trial has finished yet.</p></section>")
    body.append(fits_section(data))
    body += [panels[k] for k in ("fig2", "fig3", "noise") if k in panels]
    if data.curves:
        body.append(
            "<section><h2>Training dynamics</h2>"
            + div(dynamics_figure(data.curves, data.name), "dynamics")
            + "</section>"
        )
    body.append(config_section(data))
    body += [panels[k] for k in ("flatness", "imp") if k in panels]
    body.append(facts_section(data, summary_only=False))
    body.append(environment_section(data))
    return page(title, get_plotlyjs(), "\n".join(body))

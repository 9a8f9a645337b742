"""What every report figure shares: colours, axis labels, escaping, the div a figure becomes."""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

TARGET_COLOURS = {"smallest": "#2ca02c", "largest": "#d62728", "random": "#1f77b4"}
PALETTE = ("#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
SYMBOLS = ("circle", "square", "diamond", "cross", "x", "triangle-up", "triangle-down", "star")
KIND_COLOURS = {"no pruning": "#222222", "scratch": "#8c564b"}
LABELS = {
    "mean_instability": "mean instability (relative accuracy drop per event)",
    "mean_stability": "mean stability (%)",
    "gain": "generalization gain (vs. matched baselines)",
    "generalization": "generalization (test accuracy)",
    "gen_gap": "generalization gap (train - test accuracy)",
    "hessian_topk_sum": "Hessian top-k eigenvalue sum",
    "grad_noise_trace": "gradient-noise trace Tr(C)",
    "eps_flatness": "epsilon-flatness",
}
_CONFIG = {"displaylogo": False, "responsive": True}
esc = html.escape


def rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def band_trace(
    x: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    colour: str,
    alpha: float,
    *,
    webgl: bool = False,
    **extra: Any,
) -> go.Scatter | go.Scattergl:
    """The shaded band between `low` and `high` over `x` (each (n,)): one closed outline (x, then
    x reversed) filled in `colour` at opacity `alpha`, no edge, no hover, no legend entry; `extra`
    goes to the trace as is (``mode``, ``visible``). WebGL with `webgl` (like the points it sits
    with: WebGL draws above SVG)."""
    scatter = go.Scattergl if webgl else go.Scatter
    return scatter(
        x=np.concatenate([x, x[::-1]]),
        y=np.concatenate([high, low[::-1]]),
        fill="toself",
        fillcolor=rgba(colour, alpha),
        line={"width": 0},
        hoverinfo="skip",
        showlegend=False,
        **extra,
    )


def label(column: str) -> str:
    """An axis title for a trials column."""
    return LABELS.get(column, column.replace("_", " "))


def series_colour(name: str, index: int) -> str:
    """'target smallest' -> the target's colour; 'no pruning' / 'scratch' fixed; else the palette."""
    if name.startswith("target ") and name[7:] in TARGET_COLOURS:
        return TARGET_COLOURS[name[7:]]
    return KIND_COLOURS.get(name.split(" (")[0], PALETTE[index % len(PALETTE)])


def div(fig: go.Figure, div_id: str) -> str:
    """The figure as a <div> drawn by Plotly.newPlot (plotly.js is in the page head)."""
    return pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=div_id, config=_CONFIG)

"""Report numbers (pure, exact), escaping, one embedded plotly.js, the WebGL switch."""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import synthetic as S
from numpy.testing import assert_allclose
from plotly.offline import get_plotlyjs
from scipy import stats as st
from tune_fixture import config

from results.report import data as report_data
from results.report import page, panels
from results.report.data import build_report_data, ols_band
from results.tables.status import running_banner
from results.tables.storage import StudyMeta

NASTY = "<script>alert(1)</script>"


def _study(name="demo", data_dir=""):
    trials, blobs = S.study_inputs(n_per_target=3, seeds=2)
    if data_dir:  # one config gets a hostile string value
        cfg = dataclasses.replace(
            config("largest", 0),
            dataset=dataclasses.replace(config(None, 0).dataset, data_dir=data_dir),
        )
        trials.append(S.tune_trial(cfg, "zz"))
        blobs.append(S.history(cfg, "zz"))
    tables = S.tables(trials, blobs)
    fits = S.fits(tables)
    meta = StudyMeta(
        name=name, spec_hash="abc", spec_text=f"name: {name}\n", prunetune_version="0.1.0"
    )
    return meta, tables, fits


@pytest.fixture(scope="module")
def study():
    meta, tables, fits = _study()
    return meta, tables, fits, build_report_data(meta, tables.trials, tables.epochs, fits)


def test_headline_has_one_point_per_pruned_ok_trial_with_the_table_values(study):
    _, tables, _, data = study
    rows = [r for r in tables.trials.to_pylist() if not r["is_baseline"] and r["status"] == "ok"]
    h = data.headline
    assert list(h.trial_id) == [r["trial_id"] for r in rows]
    pair = h.pairs[0]
    assert (pair.x, pair.y) == ("mean_instability", "gain")
    assert_allclose(pair.px, [r["mean_instability"] for r in rows])
    assert_allclose(pair.py, [r["gain"] for r in rows])
    assert not h.webgl


def test_fit_line_and_band_match_ols_on_the_groups_points(study):
    _, tables, fits, data = study
    pair = data.headline.pairs[0]
    line = pair.line("target", "largest")
    m = np.array(data.headline.target) == "largest"
    x, y = pair.px[m], pair.py[m]
    ref = st.linregress(x, y)
    assert_allclose(line.y, ref.intercept + ref.slope * line.x, rtol=1e-10)
    assert_allclose(line.fit["slope"], ref.slope, rtol=1e-10)  # the fits.parquet row drawn
    n, xbar = len(x), x.mean()
    s = np.sqrt(((y - ref.intercept - ref.slope * x) ** 2).sum() / (n - 2))
    half = (
        st.t.ppf(0.975, n - 2) * s * np.sqrt(1 / n + (line.x - xbar) ** 2 / ((x - xbar) ** 2).sum())
    )
    assert_allclose(line.high - line.y, half, rtol=1e-10)
    assert_allclose(line.y - line.low, half, rtol=1e-10)
    assert len(ols_band(x[:2], y[:2])[0]) == 0  # two points: no line


def test_config_table_means_and_sds(study):
    _, tables, _, data = study
    rows = tables.trials.to_pylist()
    assert data.n_configs == len({r["config_key"] for r in rows})
    first_pruned = next(r for r in data.config_rows if not r.is_baseline)
    members = [r for r in rows if r["config_key"] == first_pruned.config_key]
    gains = [r["gain"] for r in members]
    assert first_pruned.n == len(members) == 2
    assert_allclose(first_pruned.gain_mean, np.mean(gains), rtol=1e-12)
    assert_allclose(first_pruned.gain_sd, np.std(gains, ddof=1), rtol=1e-12)
    assert data.config_rows[0].is_baseline  # baselines first
    inst = [r.instability_mean for r in data.config_rows if not r.is_baseline]
    assert inst == sorted(inst)


def test_dynamics_show_each_event_as_a_drop(study):
    _, tables, _, data = study
    curves = data.curves
    assert curves[0].label.startswith("no pruning")
    assert len(curves) == 1 + report_data.MAX_CURVES
    pruned = curves[-1]
    e = int(pruned.event_epoch[0])
    at = np.flatnonzero(pruned.x == e)
    assert len(at) == 2 and pruned.y[at[0]] > pruned.y[at[1]]  # acc_before, then acc_after
    assert_allclose(pruned.y[at[1]], pruned.event_after[0])


def test_counts_and_exclusions(study):
    _, tables, _, data = study
    assert data.counts["ok"] == tables.trials.num_rows
    assert data.excluded == () and data.incomplete == ()


def test_all_study_text_is_escaped_including_inside_plotly():
    meta, tables, fits = _study(name=NASTY, data_dir="</script><script>alert(2)</script>")
    html = page.render_report(build_report_data(meta, tables.trials, tables.epochs, fits))
    assert "alert(1)</script>" not in html and "<script>alert" not in html
    assert "alert(2)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the page title and headings
    shown = [m.start() for m in re.finditer(re.escape("alert(2)"), html)]
    assert len(shown) == 3  # hover text, dynamics legend, configuration table
    assert all(html[i - 4 : i] == "&gt;" for i in shown)  # always after an escaped <script>
    figures = re.findall(r'Plotly\.newPlot\(\s*"(\w+)"', html)
    assert figures == ["headline", "fig2", "fig3", "dynamics", "flatness"]
    assert html.count("<script") == 1 + len(figures)  # plotly.js + one per figure


def test_plotly_js_is_embedded_once_and_nothing_is_fetched(study):
    html = page.render_report(study[3])
    js = get_plotlyjs()
    assert html.count(js[:500]) == 1 and html.count(js) == 1
    ours = html.replace(js, "")  # (plotly.js itself names a CDN for geo maps, which we never draw)
    assert not re.search(r"https?://", ours)
    assert not re.search(r"<script[^>]*\bsrc=", ours)


def test_running_banner_states_the_time_in_utc_and_the_counts():
    counts = {"ok": 2, "diverged": 1, "error": 0, "stopped": 0, "running": 1, "pending": 2}
    taken = datetime(2025, 6, 1, 14, 3, 9, tzinfo=timezone(timedelta(hours=2)))
    assert running_banner(counts, 6, taken) == (
        "Study running: snapshot of 2025-06-01 12:03:09 UTC, 3/6 trials finished "
        "(2 ok, 1 diverged; 1 running, 0 error, 2 pending)"
    )
    counts |= {"stopped": 1, "pending": 1}
    assert running_banner(counts, 6, taken).endswith(
        "(2 ok, 1 diverged; 1 running, 0 error, 1 stopped, 1 pending)"
    )


def test_a_running_report_has_the_banner_and_title_a_final_one_neither(study):
    banner = "Study running: snapshot of 2025-06-01 12:03:09 UTC, 3/6 <trials>"
    live = page.render_report(study[3], running=banner)
    assert "<title>running: demo · prunetune report</title>" in live
    shown = '<p class="running" role="status">Study running: snapshot of 2025-06-01 12:03:09 UTC'
    assert live.index(shown) < live.index("<h1>")  # at the top of the page
    assert "3/6 &lt;trials&gt;</p>" in live  # escaped like every other text
    final = page.render_report(study[3])
    assert "<title>demo · prunetune report</title>" in final
    assert 'class="running"' not in final and "Study running" not in final


def test_menus_switch_pair_and_grouping_over_the_same_traces(study):
    data = study[3]
    fig = page.headline_figure(data)
    pair_menu, group_menu = fig.layout.updatemenus
    assert [b.label for b in pair_menu.buttons][:3] == [
        "gain vs mean_instability",
        "generalization vs mean_stability",
        "gen_gap vs mean_instability",
    ]
    n_lines = len(data.headline.pairs[0].lines)
    fit_traces = list(range(len(fig.data) - 2 * n_lines, len(fig.data)))
    for button in pair_menu.buttons:
        restyle, _, traces = button.args
        assert list(traces) == [0, *fit_traces]
        assert len(restyle["x"]) == len(traces) == len(restyle["y"])
    assert [b.label for b in group_menu.buttons] == [
        "fits: all",
        "fits: target",
        "fits: model",
        "fits: dataset",
    ]
    target = group_menu.buttons[1].args[0]["visible"]
    assert sum(target) == 2 * 3  # band + line for each of the three targets
    assert fig.data[0].type == "scatter" and len(fig.data[0].x) == len(data.headline.trial_id)


def test_webgl_above_the_threshold(study, monkeypatch):
    meta, tables, fits, _ = study
    monkeypatch.setattr(report_data, "WEBGL_THRESHOLD", 5)
    data = build_report_data(meta, tables.trials, tables.epochs, fits)
    assert data.headline.webgl
    assert page.headline_figure(data).data[0].type == "scattergl"
    assert panels.fig6_figure(data.panels.fig6, "x").data[0].type == "scattergl"
    assert panels.fig2_figure(data.panels.fig2, "x").data[0].type == "scattergl"


@pytest.mark.slow
def test_a_10000_trial_report_stays_one_webgl_trace_and_a_bounded_page():
    trials, blobs = S.study_inputs(n_per_target=3333, seeds=1, epochs=3)
    tables = S.tables(trials, blobs)
    fits = S.fits(tables)
    meta = StudyMeta("big", "h", "", "0.1.0")
    data = build_report_data(meta, tables.trials, tables.epochs, fits)
    assert tables.trials.num_rows == 10_000 and len(data.headline.trial_id) == 9_999
    html = page.render_report(data)
    fig = page.headline_figure(data)
    assert fig.data[0].type == "scattergl" and len(fig.data[0].x) == 9_999
    assert len(html) < 30e6
    assert f"First {report_data.MAX_CONFIG_ROWS} of 10000 configurations" in html
    assert html.count("<tr>") < 2 * report_data.MAX_CONFIG_ROWS + 400


def test_environment_section_shows_the_driver_and_where_trials_ran(study):
    from tune_fixture import FACTS

    from results.tables.environment import KEYS

    meta, tables, fits, data = study
    assert data.environment == ()  # this study.json records none
    reported = sum(n > 0 for n in tables.trials.column("n_epochs").to_pylist())
    assert data.trial_environments == (
        (FACTS["device"], FACTS["torch_version"], str(FACTS["threads"]), reported),
    )
    html = page.render_report(data)
    assert "<h2>Environment</h2>" in html and "records no environment" in html
    env = dict.fromkeys(KEYS) | {"torch_version": NASTY, "gpus": ["NVIDIA H200"], "cpu_count": 16}
    with_env = dataclasses.replace(meta, environment=env)
    data = build_report_data(with_env, tables.trials, tables.epochs, fits)
    assert dict(data.environment)["gpus"] == "NVIDIA H200"
    html = page.render_report(data)
    section = html[html.index("<h2>Environment</h2>") :]
    assert '<td class="l">cpu_count</td><td class="l">16</td>' in section
    assert NASTY not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in section
    assert '<td class="l">0.0.0+fixture</td><td>1</td>' in section

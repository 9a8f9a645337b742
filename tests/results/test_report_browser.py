"""The report in a real headless Chromium (Debian's, via chromedriver): loads clean, right points."""

from __future__ import annotations

import contextlib
import tempfile

import pytest
import synthetic as S
from tune_fixture import config

from results.report.data import build_report_data
from results.report.page import render_report
from results.tables.storage import StudyMeta

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


@contextlib.contextmanager
def _chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tempfile.mkdtemp()}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        driver.quit()


def _open(driver, path) -> None:
    driver.get(path.as_uri())
    driver.execute_script("return document.readyState")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The report of a small study (with a trial lacking a baseline, one diverged) in Chromium."""
    trials, blobs = S.study_inputs(n_per_target=3, seeds=2)
    lonely = config("largest", 0, lr=5e-3)  # pruned, ok, but no matched baseline: no gain
    diverged = config("random", 7)
    trials += [S.tune_trial(lonely, "lonely"), S.tune_trial(diverged, "div")]
    blobs += [
        S.history(lonely, "lonely"),
        S.history(diverged, "div", epochs=[0, 1, 2], last={"status": "diverged"}),
    ]
    tables = S.tables(trials, blobs)
    meta = StudyMeta("<script>alert('x')</script> browser", "abc", "name: browser\n", "0.1.0")
    data = build_report_data(meta, tables.trials, tables.epochs, S.fits(tables))
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render_report(data), encoding="utf-8")
    with _chromium() as driver:
        _open(driver, path)
        yield driver, tables, data, path


def _pruned_ok(tables):
    return [r for r in tables.trials.to_pylist() if not r["is_baseline"] and r["status"] == "ok"]


def test_page_loads_without_console_errors_or_script_injection(page):
    driver, _, _, _ = page
    logs = driver.get_log("browser")
    assert [entry for entry in logs if entry["level"] in ("SEVERE", "ERROR")] == []
    title = driver.execute_script("return document.querySelector('h1').textContent")
    assert title == "prunetune report: <script>alert('x')</script> browser"  # shown as text
    assert driver.execute_script("return document.querySelectorAll('h1 script').length") == 0
    assert driver.execute_script("return typeof Plotly") == "object"
    ids = driver.execute_script(
        "return [...document.querySelectorAll('.js-plotly-plot')].map(d => d.id)"
    )
    assert ids == ["headline", "fig2", "fig3", "dynamics", "flatness"]


def test_headline_holds_one_point_per_pruned_ok_trial(page):
    driver, tables, _, _ = page
    rows = _pruned_ok(tables)
    with_gain = [r for r in rows if r["gain"] is not None]
    assert len(with_gain) == len(rows) - 1  # the lonely trial
    # gd.data keeps numpy arrays base64-encoded; _fullData holds them decoded, as drawn
    n_data = driver.execute_script(
        "const gd = document.getElementById('headline');"
        "return [gd.data[0].hovertext.length, gd._fullData[0].x.length, gd.calcdata[0].length]"
    )
    drawn = driver.execute_script(
        "return document.querySelectorAll('#headline .scatterlayer .trace:first-child .point').length"
    )
    assert n_data == [len(rows)] * 3
    assert drawn == len(with_gain)


def test_pair_menu_switches_axes_and_points(page, tmp_path):
    driver, tables, _, _ = page
    rows = _pruned_ok(tables)
    title = driver.execute_script(
        """
        const gd = document.getElementById('headline');
        const button = gd.layout.updatemenus[0].buttons[1];
        return Plotly[button.method](gd, ...button.args).then(
            () => gd.layout.yaxis.title.text);
        """
    )
    assert title == "generalization (test accuracy)"
    drawn = driver.execute_script(
        "return document.querySelectorAll('#headline .scatterlayer .trace:first-child .point').length"
    )
    assert drawn == len(rows)  # every pruned ok trial has a generalization
    shot = tmp_path / "headline.png"
    assert driver.get_screenshot_as_file(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []


def test_grouping_menu_shows_one_fit_line_per_target(page):
    driver, _, data, _ = page
    visible = driver.execute_script(
        """
        const gd = document.getElementById('headline');
        const button = gd.layout.updatemenus[1].buttons[1];
        return Plotly[button.method](gd, ...button.args).then(
            () => gd.data.filter(t => t.mode === 'lines' && t.visible === true).map(t => t.name));
        """
    )
    assert len(visible) == 3
    assert all(name.startswith("target ") for name in visible)


def test_the_same_page_as_written_by_write_report(page):
    _, _, _, path = page
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "&lt;script&gt;alert(&#x27;x&#x27;)" in text


# --- the figure panels, each on a study that has its dimensions -------------------------------

PAPER_STUDIES = {
    "figures": (
        lambda: S.figure_study(seeds=3),
        ["headline", "fig2", "fig3", "dynamics", "flatness"],
    ),
    "noise": (lambda: S.noise_study(seeds=2), ["headline", "noise", "dynamics", "flatness"]),
    "imp": (lambda: S.imp_study(seeds=2), ["headline", "dynamics", "imp"]),
}


@pytest.fixture(scope="module")
def papers(tmp_path_factory):
    """Each paper study's report, loaded in turn by :func:`_show` in one Chromium."""
    out = {}
    for name, (build, _) in PAPER_STUDIES.items():
        tables = build()
        meta = StudyMeta(f"{name} <i>study</i>", "abc", f"name: {name}\n", "0.1.0")
        data = build_report_data(meta, tables.trials, tables.epochs, S.fits(tables))
        path = tmp_path_factory.mktemp(name) / "report.html"
        path.write_text(render_report(data), encoding="utf-8")
        out[name] = (data, path)
    with _chromium() as driver:
        yield driver, out


def _show(papers, name):
    driver, out = papers
    driver.get_log("browser")  # drop what an earlier page logged
    data, path = out[name]
    _open(driver, path)
    ids = driver.execute_script(
        "return [...document.querySelectorAll('.js-plotly-plot')].map(d => d.id)"
    )
    assert ids == PAPER_STUDIES[name][1]
    return driver, data


def _drawn(driver, div_id: str) -> list[list]:
    """Per trace of a figure: its name and how many x values Plotly holds for it as drawn."""
    return driver.execute_script(
        f"const gd = document.getElementById('{div_id}');"
        "return gd._fullData.map(t => [t.name || '', t.x ? t.x.length : 0, t.mode || ''])"
    )


def _no_errors(driver):
    assert [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")] == []


def test_fig2_fig3_and_fig6_panels_draw_every_point(papers):
    driver, data = _show(papers, "figures")
    p = data.panels
    fig2 = _drawn(driver, "fig2")
    markers = [t for t in fig2 if t[2] == "markers"]
    assert [n for _, n, _ in markers] == [len(s.x) for s in p.fig2.series] == [9, 9, 9, 3]
    assert sum(1 for t in fig2 if "OLS" in t[0]) == len(p.fig2.lines) == 4
    assert all("Fig. 2" not in name for name, _, _ in fig2)  # the figure is named in the title
    title = driver.execute_script("return document.getElementById('fig2').layout.title.text")
    assert "Fig. 2" in title and "&lt;i&gt;" in title
    fig3 = _drawn(driver, "fig3")
    r = [t for t in fig3 if t[0] == "Pearson r (95% CI)"]
    assert r == [["Pearson r (95% CI)", 3, "lines+markers"]]
    flat = _drawn(driver, "flatness")
    per_panel = sum(n for _, n, mode in flat if mode == "markers") / len(p.fig6)
    assert per_panel == 3 * 11  # every ok trial, unpruned and scratch included
    drawn = driver.execute_script(
        "return document.querySelectorAll('#flatness .scatterlayer .trace .point').length"
    )
    assert drawn == 4 * 3 * 11
    _no_errors(driver)


def test_noise_panel_draws_each_arm_beside_its_references(papers):
    driver, data = _show(papers, "noise")
    lines = [t for t in _drawn(driver, "noise") if "(n=" in t[0]]
    expected = [c for g in data.panels.noise for c in g.curves]
    assert len(lines) == len(expected) == 3 * 2 + 2 + 1 + 2  # shared curves repeat per group
    assert all(n == 6 for _, n, _ in lines)  # one value per epoch
    titles = driver.execute_script(
        "return document.getElementById('noise').layout.annotations.map(a => a.text)"
    )
    assert titles == [g.title for g in data.panels.noise]
    _no_errors(driver)


def test_imp_panel_draws_error_and_memorisation_per_control(papers):
    driver, data = _show(papers, "imp")
    traces = _drawn(driver, "imp")
    curves = data.panels.imp.curves
    # per curve: test error, training loss, noisy and clean training accuracy
    assert len(traces) == 4 * len(curves)
    error = traces[::4]
    assert [n for _, n, _ in error] == [len(c.round) for c in curves]
    assert sorted(n for _, n, _ in error) == [1, 3, 3]  # sparse-from-start: its last phase
    _no_errors(driver)

"""The report in a real headless Chromium (Debian's, via chromedriver): loads clean, right points."""

from __future__ import annotations

import tempfile

import pytest
import synthetic as S
from tune_fixture import config

from results import report
from results.report_data import build_report_data
from results.storage import StudyMeta

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


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The report of a small study (with a trial lacking a baseline, one diverged) in Chromium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

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
    path.write_text(report.render_report(data), encoding="utf-8")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tempfile.mkdtemp()}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.get(path.as_uri())
        driver.execute_script("return document.readyState")
        yield driver, tables, data, path
    finally:
        driver.quit()


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
    assert ids == ["headline", "dynamics", "flatness"]


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

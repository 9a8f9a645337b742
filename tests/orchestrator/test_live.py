"""The live report: refreshes while a study runs (one thread, never overlapping, failures told
once), and a real local-Ray study whose report and tables appear before it ends."""

from __future__ import annotations

import io
import re
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from orch_helpers import cli_env, run_cli, tiny_spec

from orchestrator.cli.app import main
from orchestrator.study import live
from orchestrator.study.directory import Study
from orchestrator.study.live import LiveReport
from search_spaces.spec import spec_from_yaml

TITLE = re.compile(r"<title>(.*?)</title>")
BANNER = re.compile(r'<p class="running" role="status">(.*?)</p>')
COUNTS = {"ok": 1, "diverged": 0, "error": 0, "stopped": 0, "running": 2, "pending": 0}


def _study(tmp_path: Path, snapshot: bool = True) -> Study:
    """A study directory whose ``trials`` experiment has a snapshot (or only Tune's tuner.pkl)."""
    exp = tmp_path / "s" / "tune" / "trials"
    exp.mkdir(parents=True)
    (exp / ("experiment_state-2025.json" if snapshot else "tuner.pkl")).write_text("{}")
    spec = spec_from_yaml("name: s\nmodel: {name: mlp}\ntrain: {epochs: 2}\n")
    path = str(tmp_path / "s")
    return Study(path, pafs.LocalFileSystem(), path, spec, spec.hash, ("trials",))


def _fake_results(monkeypatch, seconds: float = 0.0) -> dict:
    """Replace the export and the report by fakes that record their calls and any overlap."""
    calls = {"export": 0, "banners": [], "active": 0, "overlap": False}

    def export(uri):
        calls["active"] += 1
        calls["overlap"] |= calls["active"] > 1
        time.sleep(seconds)
        calls["export"] += 1
        calls["active"] -= 1
        return SimpleNamespace(by_status=dict(COUNTS), n_trials=3)

    def report(uri, running=None):
        calls["banners"].append(running)

    monkeypatch.setattr(live, "export_study", export)
    monkeypatch.setattr(live, "write_report", report)
    return calls


def test_a_refresh_writes_the_banner_report_with_unstarted_trials_pending(tmp_path, monkeypatch):
    calls = _fake_results(monkeypatch)
    refresher = LiveReport(_study(tmp_path), expected=5, interval_s=60)
    assert refresher.refresh() and refresher.refreshes == 1
    (banner,) = calls["banners"]
    assert re.fullmatch(
        r"Study running: snapshot of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, 1/5 trials finished "
        r"\(1 ok, 0 diverged; 2 running, 0 error, 2 pending\)",
        banner,
    )


def test_nothing_is_refreshed_before_the_first_snapshot(tmp_path, monkeypatch):
    calls = _fake_results(monkeypatch)
    stream = io.StringIO()
    refresher = LiveReport(_study(tmp_path, snapshot=False), 5, 60, stream=stream)
    assert not refresher.refresh()
    assert calls["export"] == 0 and stream.getvalue() == ""


def test_a_failing_refresh_is_told_once_in_one_line_and_never_raises(tmp_path, monkeypatch):
    def broken(uri):
        raise OSError("disk\nfull")

    monkeypatch.setattr(live, "export_study", broken)
    stream = io.StringIO()
    refresher = LiveReport(_study(tmp_path), 5, 60, stream=stream)
    assert not refresher.refresh() and not refresher.refresh()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "(OSError: disk full)" in lines[0]
    assert lines[0].startswith("prunetune: live report refresh failed")


def test_refreshes_repeat_in_one_thread_without_overlap_and_stop_waits(tmp_path, monkeypatch):
    calls = _fake_results(monkeypatch, seconds=0.05)
    refresher = LiveReport(_study(tmp_path), 5, interval_s=0.01)
    refresher.start()
    time.sleep(0.5)
    refresher.stop()
    done = calls["export"]
    assert done >= 3 and not calls["overlap"] and calls["active"] == 0
    time.sleep(0.2)
    assert calls["export"] == done == refresher.refreshes  # nothing after stop


def test_report_every_0_never_refreshes(tmp_path, monkeypatch):
    calls = _fake_results(monkeypatch)
    refresher = LiveReport(_study(tmp_path), 5, interval_s=0)
    refresher.start()
    time.sleep(0.2)
    refresher.stop()
    assert calls["export"] == 0 and refresher.refreshes == 0


class _Watcher:
    """Polls a study directory from a thread while it runs: every version of report.html (title,
    banner) and the row count of every trials.parquet seen; one `prunetune aggregate` subprocess
    run as soon as the first live report is there."""

    def __init__(self, study: Path):
        self.study = study
        self.reports: list[tuple[str, str | None]] = []
        self.trial_rows: list[int] = []
        self.aggregate = None
        self.running = True  # cleared by the test when the run has returned
        self.aggregate_overlapped = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        seen = set()
        while not self._stop.is_set():
            report, trials = self.study / "report.html", self.study / "trials.parquet"
            if report.exists() and (stamp := report.stat().st_mtime_ns) not in seen:
                seen.add(stamp)
                html = report.read_text()
                banner = BANNER.search(html)
                self.reports.append((TITLE.search(html)[1], banner and banner[1]))
                if trials.exists():
                    self.trial_rows.append(pq.read_table(trials).num_rows)
                if self.aggregate is None and banner:
                    self.aggregate = run_cli(["aggregate", str(self.study)], cli_env(), 300)
                    self.aggregate_overlapped = self.running
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.ray
@pytest.mark.timeout(900)
def test_a_running_study_shows_its_report_and_tables_before_it_ends(
    local_ray, data_dir, tmp_path, capsys
):
    spec_file = tiny_spec(
        tmp_path / "live.yaml",
        "live",
        data_dir,
        tmp_path / "studies",
        train={"epochs": 40},
        report_every=1,
    )
    study = tmp_path / "studies" / "live"
    watcher = _Watcher(study)
    try:
        code = main(["run", str(spec_file)])
        watcher.running = False
    finally:
        watcher.stop()
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and out[-1] == str(study)

    # Every version seen while it ran is a live report; only the last may be the final one.
    live_reports = [b for t, b in watcher.reports if t == "running: live · prunetune report"]
    assert len(live_reports) >= len(watcher.reports) - 1 and live_reports, watcher.reports
    for banner in live_reports:
        assert banner is not None and banner.startswith("Study running: snapshot of "), banner
        assert re.search(r" UTC, \d/6 trials finished \(\d ok, \d diverged; ", banner), banner
    assert watcher.trial_rows and all(0 < n <= 6 for n in watcher.trial_rows)
    # `prunetune aggregate` ran while the study did, beside the live refreshes, and succeeded.
    assert watcher.aggregate_overlapped
    assert watcher.aggregate.returncode == 0, watcher.aggregate.stderr
    assert "study live (spec " in watcher.aggregate.stdout
    # The final report: no banner, a plain title, every trial finished.
    final = (study / "report.html").read_text()
    assert TITLE.search(final)[1] == "live · prunetune report"
    assert BANNER.search(final) is None and "Study running" not in final
    rows = pq.read_table(study / "trials.parquet").to_pylist()
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}

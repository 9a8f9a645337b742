"""The progress line, status lines and study paths (pure functions)."""

from __future__ import annotations

import io
import os
from types import SimpleNamespace

import pytest

from orchestrator.tune.progress import ProgressCallback, count_trials, estimate_eta, format_progress
from results.tables.status import format_counts
from results.tables.storage import join_uri, study_uri


def _trial(trial_id: str, status: str, record_status: str | None = None):
    """A Tune Trial as the callbacks see it: a reported trial's last result has Tune's
    ``training_iteration`` next to the record's ``status``."""
    last = {"status": record_status, "training_iteration": 1} if record_status else {}
    return SimpleNamespace(trial_id=trial_id, status=status, last_result=last)


def test_progress_line_counts_and_eta():
    trials = [
        _trial("a", "TERMINATED", "done"),
        _trial("b", "TERMINATED", "diverged"),
        _trial("c", "RUNNING", "running"),
        _trial("d", "RUNNING"),
        _trial("e", "ERROR"),
        _trial("f", "PENDING"),
    ]
    counts = count_trials(trials)
    assert counts == {
        "ok": 1, "diverged": 1, "error": 1, "stopped": 0, "running": 1, "pending": 2
    }  # fmt: skip
    line = format_progress("trials", counts, total=10, elapsed_s=65, eta_s=270)
    assert line == (
        "[trials] 2/10 finished (1 ok, 1 diverged), 1 running, 1 error, 6 pending "
        "| 1m05s, ETA 4m30s"
    )
    assert format_progress("optuna", counts, 10, 3725, None).endswith("| 1h02m")


@pytest.mark.parametrize(
    ("remaining", "running", "seconds", "eta"),
    [(6, 2, [10.0, 20.0], 45.0), (6, 0, [10.0], 60.0), (3, 2, [], None), (0, 0, [], 0.0)],
)
def test_eta_is_remaining_times_mean_over_concurrency(remaining, running, seconds, eta):
    assert estimate_eta(remaining, running, seconds) == eta


def test_callback_prints_at_most_every_interval_and_at_the_end():
    out = io.StringIO()
    cb = ProgressCallback("trials", interval_s=3600, stream=out)
    cb.setup(total_num_samples=3)
    trials = [_trial("a", "RUNNING"), _trial("b", "PENDING"), _trial("c", "PENDING")]
    cb.on_trial_start(0, trials, trials[0])
    for step in range(5):
        cb.on_step_end(step, trials)
    trials[0] = _trial("a", "TERMINATED", "done")
    cb.on_trial_complete(6, trials, trials[0])
    cb.on_experiment_end(trials)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(
        "[trials] 0/3 finished (0 ok, 0 diverged), 0 running, 0 error, 3 pending | "
    )
    assert lines[1].startswith(
        "[trials] 1/3 finished (1 ok, 0 diverged), 0 running, 0 error, 2 pending | "
    )
    assert "ETA" in lines[1]


def test_after_ctrl_c_never_run_trials_are_pending_not_done():
    """On Ctrl-C Tune ends every trial (TERMINATED), also those that never ran: they are still
    pending (a resume runs them), and a trial stopped mid-way is stopped, not done."""
    trials = [
        _trial("a", "TERMINATED", "done"),
        _trial("b", "TERMINATED", "running"),
        _trial("c", "TERMINATED"),
        _trial("d", "TERMINATED"),
    ]
    counts = count_trials(trials)
    assert (counts["ok"], counts["stopped"], counts["pending"]) == (1, 1, 2)
    line = format_progress("trials", counts, total=4, elapsed_s=1, eta_s=None)
    assert line.startswith("[trials] 1/4 finished (1 ok, 0 diverged), 0 running, 1 stopped")


def test_status_counts_line():
    counts = {"ok": 5, "diverged": 1, "running": 2, "error": 1, "stopped": 0, "pending": 3}
    assert format_counts(counts, 12) == (
        "6/12 finished: 5 ok, 1 diverged; 2 running, 1 error, 3 pending"
    )


def test_study_paths_for_local_dirs_and_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert study_uri("./studies", "q") == f"{tmp_path}/studies/q"
    assert (
        study_uri("s3://bucket/sweeps?region=us-east-1", "q")
        == "s3://bucket/sweeps/q?region=us-east-1"
    )
    assert join_uri("gs://b/x/", "tune", "trials") == "gs://b/x/tune/trials"
    assert join_uri("/abs/q", "tune") == "/abs/q/tune"


def test_ray_session_environment_is_put_back(monkeypatch):
    """The driver's Tune settings must not leak into the calling process (a later Tuner in the
    same process would otherwise run without result.json)."""
    from orchestrator.cluster import runtime

    monkeypatch.delenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    with runtime._restored_environment(("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "OMP_NUM_THREADS")):
        runtime.tune_environment()
        os.environ.pop("OMP_NUM_THREADS")
        assert os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] == "1"
    assert "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS" not in os.environ
    assert os.environ["OMP_NUM_THREADS"] == "3"

"""The progress line, status lines and study paths (pure functions)."""

from __future__ import annotations

import io
import os
from types import SimpleNamespace

import pytest

from orchestrator.progress import ProgressCallback, count_trials, estimate_eta, format_progress
from orchestrator.status import format_counts
from orchestrator.study import join_uri, study_uri


def _trial(trial_id: str, status: str, record_status: str | None = None):
    return SimpleNamespace(
        trial_id=trial_id,
        status=status,
        last_result={"status": record_status} if record_status else {},
    )


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
    assert counts == {"done": 1, "diverged": 1, "running": 2, "failed": 1}
    line = format_progress("trials", counts, total=10, elapsed_s=65, eta_s=270)
    assert (
        line == "[trials] 2/10 done (1 diverged), 2 running, 1 failed, 5 pending | 1m05s, ETA 4m30s"
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
    assert lines[0].startswith("[trials] 0/3 done (0 diverged), 1 running, 0 failed, 2 pending | ")
    assert lines[1].startswith("[trials] 1/3 done (0 diverged), 0 running, 0 failed, 2 pending | ")
    assert "ETA" in lines[1]


def test_status_counts_line():
    counts = {"done": 5, "diverged": 1, "running": 2, "errored": 1, "stopped": 0, "pending": 3}
    assert format_counts(counts, 12) == (
        "6/12 finished: 5 done, 1 diverged; 2 running, 1 errored, 3 pending"
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
    from orchestrator import runtime

    monkeypatch.delenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    with runtime._restored_environment(("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "OMP_NUM_THREADS")):
        runtime.tune_environment()
        os.environ.pop("OMP_NUM_THREADS")
        assert os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] == "1"
    assert "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS" not in os.environ
    assert os.environ["OMP_NUM_THREADS"] == "3"

"""The Ray-free snapshot reader: phases, an unreadable snapshot, statuses from Tune's JSON."""

from __future__ import annotations

import json

import pyarrow.fs as pafs
import pytest

from results.tables.snapshot import phase, read_snapshot, read_study
from trainables.errors import UserError

FS = pafs.LocalFileSystem()


def _entry(trial_id: str, status: str, last: dict) -> list[str]:
    """One ``trial_data`` pair as ``Trial.get_json_state()`` writes it (the plain JSON parts)."""
    state = {"trial_id": trial_id, "status": status, "relative_logdir": trial_id, "config": {}}
    return [json.dumps(state), json.dumps({"last_result": last, "num_failures": 0})]


def test_phases_and_an_unreadable_snapshot(tmp_path):
    exp = tmp_path / "exp"
    assert phase(FS, str(exp)) == "absent"
    exp.mkdir()
    (exp / "tuner.pkl").write_bytes(b"")
    assert phase(FS, str(exp)) == "stale" and read_snapshot(FS, str(exp)) is None
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text('{"trial_data": [["{')
    assert phase(FS, str(exp)) == "snapshotted"
    with pytest.raises(UserError, match="Tune experiment snapshot unreadable"):
        read_snapshot(FS, str(exp), retry_s=0.01)


def test_statuses_counts_completion_and_the_newest_snapshot(tmp_path):
    exp = tmp_path / "tune" / "trials"
    exp.mkdir(parents=True)
    old = {"trial_data": [_entry("a", "RUNNING", {"training_iteration": 1, "status": "running"})]}
    new = {
        "trial_data": [
            _entry("a", "TERMINATED", {"training_iteration": 2, "status": "done"}),
            _entry("b", "TERMINATED", {"training_iteration": 1, "status": "diverged"}),
            _entry("c", "RUNNING", {"training_iteration": 1, "status": "running"}),
            _entry("d", "ERROR", {"training_iteration": 1}),
            _entry("e", "PENDING", {}),
            _entry("f", "TERMINATED", {"training_iteration": 1, "status": "running"}),
            _entry("g", "TERMINATED", {}),  # ended by Ctrl-C before it ever ran
        ]
    }
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps(old))
    (exp / "experiment_state-2026-01-02_00-00-00.json").write_text(json.dumps(new))
    snapshot = read_snapshot(FS, str(exp))
    assert [t.status for t in snapshot.trials] == [
        "ok", "diverged", "running", "error", "pending", "stopped", "pending",
    ]  # fmt: skip
    assert snapshot.counts(expected=9) == {
        "ok": 1, "diverged": 1, "error": 1, "stopped": 1, "running": 1, "pending": 4,
    }  # fmt: skip
    assert not snapshot.complete(7)
    study = read_study(FS, str(tmp_path / "tune"))
    assert study.experiments == ("trials",) and len(study.trials) == 7
    assert study.trials[0].result_path == str(exp / "a" / "result.json")

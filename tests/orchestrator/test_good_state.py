"""The last good copy of Tune's run state (orchestrator.tune.good_state), without Ray."""

from __future__ import annotations

import json

import pyarrow.fs as pafs

from orchestrator.tune.good_state import keep_good_state, read_good_snapshot, restore_good_state
from results.tables.snapshot import read_snapshot

STATE = "experiment_state-2026-01-01_00-00-00.json"


def _state(n: int) -> bytes:
    return json.dumps({"trial_data": [], "runner_data": {"n": n}, "stats": {}}).encode()


def test_a_cut_short_state_file_is_put_back_from_its_last_good_copy(tmp_path):
    fs = pafs.LocalFileSystem()
    (tmp_path / STATE).write_bytes(_state(1))
    (tmp_path / "basic-variant-state-2026-01-01_00-00-00.json").write_bytes(_state(2))
    assert sorted(keep_good_state(fs, str(tmp_path))) == [
        "basic-variant-state-2026-01-01_00-00-00.json",
        STATE,
    ]
    assert keep_good_state(fs, str(tmp_path)) == []  # unchanged: not copied again
    assert read_good_snapshot(fs, str(tmp_path)).trials == ()

    (tmp_path / STATE).write_bytes(_state(3)[:20])  # a full disk cut the next copy short
    assert keep_good_state(fs, str(tmp_path)) == []  # a file that does not parse is never kept

    assert read_snapshot(fs, str(tmp_path)).file.endswith(".good")  # `status` reads the copy

    assert restore_good_state(fs, str(tmp_path)) == [STATE]
    assert (tmp_path / STATE).read_bytes() == _state(1)
    assert restore_good_state(fs, str(tmp_path)) == []
    assert not list(tmp_path.glob("*.tmp"))


def test_a_missing_state_file_is_put_back_and_nothing_without_a_copy(tmp_path):
    fs = pafs.LocalFileSystem()
    assert restore_good_state(fs, str(tmp_path)) == []
    assert read_good_snapshot(fs, str(tmp_path)) is None
    (tmp_path / STATE).write_bytes(_state(1))
    keep_good_state(fs, str(tmp_path))
    (tmp_path / STATE).unlink()
    assert restore_good_state(fs, str(tmp_path)) == [STATE]
    assert json.loads((tmp_path / STATE).read_bytes())["runner_data"] == {"n": 1}

"""The last good run state of a Tune experiment (orchestrator.tune.good_state), without Ray.

Tune's files are imitated in their real formats: the experiment state is JSON, the searcher's
state a pickle (``basic-variant-state-*.json`` is one too, whatever its name says).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pyarrow.fs as pafs

from orchestrator.tune.good_state import keep_good_state, read_good_snapshot, restore_good_state
from orchestrator.tune.result_tails import mend_result_files
from results.tables.snapshot import read_snapshot

FS = pafs.LocalFileSystem()
SESSION = "2026-01-01_00-00-00"
STATE = f"experiment_state-{SESSION}.json"
SEARCHER = f"basic-variant-state-{SESSION}.json"


def _state(n: int) -> bytes:
    """Tune's experiment state after its grid searcher generated `n` trials."""
    trials = [
        [json.dumps({"trial_id": f"t{i}", "status": "RUNNING"}), json.dumps({"last_result": {}})]
        for i in range(n)
    ]
    return json.dumps({"trial_data": trials, "runner_data": {}, "stats": {}}).encode()


def _searcher(n: int) -> bytes:
    """The grid searcher's state after it generated `n` trials (Tune pickles it)."""
    return pickle.dumps({"counter": n, "_live_trials": {f"t{i}" for i in range(n)}})


def _snapshot(exp: Path, staging: Path, n: int) -> None:
    """Tune saves a snapshot into its staging directory and copies it into the experiment's."""
    for directory in (staging, exp):
        directory.mkdir(exist_ok=True)
        (directory / STATE).write_bytes(_state(n))
        (directory / SEARCHER).write_bytes(_searcher(n))


def test_a_cut_short_snapshot_puts_back_the_searcher_state_of_the_same_snapshot(tmp_path):
    exp, staging = tmp_path / "exp", tmp_path / "staging"
    _snapshot(exp, staging, 1)
    assert keep_good_state(FS, str(exp), str(staging)) == [SEARCHER, STATE]
    assert keep_good_state(FS, str(exp), str(staging)) == []  # unchanged: not kept again
    # The next snapshot: the searcher's state reaches the disk, then the disk fills in the middle
    # of the experiment state. Restored alone, that would pair 1 trial with a searcher that has
    # generated 2: trial t1 would never run.
    (staging / STATE).write_bytes(_state(2))
    (staging / SEARCHER).write_bytes(_searcher(2))
    (exp / SEARCHER).write_bytes(_searcher(2))
    (exp / STATE).write_bytes(_state(2)[:20])
    assert keep_good_state(FS, str(exp), str(staging)) == []
    assert read_snapshot(FS, str(exp)).file.endswith(".good")  # `status` reads the copy

    assert restore_good_state(FS, str(exp)) == [STATE]

    assert (exp / STATE).read_bytes() == _state(1)
    assert (exp / SEARCHER).read_bytes() == _searcher(1)
    assert restore_good_state(FS, str(exp)) == []
    assert not list(exp.glob("*.tmp"))


def test_a_snapshot_half_copied_is_never_kept(tmp_path):
    exp, staging = tmp_path / "exp", tmp_path / "staging"
    _snapshot(exp, staging, 1)
    keep_good_state(FS, str(exp), str(staging))
    (staging / STATE).write_bytes(_state(2))
    (staging / SEARCHER).write_bytes(_searcher(2))
    (exp / SEARCHER).write_bytes(_searcher(2))  # copied so far; every file parses
    assert keep_good_state(FS, str(exp), str(staging)) == []
    (exp / STATE).write_bytes(_state(2))  # the copy completes
    assert keep_good_state(FS, str(exp), str(staging)) == [SEARCHER, STATE]
    assert len(read_good_snapshot(FS, str(exp)).trials) == 2

    (exp / SEARCHER).write_bytes(_searcher(3)[:-1])  # a pickle cut short: the set goes back
    assert restore_good_state(FS, str(exp)) == [SEARCHER]
    assert (exp / SEARCHER).read_bytes() == _searcher(2)


def test_a_later_session_half_copied_is_removed_and_missing_files_put_back(tmp_path):
    exp, staging = tmp_path / "exp", tmp_path / "staging"
    assert restore_good_state(FS, str(exp)) == []  # nothing kept yet: nothing to put back
    assert read_good_snapshot(FS, str(exp)) is None
    _snapshot(exp, staging, 1)
    keep_good_state(FS, str(exp), str(staging))
    later = "2026-01-02_00-00-00"  # a newer session's files: Tune would restore from them
    (exp / f"basic-variant-state-{later}.json").write_bytes(_searcher(4))
    (exp / f"experiment_state-{later}.json").write_bytes(b"")
    (exp / STATE).unlink()

    restored = restore_good_state(FS, str(exp))

    assert restored == [STATE, f"experiment_state-{later}.json"]
    assert sorted(p.name for p in exp.iterdir() if not p.name.endswith(".good")) == [
        SEARCHER,
        STATE,
    ]
    assert json.loads((exp / STATE).read_bytes()) == json.loads(_state(1))


def test_a_resumed_trials_cut_short_results_are_mended_and_no_epoch_is_skipped(tmp_path):
    trials = [
        [json.dumps({"trial_id": t, "status": s, "relative_logdir": t}), json.dumps({})]
        for t, s in (("running", "RUNNING"), ("errored", "ERROR"), ("done", "TERMINATED"))
    ]
    (tmp_path / STATE).write_text(json.dumps({"trial_data": trials}))
    lines = b'{"epoch": 0}\n{"epoch": 1}\n'
    for trial, tail in (("running", b'{"epo'), ("errored", b""), ("done", b'{"epo')):
        (tmp_path / trial).mkdir()
        (tmp_path / trial / "result.json").write_bytes(lines + tail)
        for index, epoch in enumerate((1, 2, 3)):  # written after these epochs
            checkpoint = tmp_path / trial / f"checkpoint_{index:06d}"
            checkpoint.mkdir()
            (checkpoint / "state.pt").write_bytes(b"weights")
            (checkpoint / "state.sha256.json").write_text(json.dumps({"epoch": epoch}))

    said = mend_result_files(FS, str(tmp_path))

    assert [line.split()[1] for line in said] == ["running/result.json", "errored/result.json"]
    assert "5 bytes" in said[0] and "epochs 2, 3" in said[0], said
    assert (tmp_path / "running" / "result.json").read_bytes() == lines  # Tune appends from here
    for trial in ("running", "errored"):  # resumed from epoch 1's checkpoint: epoch 2 runs again
        states = sorted(
            p.relative_to(tmp_path / trial) for p in (tmp_path / trial).glob("*/state.pt*")
        )
        assert [str(p) for p in states] == [
            "checkpoint_000000/state.pt",
            "checkpoint_000001/state.pt.corrupt",
            "checkpoint_000002/state.pt.corrupt",
        ]
    assert (tmp_path / "done" / "result.json").read_bytes() == lines + b'{"epo'  # not resumed
    assert not list((tmp_path / "done").glob("*/*.corrupt"))
    assert mend_result_files(FS, str(tmp_path)) == []


def test_a_resumed_trial_without_results_restarts_from_its_first_epoch(tmp_path):
    """Its checkpoints reached storage, the driver's copy of its result.json had not: Tune would
    start a new file and resume from the newest checkpoint, and the epochs before it would be
    lost. Every checkpoint is set aside, so the trial runs and reports from epoch 0."""
    trials = [[json.dumps({"trial_id": "t", "status": "RUNNING", "relative_logdir": "t"}), "{}"]]
    (tmp_path / STATE).write_text(json.dumps({"trial_data": trials}))
    for index, epoch in enumerate((4, 9)):
        checkpoint = tmp_path / "t" / f"checkpoint_{index:06d}"
        checkpoint.mkdir(parents=True)
        (checkpoint / "state.pt").write_bytes(b"weights")
        (checkpoint / "state.sha256.json").write_text(json.dumps({"epoch": epoch}))

    (said,) = mend_result_files(FS, str(tmp_path))

    assert "t/result.json is missing" in said and "epochs 4, 9" in said, said
    states = sorted(
        str(p.relative_to(tmp_path / "t")) for p in (tmp_path / "t").glob("*/state.pt*")
    )
    assert states == ["checkpoint_000000/state.pt.corrupt", "checkpoint_000001/state.pt.corrupt"]
    assert not (tmp_path / "t" / "result.json").exists()  # Tune starts it afresh
    assert mend_result_files(FS, str(tmp_path)) == []

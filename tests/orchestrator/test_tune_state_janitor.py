"""Snapshot reading, checkpoint pruning and orphan removal on snapshots serialised by Tune's own
code (run metadata with a real checkpoint manager); no Ray runtime."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs as pafs
import pytest
from ray.train._internal.checkpoint_manager import _CheckpointManager
from ray.train._internal.session import _TrainingResult
from ray.tune import Checkpoint, CheckpointConfig
from ray.tune.trainable.metadata import _TrainingRunMetadata

from orchestrator.janitor import (
    forget_checkpoints_before,
    latest_checkpoint_name,
    prune_checkpoints,
    remove_orphans,
)
from orchestrator.tune_state import phase, read_snapshot
from trainables.errors import UserError

FS = pafs.LocalFileSystem()


def _metadata(trial_dir: Path, registered: list[int], last_result: dict) -> str:
    meta = _TrainingRunMetadata()
    meta.checkpoint_manager = _CheckpointManager(CheckpointConfig())
    for i in registered:
        path = str(trial_dir / f"checkpoint_{i:06d}")
        meta.checkpoint_manager.register_checkpoint(
            _TrainingResult(checkpoint=Checkpoint(path), metrics={"epoch": i})
        )
    meta.last_result = last_result
    return meta.get_json_state()


def _experiment(tmp_path: Path, trials: dict[str, tuple[str, list[int], dict, int]]) -> Path:
    """An experiment dir with one snapshot; trials: name -> (status, registered, last, on disk)."""
    exp = tmp_path / "exp"
    exp.mkdir(parents=True)
    (exp / "tuner.pkl").write_bytes(b"")
    data = []
    for name, (status, registered, last, on_disk) in trials.items():
        trial_dir = exp / name
        trial_dir.mkdir()
        (trial_dir / "params.json").write_text("{}")
        for i in range(on_disk):
            (trial_dir / f"checkpoint_{i:06d}").mkdir()
        state = {"trial_id": name, "status": status, "relative_logdir": name}
        data.append([json.dumps(state), _metadata(trial_dir, registered, last)])
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": data}))
    return exp


def _checkpoints(trial_dir: Path) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in trial_dir.glob("checkpoint_*"))


def test_prune_keeps_the_restore_point_and_everything_after(tmp_path):
    exp = _experiment(
        tmp_path,
        {
            # The result of epoch 4 arrived, its save not yet registered: restore point is 3.
            "running": (
                "RUNNING",
                [0, 1, 2, 3],
                {"training_iteration": 5, "checkpoint_dir_name": "checkpoint_000004"},
                6,
            ),
            "done": ("TERMINATED", [0, 1, 2], {"training_iteration": 3, "status": "done"}, 3),
            "fresh": ("PENDING", [], {}, 0),
        },
    )
    snapshot = read_snapshot(FS, str(exp))
    assert [latest_checkpoint_name(t.metadata) for t in snapshot.trials] == [
        "checkpoint_000003",
        "checkpoint_000002",
        None,
    ]

    assert prune_checkpoints(FS, str(exp)) == {"running": 3, "done": 2}

    assert _checkpoints(exp / "running") == [3, 4, 5]
    assert _checkpoints(exp / "done") == [2]
    assert prune_checkpoints(FS, str(exp)) == {"running": 3, "done": 2}  # idempotent
    assert _checkpoints(exp / "running") == [3, 4, 5]


def test_forget_checkpoints_trims_the_live_manager_and_its_cached_json(tmp_path):
    meta = _TrainingRunMetadata()
    meta.checkpoint_manager = _CheckpointManager(CheckpointConfig())
    for i in range(5):
        path = str(tmp_path / f"checkpoint_{i:06d}")
        result = _TrainingResult(checkpoint=Checkpoint(path), metrics={"epoch": i})
        meta.checkpoint_manager.register_checkpoint(result)
    trial = SimpleNamespace(run_metadata=meta)
    before = len(meta.get_json_state())

    assert forget_checkpoints_before(trial, 3) == 3

    kept = meta.checkpoint_manager.best_checkpoint_results
    assert [Path(r.checkpoint.path).name for r in kept] == [
        "checkpoint_000003",
        "checkpoint_000004",
    ]
    assert len(meta.get_json_state()) < before  # the snapshot text shrinks too
    assert latest_checkpoint_name(meta.get_json_state()) == "checkpoint_000004"
    assert forget_checkpoints_before(trial, 3) == 0


def test_remove_orphans_deletes_only_unlisted_trial_directories(tmp_path):
    exp = _experiment(tmp_path, {"listed": ("TERMINATED", [0], {"training_iteration": 1}, 1)})
    (exp / "orphan").mkdir()
    (exp / "orphan" / "checkpoint_000000").mkdir()
    (exp / "not-a-trial").mkdir()

    assert remove_orphans(FS, str(exp)) == ["orphan"]

    assert sorted(p.name for p in exp.iterdir() if p.is_dir()) == ["listed", "not-a-trial"]


def test_snapshot_outcomes_counts_and_completion(tmp_path):
    exp = _experiment(
        tmp_path,
        {
            "a": ("TERMINATED", [0], {"training_iteration": 2, "status": "done"}, 1),
            "b": ("TERMINATED", [0], {"training_iteration": 1, "status": "diverged"}, 1),
            "c": ("RUNNING", [0], {"training_iteration": 1, "status": "running"}, 1),
            "d": ("ERROR", [0], {"training_iteration": 1}, 1),
            "e": ("PENDING", [], {}, 0),
        },
    )
    snapshot = read_snapshot(FS, str(exp))
    assert [t.outcome for t in snapshot.trials] == [
        "done",
        "diverged",
        "running",
        "errored",
        "pending",
    ]
    counts = snapshot.counts(expected=7)
    assert counts == {
        "done": 1,
        "diverged": 1,
        "running": 1,
        "errored": 1,
        "stopped": 0,
        "pending": 3,
    }
    assert not snapshot.complete(5)
    done_only = _experiment(
        tmp_path / "x", {"a": ("TERMINATED", [0], {"status": "done", "training_iteration": 1}, 1)}
    )
    assert read_snapshot(FS, str(done_only)).complete(1)
    assert not read_snapshot(FS, str(done_only)).complete(2)  # the searcher owes a trial


def test_phases_and_an_unreadable_snapshot(tmp_path):
    exp = tmp_path / "exp"
    assert phase(FS, str(exp)) == "absent"
    exp.mkdir()
    (exp / "tuner.pkl").write_bytes(b"")
    assert phase(FS, str(exp)) == "stale" and read_snapshot(FS, str(exp)) is None
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text('{"trial_data": [["{')
    assert phase(FS, str(exp)) == "snapshotted"
    with pytest.raises(UserError, match="Tune experiment snapshot unreadable"):
        read_snapshot(FS, str(exp))

"""Checkpoint pruning, orphan removal and the live-manager trim on a REAL Tune experiment.

A tiny function trainable checkpoints every epoch (no ``num_to_keep``, as the orchestrator runs
Tune); the snapshots, checkpoint managers and trial objects are Tune's own, never built by hand.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from orchestrator.tune.internals import forget_checkpoints_before, latest_checkpoint_name
from orchestrator.tune.janitor import prune_checkpoints, remove_orphans
from results.tables.snapshot import read_snapshot

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
FS = pafs.LocalFileSystem()
EPOCHS = 4


def _trainable(config: dict) -> None:
    from ray import tune

    for epoch in range(EPOCHS):
        with tempfile.TemporaryDirectory() as d:
            Path(d, "state.json").write_text(json.dumps({"epoch": epoch}))
            tune.report({"epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(d))


@pytest.fixture(scope="module")
def experiment(local_ray, tmp_path_factory) -> Path:
    import ray.cloudpickle
    from ray import tune

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests
    storage = tmp_path_factory.mktemp("janitor")
    tuner = tune.Tuner(
        _trainable,
        param_space={"x": tune.grid_search([0, 1])},
        run_config=tune.RunConfig(name="exp", storage_path=str(storage), verbose=0),
    )
    tuner.fit()
    return storage / "exp"


def _copy(experiment: Path, tmp_path: Path) -> Path:
    exp = tmp_path / "exp"
    shutil.copytree(experiment, exp)
    return exp


def _checkpoints(trial_dir: Path) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in trial_dir.glob("checkpoint_*"))


def test_prune_keeps_the_restore_point_and_what_came_after(experiment, tmp_path):
    exp = _copy(experiment, tmp_path)
    snapshot = read_snapshot(FS, str(exp))
    assert [latest_checkpoint_name(t.metadata) for t in snapshot.trials] == [
        f"checkpoint_{EPOCHS - 1:06d}"
    ] * 2
    first = exp / snapshot.trials[0].logdir
    assert _checkpoints(first) == list(range(EPOCHS))
    (first / "checkpoint_000009").mkdir()  # written after the snapshot: not registered yet

    restore = prune_checkpoints(FS, str(exp))

    assert restore == {t.trial_id: EPOCHS - 1 for t in snapshot.trials}
    assert _checkpoints(first) == [EPOCHS - 1, 9]
    assert _checkpoints(exp / snapshot.trials[1].logdir) == [EPOCHS - 1]
    assert prune_checkpoints(FS, str(exp)) == restore  # idempotent
    assert _checkpoints(first) == [EPOCHS - 1, 9]


def test_prune_skips_trials_already_pruned_to_the_same_restore_point(experiment, tmp_path):
    """The janitor remembers how far it pruned each trial; a trial whose restore point has not
    moved is not listed again (one request per trial and pass on an object store)."""
    exp = _copy(experiment, tmp_path)
    first, second = read_snapshot(FS, str(exp)).trials

    restore = prune_checkpoints(FS, str(exp), {first.trial_id: EPOCHS - 1})

    assert restore == {first.trial_id: EPOCHS - 1, second.trial_id: EPOCHS - 1}
    assert _checkpoints(exp / first.logdir) == list(range(EPOCHS))  # not looked at
    assert _checkpoints(exp / second.logdir) == [EPOCHS - 1]
    prune_checkpoints(FS, str(exp), {first.trial_id: EPOCHS - 2})  # its restore point moved
    assert _checkpoints(exp / first.logdir) == [EPOCHS - 1]


def test_remove_orphans_deletes_only_unlisted_trial_directories(experiment, tmp_path):
    exp = _copy(experiment, tmp_path)
    listed = sorted(t.logdir for t in read_snapshot(FS, str(exp)).trials)
    shutil.copytree(exp / listed[0], exp / "orphan")  # a trial directory no snapshot lists
    (exp / "not-a-trial").mkdir()

    assert remove_orphans(FS, str(exp)) == ["orphan"]

    dirs = sorted(p.name for p in exp.iterdir() if p.is_dir())
    assert dirs == sorted([*listed, "not-a-trial"])


def test_forget_trims_a_restored_trials_manager_and_its_snapshot_text(experiment):
    from ray.tune import ExperimentAnalysis

    trial = ExperimentAnalysis(str(experiment)).trials[0]
    before = len(trial.run_metadata.get_json_state())
    names = [
        os.path.basename(r.checkpoint.path)
        for r in trial.run_metadata.checkpoint_manager.best_checkpoint_results
    ]
    assert names == [f"checkpoint_{i:06d}" for i in range(EPOCHS)]

    assert forget_checkpoints_before(trial, EPOCHS - 2) == EPOCHS - 2

    kept = trial.run_metadata.checkpoint_manager.best_checkpoint_results
    assert [os.path.basename(r.checkpoint.path) for r in kept] == [
        f"checkpoint_{EPOCHS - 2:06d}",
        f"checkpoint_{EPOCHS - 1:06d}",
    ]
    assert len(trial.run_metadata.get_json_state()) < before  # the snapshot text shrinks too
    assert (
        latest_checkpoint_name(trial.run_metadata.get_json_state())
        == kept[-1].checkpoint.path.rsplit("/", 1)[1]
    )
    assert forget_checkpoints_before(trial, EPOCHS - 2) == 0


def _fake_trial(trial_id: str, latest: Path, status: str = "RUNNING"):
    """What the step-wise pruning reads of a live trial: its id, status and newest registered
    checkpoint (the manager's ``latest_checkpoint_result``)."""
    from types import SimpleNamespace

    result = SimpleNamespace(checkpoint=SimpleNamespace(path=str(latest)))
    manager = SimpleNamespace(latest_checkpoint_result=result)
    metadata = SimpleNamespace(checkpoint_manager=manager)
    return SimpleNamespace(trial_id=trial_id, status=status, run_metadata=metadata)


def test_step_wise_pruning_spares_what_a_staged_snapshot_names(experiment, tmp_path):
    """The real snapshot, staged, names checkpoint EPOCHS - 1 of each trial: with a newer one
    registered, every older checkpoint goes but that one; with no staged snapshot, none goes."""
    from types import SimpleNamespace

    from orchestrator.tune.janitor import CheckpointJanitor

    exp = _copy(experiment, tmp_path)
    staging, empty = tmp_path / "staging", tmp_path / "empty"
    empty.mkdir()
    staging.mkdir()
    for snapshot_file in exp.glob("experiment_state-*.json"):
        shutil.copy(snapshot_file, staging)
    first = read_snapshot(FS, str(exp)).trials[0]
    trial_dir = exp / first.logdir
    newest = trial_dir / f"checkpoint_{EPOCHS:06d}"  # written after that snapshot
    shutil.copytree(trial_dir / f"checkpoint_{EPOCHS - 1:06d}", newest)
    janitor = CheckpointJanitor()
    trial = _fake_trial(first.trial_id, newest)
    for i in range(EPOCHS + 1):
        path = str(trial_dir / f"checkpoint_{i:06d}")
        janitor.on_checkpoint(0, [], trial, SimpleNamespace(path=path, filesystem=FS))

    janitor._prune_superseded(str(empty))
    assert _checkpoints(trial_dir) == list(range(EPOCHS + 1))  # no snapshot seen: nothing goes

    janitor._prune_superseded(str(staging))
    assert _checkpoints(trial_dir) == [EPOCHS - 1, EPOCHS]

"""The janitor's step-wise pruning on a REAL Tune experiment: superseded checkpoints go at the next
controller step, never one that a snapshot names.

A tiny function trainable checkpoints every epoch and, before each report, counts the checkpoint
directories in its own trial directory. The periodic pass is pushed out of the run
(``interval_s``), so only the step-wise pruning can keep that count down.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from orchestrator.cli.disk_estimate import PEAK_CHECKPOINTS_PER_RUNNING_TRIAL
from orchestrator.tune.internals import latest_checkpoint_name
from orchestrator.tune.janitor import CheckpointJanitor
from results.tables.snapshot import read_snapshot

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
EPOCHS = 25


def _trainable(config: dict) -> None:
    from ray import tune

    trial_dir = Path(config["exp"], f"trial_{tune.get_context().get_trial_id()}")  # on storage
    for epoch in range(EPOCHS):
        alive = len(list(trial_dir.glob("checkpoint_*")))
        time.sleep(0.05)  # let the driver take a few steps between two epochs
        with tempfile.TemporaryDirectory() as d:
            Path(d, "state.json").write_text(json.dumps({"epoch": epoch}))
            checkpoint = tune.Checkpoint.from_directory(d)
            tune.report({"epoch": epoch, "alive": alive}, checkpoint=checkpoint)


def test_superseded_checkpoints_go_at_the_next_step(local_ray, tmp_path):
    import ray.cloudpickle
    from ray import tune

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests
    janitor = CheckpointJanitor(interval_s=3600)
    tuner = tune.Tuner(
        _trainable,
        param_space={"x": tune.grid_search([0, 1, 2]), "exp": str(tmp_path / "exp")},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=2, trial_dirname_creator=lambda t: f"trial_{t.trial_id}"
        ),
        run_config=tune.RunConfig(
            name="exp",
            storage_path=str(tmp_path),
            callbacks=[janitor],
            verbose=0,
        ),
    )
    results = tuner.fit()
    assert not results.errors
    assert janitor._staged is not None  # it read the driver's staged snapshots
    for result in results:
        # a trial writes EPOCHS checkpoints; it never holds more than the bound at once
        alive = list(result.metrics_dataframe["alive"])
        assert alive[0] == 0 and alive[-1] >= 1  # it counted in the right directory
        assert max(alive) <= PEAK_CHECKPOINTS_PER_RUNNING_TRIAL, alive
    snapshot = read_snapshot(pafs.LocalFileSystem(), str(tmp_path / "exp"))
    for trial in snapshot.trials:
        final = latest_checkpoint_name(trial.metadata)
        left = sorted(p.name for p in Path(trial.trial_dir).glob("checkpoint_*"))
        assert final == left[-1] == f"checkpoint_{EPOCHS - 1:06d}"
        # what remains besides the final one is what some snapshot named (a handful at most)
        assert len(left) <= PEAK_CHECKPOINTS_PER_RUNNING_TRIAL, left

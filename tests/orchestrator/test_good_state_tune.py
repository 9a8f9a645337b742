"""The run state's last good set, kept by DiskGuard inside a REAL Tune experiment: every set it
keeps is one snapshot (the grid searcher has generated exactly the trials the experiment state
lists), and the searcher's pickled state is part of it."""

from __future__ import annotations

import json
import posixpath
import sys
import time

import pyarrow.fs as pafs
import pytest

from orchestrator.tune.diskfull import DiskGuard
from orchestrator.tune.good_state import SET_FILE
from orchestrator.tune.state_files import read_bytes, unpack

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
FS = pafs.LocalFileSystem()


def _trainable(config: dict) -> None:
    from ray import tune

    for epoch in range(3):
        time.sleep(0.3)
        tune.report({"epoch": epoch})


class _Checked(DiskGuard):
    """DiskGuard, checking each set as soon as it is kept."""

    sets: list[tuple[int, int]] = []  # (trials in the experiment state, trials generated)

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        path = posixpath.join(trials[0].storage.experiment_fs_path, SET_FILE) if trials else ""
        before = FS.get_file_info(path).mtime_ns if path else None
        super().on_step_end(iteration, trials, **info)
        if path and FS.get_file_info(path).mtime_ns != before:
            self.sets.append(_counts(unpack(read_bytes(FS, path))))


def _counts(files: dict[str, bytes]) -> tuple[int, int]:
    from ray import cloudpickle

    (state,) = [d for n, d in files.items() if n.startswith("experiment_state-")]
    (searcher,) = [d for n, d in files.items() if n.startswith("basic-variant-state-")]
    generated = sum(i.counter for i in cloudpickle.loads(searcher)["_iterators"])
    return len(json.loads(state)["trial_data"]), generated


def test_every_kept_set_is_one_snapshot_with_its_searcher(local_ray, tmp_path, monkeypatch):
    import ray.cloudpickle
    from ray import tune

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "0")  # a snapshot at every step
    tuner = tune.Tuner(
        _trainable,
        param_space={"x": tune.grid_search(list(range(6)))},
        tune_config=tune.TuneConfig(max_concurrent_trials=2),
        run_config=tune.RunConfig(
            name="exp", storage_path=str(tmp_path), verbose=0, callbacks=[_Checked(0.0)]
        ),
    )
    tuner.fit()

    assert len({listed for listed, _ in _Checked.sets}) >= 2, _Checked.sets  # kept as they grew
    assert all(listed == generated for listed, generated in _Checked.sets), _Checked.sets

"""The Tune trainable: config resolution and identity; a real local Ray trial killed and resumed."""

from __future__ import annotations

import math

import pytest
import torch

from trainables.config import TrialConfig
from trainables.identity import trial_config, trial_key
from trainables.loop import TrialRunner
from trainables.records import RECORD_KEYS
from trainables.tune_trainable import train_fn


def _trial(data_dir: str) -> TrialConfig:
    return TrialConfig.from_dict(
        {
            "dataset": {"data_dir": data_dir, "num_samples": 1000},
            "model": {"name": "cnn1d", "width": 8},
            "train": {"epochs": 5, "batch_size": 64, "lr": 3e-3},
            "pruning": {
                "method": "schedule",
                "target": "random",
                "period": 1,
                "layers": [
                    {"name": "conv3", "final_fraction": 0.5, "start_epoch": 1, "end_epoch": 4}
                ],
            },
            "seed": 11,
        }
    )


def test_repeater_seed(tmp_path):
    cfg = _trial(str(tmp_path))
    config = {
        "trial": cfg.to_dict(),
        "checkpoint_frequency": 1,
        "seeds": [4, 9],
        "__trial_index__": 1,
    }
    resolved = trial_config(config)
    assert resolved.seed == 9 and resolved.model == cfg.model
    assert trial_key(resolved) != trial_key(cfg)
    assert trial_config({"trial": cfg.to_dict(), "checkpoint_frequency": 1}) == cfg
    with pytest.raises(ValueError, match="__trial_index__"):
        trial_config({**config, "__trial_index__": 2})


def _numbers(record: dict) -> dict:
    skip = {
        "epoch_time_s",
        "time_this_iter_s",
        "time_total_s",
        "timestamp",
        "time_since_restore",
        "iterations_since_restore",
        "training_iteration",
        "trial_id",
        "date",
        "pid",
        "hostname",
        "node_ip",
        "done",
        "checkpoint_dir_name",
        "should_checkpoint",
        "experiment_tag",
    }
    return {k: v for k, v in record.items() if k not in skip and not k.startswith("config")}


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_killed_worker_resumes_from_checkpoint_with_identical_numbers(local_ray, tmp_path):
    from ray import tune

    cfg = _trial(str(tmp_path / "data"))
    key = trial_key(cfg)
    armed = local_ray / f"{key}.epoch3"
    armed.touch()  # the first of the two identical trials to finish epoch 3 SIGKILLs itself
    tuner = tune.Tuner(
        train_fn,
        param_space={"trial": cfg.to_dict(), "checkpoint_frequency": 2},
        tune_config=tune.TuneConfig(num_samples=2),
        run_config=tune.RunConfig(
            name="fault",
            storage_path=str(tmp_path / "storage"),
            failure_config=tune.FailureConfig(max_failures=2),
            verbose=0,
        ),
    )
    results = tuner.fit()
    assert not armed.exists() and len(list(local_ray.glob(f"{key}.epoch3.fired-*"))) == 1
    assert results.num_errors == 0 and len(results) == 2
    finals = [r.metrics for r in results]
    assert all(m["status"] == "done" and m["epoch"] == 4 for m in finals)
    assert all(set(RECORD_KEYS) <= set(m) for m in finals)  # the record, nothing of ours more
    assert not {"trial_key", "baseline_key", "is_baseline"} & set(finals[0])
    # Undisturbed and killed-then-resumed trials end with the same numbers.
    assert _numbers(finals[0]) == _numbers(finals[1])
    # The killed trial reported epoch 2 twice: it resumed from the epoch-1 checkpoint, not epoch 0.
    epochs = sorted(tuple(r.metrics_dataframe["epoch"]) for r in results)
    assert epochs == [(0, 1, 2, 2, 3, 4), (0, 1, 2, 3, 4)]
    for r in results:  # rows of a re-run epoch are identical to the first ones
        df = r.metrics_dataframe
        twice = df[df["epoch"] == 2]
        assert twice["test_acc"].nunique() == 1 and twice["train_loss"].nunique() == 1
    # ... and the same as the Ray-free loop in this process (1 thread, as Ray assigned 1 CPU).
    local = list(TrialRunner(cfg, device="cpu", num_threads=1).run())[-1]
    for k, v in local.items():
        if k in ("epoch_time_s", "units_removed"):
            continue
        got = finals[0][k]
        assert got == v or (isinstance(v, float) and math.isnan(v) and math.isnan(got)), k
    torch.set_num_threads(1)

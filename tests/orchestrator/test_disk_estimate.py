"""The checkpoint size the disk estimate assumes, against real checkpoints of finished trials.

Each trial runs to its end without Ray (:class:`trainables.loop.TrialRunner`) and its final
checkpoint is written as the trainable writes it (:func:`trainables.state.save_state`); the files'
allocated size must match :func:`orchestrator.cli.disk_estimate.checkpoint_bytes` within 15%.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from orchestrator.cli.disk_estimate import checkpoint_bytes
from trainables.config import TrialConfig
from trainables.loop import TrialRunner
from trainables.state import save_state

torch.set_num_threads(1)
SCHEDULE = {"method": "schedule", "target": "random", "period": 2}
CASES = {
    "mlp adam, weight masks": (
        {"name": "mlp"},
        {"optimizer": "adam", "epochs": 4},
        {**SCHEDULE, "granularity": "weight", "score": "magnitude",
         "layers": [{"name": "fc1", "final_fraction": 0.5, "start_epoch": 1, "end_epoch": 3}]},
        False,
    ),
    "cnn1d sgd momentum, filter masks, per-example losses": (
        {"name": "cnn1d", "width": 16},
        {"optimizer": "sgd", "momentum": 0.9, "epochs": 3},
        {**SCHEDULE,
         "layers": [{"name": "conv2", "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 2}]},
        True,
    ),
    "mlp IMP with weight rewinding": (
        {"name": "mlp"},
        {"optimizer": "adam", "epochs": 2},
        {"method": "imp", "imp": {"rounds": 2, "rewind": "weight", "rewind_epoch": 1}},
        False,
    ),
}  # fmt: skip


def _allocated(directory: Path) -> int:
    return sum(os.lstat(p).st_blocks * 512 for p in directory.rglob("*") if p.is_file())


@pytest.mark.parametrize("case", list(CASES))
def test_checkpoint_size_matches_a_real_final_checkpoint(case, tmp_path):
    model, train, pruning, per_example = CASES[case]
    cfg = TrialConfig.from_dict(
        {
            "dataset": {"data_dir": str(tmp_path / "d"), "num_samples": 1000},
            "model": model,
            "train": {"batch_size": 100, **train},
            "pruning": pruning,
            "per_example_loss": per_example,
        }
    )
    runner = TrialRunner(cfg, device="cpu", num_threads=1)
    for _ in runner.run():
        pass
    save_state(runner, tmp_path / "ckpt")
    measured, estimated = _allocated(tmp_path / "ckpt"), checkpoint_bytes(cfg)
    assert abs(estimated / measured - 1) <= 0.15, (measured, estimated)

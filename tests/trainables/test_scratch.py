"""Scratch pruning (``pruning.scratch``): everything pruned at initialisation, epoch 0 untrained.

Reference: bbartoldson/GeneralizationStabilityTradeoff, ``experiments.py::main`` with
``scratch_prune`` (cfgs F2_VGG_5 and TF1_3, whose layers all have start = end = 0): on the first
epoch it skips ``train(...)`` (logging 0 for the training accuracy and loss), evaluates, prunes,
and skips ``lr_scheduler.step()``; every later epoch trains and steps. So the run trains
``epochs - 1`` epochs and each MultiStepLR milestone takes effect one epoch late.
"""

from __future__ import annotations

import math

import pytest
import torch

from trainables.config import TrialConfig
from trainables.cross_rules import validate
from trainables.errors import UserError
from trainables.loop import TrialRunner

torch.set_num_threads(1)
LAYERS = [
    {"name": "conv2", "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 0},
    {"name": "conv3", "final_fraction": 0.75, "start_epoch": 0, "end_epoch": 0},
]
LR, MILESTONES, GAMMA, EPOCHS = 4e-3, (1, 3), 0.5, 5


def _cfg(data_dir: str, scratch: bool = True, **pruning) -> TrialConfig:
    return TrialConfig.from_dict(
        {
            "dataset": {"data_dir": data_dir, "num_samples": 1000},
            "model": {"name": "cnn1d", "width": 8},
            "train": {
                "epochs": EPOCHS,
                "batch_size": 64,
                "lr": LR,
                "milestones": list(MILESTONES),
                "gamma": GAMMA,
            },
            "pruning": {"method": "schedule", "scratch": scratch, "layers": LAYERS, **pruning},
        }
    )


def _official_lrs(scratch: bool) -> list[float]:
    """The LR of each epoch of ``experiments.py::main``: MultiStepLR after s steps gives
    ``lr * gamma ** #(milestones <= s)``, and the scratch epoch (the first) takes no step."""
    lrs, steps = [], 0
    for epoch in range(EPOCHS):
        lrs.append(LR * GAMMA ** sum(m <= steps for m in MILESTONES))
        if not (scratch and epoch == 0):
            steps += 1
    return lrs


def test_epoch_zero_prunes_the_untrained_model_and_takes_no_lr_step(data_dir):
    runner = TrialRunner(_cfg(data_dir), device="cpu", num_threads=1)
    init = {k: v.clone() for k, v in runner.model.state_dict().items()}
    first = runner.run_epoch()
    # no training: every unpruned parameter and every BN statistic is still the initial one
    for name, value in runner.model.state_dict().items():
        kept = value != 0 if value.is_floating_point() else torch.ones_like(value, dtype=torch.bool)
        assert torch.equal(value[kept], init[name][kept]), name
    assert first["train_loss"] is None and first["train_acc"] is None  # the official logs 0
    assert first["is_event"] and first["acc_before"] is not None
    assert {u["layer"]: u["units"] for u in first["units_removed"]} == {"conv2": 4, "conv3": 6}
    records = [first, *runner.run()]
    assert [r["lr"] for r in records] == pytest.approx(_official_lrs(scratch=True))
    assert all(math.isfinite(r["train_loss"]) for r in records[1:])
    assert [r["is_event"] for r in records] == [True] + [False] * (EPOCHS - 1)
    assert len({r["sparsity"] for r in records}) == 1 and records[0]["sparsity"] > 0


def test_the_same_schedule_without_scratch_trains_epoch_zero(data_dir):
    records = list(TrialRunner(_cfg(data_dir, scratch=False), device="cpu", num_threads=1).run())
    assert [r["lr"] for r in records] == pytest.approx(_official_lrs(scratch=False))
    assert _official_lrs(scratch=False) != _official_lrs(scratch=True)
    assert math.isfinite(records[0]["train_loss"]) and records[0]["is_event"]


@pytest.mark.parametrize(
    ("pruning", "message"),
    [
        (
            {"layers": [{**LAYERS[0], "start_epoch": 2, "end_epoch": 3}]},
            "pruning.layers[0].start_epoch: must be 0 when pruning.scratch is true, got 2\n"
            "pruning.layers[0].end_epoch: must be 0 when pruning.scratch is true, got 3",
        ),
        (
            {"layers": []},
            "pruning.layers: must list the layers (start_epoch 0, end_epoch 0) when "
            "pruning.scratch is true, got []",
        ),
        ({"method": "imp"}, "pruning.scratch: true needs pruning.method schedule, got imp"),
        (
            {"perturbation": {"mode": "zeroing", "steps": 3}},
            "pruning.scratch: true needs pruning.perturbation.mode none, got zeroing",
        ),
    ],
)
def test_scratch_rules(data_dir, pruning, message):
    cfg = _cfg(data_dir, **pruning)
    with pytest.raises(UserError) as err:
        validate(cfg)
    lines = str(err.value).splitlines()
    assert all(line in lines for line in message.splitlines()), lines

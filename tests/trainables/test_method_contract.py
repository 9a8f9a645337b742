"""The contract every pruning method must meet (as Optuna's sampler test suite does for samplers).

For each method (none, schedule with weight scores, a tracked score and scratch pruning, re-entry /
noise, conv-only Prune_L, IMP and its controls), on a real trial:

- every record holds exactly the keys of ``trainables.records.RECORD``, epochs in order, the
  last one done;
- masks only shrink, epoch after epoch;
- a checkpoint taken in the middle of the method's own state (inside perturbation windows of two
  layers, inside an IMP round, between two updates of a tracked score, after scratch pruning's
  untrained epoch) restores into a fresh process state and continues bit-identically: the
  same records and the same final model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from tiny_images import tiny_cifar10

from trainables.config import TrialConfig
from trainables.loop import TrialRunner
from trainables.records import RECORD_KEYS
from trainables.state import save_state

torch.set_num_threads(1)
LAYERS = [
    {"name": "conv2", "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 2},
    {"name": "conv3", "final_fraction": 0.75, "start_epoch": 1, "end_epoch": 3},
]


@dataclass(frozen=True)
class Case:
    pruning: dict
    checkpoint_after: int  # epochs run before the checkpoint
    mid_state: Callable[[TrialRunner], bool] = lambda runner: True  # the checkpoint is "mid"
    trial: dict | None = None  # sections replacing the default trial's (dataset, model, train)


# ResNet-18 (width 4) on 8x8 stand-in CIFAR-10 images: 12 training steps per epoch, so after 2
# epochs each tracked block has counted 24 passes and updated its means twice (passes 10, 20).
RESNET = {
    "dataset": {"name": "cifar10", "label_noise_fraction": 0.1},
    "model": {"name": "resnet18", "width": 4},
    "train": {"epochs": 4, "batch_size": 16, "lr": 3e-3, "milestones": [2], "gamma": 0.5},
}
RESNET_LAYERS = [
    {"name": "layer4.0.conv2", "final_fraction": 0.5, "start_epoch": 1, "end_epoch": 3},
    {"name": "layer4.1.conv1", "final_fraction": 0.75, "start_epoch": 2, "end_epoch": 3},
]


def _between_updates(runner: TrialRunner) -> bool:
    tracker = runner.method.tracker
    return all(n % 10 for n in tracker.counters().values()) and all(
        bool(tracker.scores(n).any()) for n in tracker.layer_names()
    )


CASES = {
    "none": Case({"method": "none"}, 2),
    "schedule-filter-random": Case({"method": "schedule", "target": "random", "layers": LAYERS}, 2),
    "schedule-activations": Case(
        {"method": "schedule", "score": "activations", "layers": RESNET_LAYERS},
        2,
        _between_updates,
        RESNET,
    ),
    # epoch 0 trains nothing and takes no LR step: the scheduler's lag is in the checkpoint
    "schedule-scratch": Case(
        {
            "method": "schedule",
            "scratch": True,
            "layers": [{**layer, "start_epoch": 0, "end_epoch": 0} for layer in LAYERS],
        },
        1,
        lambda runner: runner.scheduler.last_epoch == 0,
    ),
    "schedule-weight-global": Case(
        {
            "method": "schedule",
            "granularity": "weight",
            "score": "magnitude",
            "scope": "global",
            "layers": LAYERS,
        },
        2,
    ),
    # 13 training steps per epoch: a 20-step window opened at epoch 1 is still open after it
    "perturbation-gaussian-cumulative-restore": Case(
        {
            "method": "schedule",
            "target": "largest",
            "layers": LAYERS,
            "perturbation": {
                "mode": "gaussian",
                "variant": "cumulative",
                "steps": 20,
                "restore": True,
            },
        },
        2,
        lambda runner: runner.method.perturbation.open_layers() != [],
    ),
    "perturbation-zeroing-iter": Case(
        {
            "method": "schedule",
            "layers": LAYERS,
            "perturbation": {"mode": "zeroing", "steps": 20},
        },
        2,
        lambda runner: runner.method.perturbation.open_layers() != [],
    ),
    # official passes (E = 1, N = 23): conv2's and conv3's windows of epoch 1 are both open
    "perturbation-gaussian-official-two-windows": Case(
        {
            "method": "schedule",
            "layers": LAYERS,
            "perturbation": {"mode": "gaussian", "steps": 20, "eval_passes": "official"},
        },
        2,
        lambda runner: runner.method.perturbation.open_layers() == ["conv2", "conv3"],
    ),
    "perturbation-conv-mask": Case(
        {"method": "schedule", "layers": LAYERS, "perturbation": {"mode": "conv_mask"}}, 2
    ),
    "imp-weight-rewinding": Case(
        {
            "method": "imp",
            "granularity": "weight",
            "imp": {"rounds": 2, "rewind": "weight", "rewind_epoch": 1},
        },
        5,
        lambda runner: runner.method.plan.locate(5)[1] > 1,  # epoch 5 is inside round 1
    ),
    "imp-sparse-from-start": Case(
        {
            "method": "imp",
            "granularity": "weight",
            "imp": {"rounds": 1, "control": "sparse_from_start"},
        },
        9,
        lambda runner: runner.method.plan.locate(9)[0] == 2,  # inside the control phase
    ),
    "imp-extended-dense": Case(
        {
            "method": "imp",
            "granularity": "weight",
            "imp": {"rounds": 2, "control": "extended_dense"},
        },
        5,
    ),
}


def _cfg(data_dir: str, pruning: dict, trial: dict | None = None) -> TrialConfig:
    return TrialConfig.from_dict(
        {
            "dataset": {"data_dir": data_dir, "num_samples": 1000, "label_noise_fraction": 0.1},
            "model": {"name": "cnn1d", "width": 8},
            "train": {"epochs": 4, "batch_size": 64, "lr": 3e-3, "milestones": [2], "gamma": 0.5},
            **(trial or {}),
            "pruning": pruning,
            "seed": 3,
            "per_example_loss": True,
        }
    )


def _strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in records]


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, data_dir):
    """(case, config, the uninterrupted run's records, masks after each epoch, final state)."""
    spec = CASES[request.param]
    cfg = _cfg(data_dir, spec.pruning, spec.trial)
    with tiny_cifar10():  # the image trials' data, loaded when a runner is built
        runner = TrialRunner(cfg, device="cpu", num_threads=1)
        records, masks = [], []
        while not runner.finished:
            records.append(runner.run_epoch())
            masks.append({n: m.clone() for n, m in runner.masks.masks.items()})
        yield spec, cfg, records, masks, runner.model.state_dict()


def test_records_are_complete_and_in_order(case):
    _, _, records, _, _ = case
    assert all(set(r) == set(RECORD_KEYS) for r in records)
    assert [r["epoch"] for r in records] == list(range(len(records)))
    assert [r["status"] for r in records] == ["running"] * (len(records) - 1) + ["done"]
    assert all(r["pruning_rate"] is not None and r["num_events"] is not None for r in records)


def test_masks_only_shrink(case):
    _, _, _, masks, _ = case
    for before, after in zip(masks, masks[1:], strict=False):
        for name in before:
            assert not (after[name] & ~before[name]).any(), name


def test_resume_mid_state_is_bit_identical(case, tmp_path):
    spec, cfg, records, _, final_state = case
    first = TrialRunner(cfg, device="cpu", num_threads=1)
    head = [first.run_epoch() for _ in range(spec.checkpoint_after)]
    assert spec.mid_state(first), "the checkpoint must fall inside the method's own state"
    save_state(first, tmp_path)
    del first
    torch.manual_seed(4321)  # the restore must not depend on the global RNG of the process
    resumed = TrialRunner.from_checkpoint(str(tmp_path), device="cpu", num_threads=1)
    tail = list(resumed.run())
    assert _strip(head + tail) == _strip(records)
    for k, v in final_state.items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k

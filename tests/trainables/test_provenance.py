"""Each trial records where it ran and what it trained, on every record (real MNIST-1D trials)."""

from __future__ import annotations

import pytest
import torch

from trainables import provenance
from trainables.config import TrialConfig
from trainables.loop import TrialRunner
from trainables.records import FIELDS, PER_TRIAL_KEYS
from trainables.state import save_state

FACTS = ("device", "torch_version", "threads", "n_params", "n_prunable")
WIDTH = 8
LENGTH, CLASSES = 40, 10  # MNIST-1D: one channel of 40 samples, 10 classes


def _cfg(data_dir: str, model: str, pruning: dict) -> TrialConfig:
    return TrialConfig.from_dict(
        {
            "dataset": {"data_dir": data_dir, "num_samples": 1000},
            "model": {"name": model, "width": WIDTH},
            "train": {"epochs": 2, "batch_size": 128, "lr": 3e-3},
            "pruning": pruning,
        }
    )


def _cnn1d_params(w: int) -> int:
    """cnn1d: three conv(k, stride 2, padding 1) + BN stages of w channels, then fc on w x 5."""
    convs = (1 * w * 5 + w) + 2 * (w * w * 3 + w)
    bns = 3 * 2 * w
    length = LENGTH
    for k in (5, 3, 3):
        length = (length + 2 - k) // 2 + 1
    return convs + bns + (w * length * CLASSES + CLASSES)


def _mlp_params(w: int) -> int:
    """mlp: 40 -> w -> w -> 10, each Linear with a bias."""
    return (LENGTH * w + w) + (w * w + w) + (w * CLASSES + CLASSES)


SCHEDULE = {
    "method": "schedule",
    "layers": [{"name": "conv3", "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 1}],
}
MLP_LAYERS = [{"name": "fc2", "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 1}]
CASES = {
    # (model, pruning, n_prunable written out from the model)
    "filter": ("cnn1d", SCHEDULE, 3 * WIDTH),  # conv1..conv3 output channels
    "unpruned": ("cnn1d", {"method": "none"}, 3 * WIDTH),  # at the default (filter) granularity
    "mlp-filter": ("mlp", {"method": "schedule", "layers": MLP_LAYERS}, 2 * WIDTH),  # fc1, fc2 rows
    "weight": (
        "mlp",
        {
            "method": "schedule",
            "granularity": "weight",
            "score": "magnitude",
            "scope": "global",
            "layers": MLP_LAYERS,
        },
        LENGTH * WIDTH + WIDTH * WIDTH,  # fc1 and fc2 weights; the output layer fc is not prunable
    ),
    "imp": (
        "mlp",
        {"method": "imp", "imp": {"rounds": 1}},
        LENGTH * WIDTH + WIDTH * WIDTH,  # IMP: the weights of the prunable tensors
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_record_says_where_the_trial_ran_and_how_big_it_was(case, data_dir):
    model, pruning, n_prunable = CASES[case]
    runner = TrialRunner(_cfg(data_dir, model, pruning), device="cpu", num_threads=1)
    records = list(runner.run())
    params = _cnn1d_params(WIDTH) if model == "cnn1d" else _mlp_params(WIDTH)
    assert params == sum(p.numel() for p in runner.model.parameters())
    expected = {
        "device": "cpu",
        "torch_version": str(torch.__version__),
        "threads": 1,
        "n_params": params,
        "n_prunable": n_prunable,
    }
    assert len(records) >= 2
    for record in records:
        assert {k: record[k] for k in FACTS} == expected
        assert type(record["torch_version"]) is str  # not TorchVersion: checkpoints load it


def test_the_facts_are_the_per_trial_record_keys():
    assert set(FACTS) <= set(PER_TRIAL_KEYS)
    assert all(FIELDS[k].always and FIELDS[k].per_trial for k in FACTS)


def test_a_resumed_trial_reports_where_it_runs_now(data_dir, tmp_path):
    cfg = _cfg(data_dir, "cnn1d", SCHEDULE)
    runner = TrialRunner(cfg, device="cpu", num_threads=1)
    first = runner.run_epoch()
    save_state(runner, str(tmp_path))
    try:
        resumed = TrialRunner.from_checkpoint(str(tmp_path), device="cpu", num_threads=2)
        after = resumed.run_epoch()
    finally:
        torch.set_num_threads(1)
    assert (first["threads"], after["threads"]) == (1, 2)
    assert after["n_params"] == first["n_params"] and after["n_prunable"] == first["n_prunable"]


def test_a_diverged_epoch_still_says_where_it_ran(data_dir):
    cfg = _cfg(data_dir, "cnn1d", SCHEDULE)
    runner = TrialRunner(cfg, device="cpu", num_threads=1)
    with torch.no_grad():
        next(runner.model.parameters()).fill_(float("nan"))
    record = runner.run_epoch()
    assert record["status"] == "diverged"
    assert record["device"] == "cpu" and record["n_params"] == _cnn1d_params(WIDTH)


def test_a_gpu_is_named_by_its_model_name(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert provenance.device_label(torch.device("cuda", 0)) == "cuda:NVIDIA H200"
    assert provenance.device_label(torch.device("cpu")) == "cpu"

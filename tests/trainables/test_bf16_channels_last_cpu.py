"""``train.bf16`` and ``train.channels_last`` run on the CPU too, through the same loop code the GPU
runs (``torch.autocast`` on the trial's device; channels-last weights and batches).

Tolerances against the fp32, default-layout run of the same trial (README, "GPU readiness"):

- one training forward and backward on the same weights and batch: logits within 5% (bf16; it
  keeps 8 mantissa bits, about 4e-3 relative per op, over 20 layers) and 1e-4 (channels-last:
  other CPU kernels, other summation orders) of the largest fp32 logit; channels-last gradients
  within 1e-4 absolute;
- a 3-epoch trial with a pruning event every epoch: per epoch, training and test loss within 2%
  (bf16) / 0.2% (channels-last) relative, test accuracies within 4 of the 128 test examples, and
  the very same units removed at every event.

Exact under both, as in fp32: pruned units' weights stay 0 and their channels output exactly 0;
every training forward of a zeroing window sees exactly 0 from the window's channels; a trial
resumed from a checkpoint gives the uninterrupted run's records bit for bit.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import pytest
import torch
from tiny_images import tiny_cifar10

from trainables.config import TrialConfig
from trainables.loop import TrialRunner
from trainables.state import load_state, save_state

torch.set_num_threads(1)

MODES = {
    "bf16": {"bf16": True},
    "channels_last": {"channels_last": True},
    "both": {"bf16": True, "channels_last": True},
}
LOSS_RTOL = {"bf16": 2e-2, "channels_last": 2e-3, "both": 2e-2}
N_TRAIN, N_TEST, BATCH = 192, 64, 32
ACC_ATOL = 3 / N_TEST
LAYERS = ("layer2.0.conv1", "layer3.0.conv2")  # 8 and 16 units; the second feeds a shortcut


def _cfg(perturbation: dict | None = None, **train) -> TrialConfig:
    """resnet20 of width 4 on 8x8 CIFAR-shaped images; an event at epochs 0, 1 and 2."""
    layers = [
        {"name": name, "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 2} for name in LAYERS
    ]
    pruning = {"method": "schedule", "period": 1, "layers": layers}
    if perturbation:
        pruning["perturbation"] = perturbation
    return TrialConfig.from_dict(
        {
            "dataset": {"name": "cifar10"},
            "model": {"name": "resnet20", "width": 4},
            "train": {"epochs": 3, "batch_size": BATCH, "eval_batch_size": 64, "lr": 1e-3, **train},
            "pruning": pruning,
            "seed": 1,
        }
    )


def _runner(cfg: TrialConfig) -> TrialRunner:
    with tiny_cifar10(n_train=N_TRAIN, n_test=N_TEST):
        return TrialRunner(cfg, device="cpu", num_threads=1)


@dataclass
class Observed:
    """A whole trial, watched: its records; the conv outputs' dtypes by ``model.training``; whether
    each batch reached the first conv channels-last; the pruned channels that ever output a
    non-zero after their event (``(epoch, layer)``) or kept a non-zero weight."""

    records: list[dict]
    dtypes: set[tuple[bool, torch.dtype]] = field(default_factory=set)
    layouts: list[bool] = field(default_factory=list)
    violations: list[tuple[int, str]] = field(default_factory=list)


@functools.cache
def _observed(mode: str | None) -> Observed:
    runner = _runner(_cfg(**MODES.get(mode, {})))
    seen = Observed([])
    convs = [m for m in runner.model.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = runner.model.following_bn()
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in LAYERS}
    hooks = [
        convs[0].register_forward_pre_hook(
            lambda m, a: seen.layouts.append(a[0].is_contiguous(memory_format=torch.channels_last))
        ),
        runner.model.prunable_layers()[LAYERS[0]].register_forward_hook(
            lambda m, a, out: seen.dtypes.add((m.training, out.dtype))
        ),
        *(
            bns[n].register_forward_hook(lambda m, a, out, n=n: outputs[n].append(out.detach()))
            for n in LAYERS
        ),
    ]
    for record in runner.run():
        seen.records.append(record)
        for name in LAYERS:
            dead = ~runner.masks.alive(name)
            weight = runner.model.prunable_layers()[name].weight
            after_event = outputs[name][-N_TEST // 64 :]  # acc_after's batches
            if not dead.any() or (weight[dead] != 0).any():
                seen.violations.append((record["epoch"], name))
            if any((out[:, dead] != 0).any() for out in after_event):
                seen.violations.append((record["epoch"], name))
            outputs[name].clear()
    for hook in hooks:
        hook.remove()
    return seen


def _close(a: float, b: float, rtol: float) -> bool:
    return abs(a - b) <= rtol * abs(a)


# --- the paths really run on the CPU --------------------------------------------------------------


def test_bf16_autocasts_the_convolutions_of_training_and_evaluation():
    assert _observed(None).dtypes == {(True, torch.float32), (False, torch.float32)}
    assert _observed("bf16").dtypes == {(True, torch.bfloat16), (False, torch.bfloat16)}


def test_channels_last_puts_weights_and_batches_in_channels_last():
    runner = _runner(_cfg(channels_last=True))
    convs = [m for m in runner.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert not convs[1].weight.is_contiguous()  # 3x3 kernels with >1 channels: a real change
    batches = 3 * (N_TRAIN // BATCH + 2 * N_TEST // 64)  # training, acc_before, acc_after
    assert _observed("channels_last").layouts == [True] * batches
    assert _observed(None).layouts == [False] * batches


def test_one_step_matches_fp32_default_layout_within_tolerance():
    base = _runner(_cfg())
    x, y = base.data.x_train[:32], base.data.y_train[:32]
    reference = _logits_and_grads(base, x, y)
    scale = reference[0].abs().max()
    for mode, rtol in (("bf16", 5e-2), ("channels_last", 1e-4)):
        runner = _runner(_cfg(**MODES[mode]))
        runner.model.load_state_dict(base.model.state_dict())
        logits, grads = _logits_and_grads(runner, x, y)
        assert (logits - reference[0]).abs().max() <= rtol * scale, mode
        assert not torch.equal(logits, reference[0]), f"{mode} changed nothing"
        if mode == "channels_last":
            for name, g in grads.items():
                torch.testing.assert_close(g, reference[1][name], rtol=0, atol=rtol)


def _logits_and_grads(runner: TrialRunner, x, y) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training-mode forward and backward of the loop (its autocast and layout)."""
    model = runner.model
    model.train()
    model.zero_grad(set_to_none=True)
    if runner.cfg.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with runner._autocast():
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    grads = {n: p.grad.detach().contiguous() for n, p in model.named_parameters()}
    return logits.detach().float(), grads


# --- whole trials ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", sorted(MODES))
def test_trial_trains_and_stays_within_tolerance_of_fp32(mode):
    reference, records = _observed(None).records, _observed(mode).records
    assert [r["status"] for r in records] == ["running", "running", "done"]
    assert records[-1]["train_loss"] < 0.9 * records[0]["train_loss"]  # it trains
    for a, b in zip(reference, records, strict=True):
        for key in ("train_loss", "test_loss"):
            assert _close(a[key], b[key], LOSS_RTOL[mode]), (mode, a["epoch"], key, a[key], b[key])
        for key in ("train_acc", "acc_before", "acc_after", "test_acc"):
            assert abs(a[key] - b[key]) <= ACC_ATOL, (mode, a["epoch"], key, a[key], b[key])
        assert a["units_removed"] == b["units_removed"] and a["units_removed_total"] > 0
        assert a["sparsity"] == b["sparsity"]
    assert any(a["train_loss"] != b["train_loss"] for a, b in zip(reference, records, strict=True))


@pytest.mark.parametrize("mode", [None, *sorted(MODES)])
def test_pruned_units_stay_exactly_zero(mode):
    assert _observed(mode).violations == []


@pytest.mark.parametrize("mode", [None, "bf16", "channels_last"])
def test_every_forward_of_a_zeroing_window_sees_exact_zeros(mode):
    window = {"mode": "zeroing", "steps": 4, "restore": True}
    runner = _runner(_cfg(window, **(MODES[mode] if mode else {})))
    perturbation = runner.method.perturbation
    bn = runner.model.following_bn()[LAYERS[0]]
    seen = []  # per training forward with the window open: its channels' outputs all exactly 0

    def check(module, args, out):
        units = perturbation.units.get(LAYERS[0])
        if module.training and LAYERS[0] in perturbation.open_layers():
            seen.append(bool((out[:, units.to(out.device)] == 0).all()))

    hook = bn.register_forward_hook(check)
    records = list(runner.run())
    hook.remove()
    assert seen == [True] * 4 * 2  # the windows of the events at epochs 0 and 1, 4 steps each
    closed = [w for r in records for w in (r["windows_closed"] or ()) if w["layer"] == LAYERS[0]]
    assert [w["closed_by"] for w in closed] == ["duration", "duration", "trial_end"]
    assert records[-1]["sparsity"] == 0  # units re-enter: nothing is removed


@pytest.mark.parametrize("mode", sorted(MODES))
def test_checkpoint_written_under_the_mode_resumes_bit_identically(mode, tmp_path):
    cfg = _cfg(**MODES[mode])
    first = _runner(cfg)
    first.run_epoch()
    save_state(first, tmp_path)
    with tiny_cifar10(n_train=N_TRAIN, n_test=N_TEST):
        resumed = TrialRunner.from_checkpoint(str(tmp_path), device="cpu", num_threads=1)
    assert load_state(tmp_path)["trial"] == cfg.to_dict()
    list(resumed.run())
    full = _observed(mode).records
    assert len(resumed.loop.records) == len(full)
    for a, b in zip(full, resumed.loop.records, strict=True):
        assert _same(a, b), (mode, a["epoch"])


def _same(a: dict, b: dict) -> bool:
    """Equal in every key but epoch_time_s, NaN-aware, exact floats."""
    for k in (set(a) | set(b)) - {"epoch_time_s"}:
        x, y = a.get(k), b.get(k)
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        if x != y or type(x) is not type(y):
            return False
    return True

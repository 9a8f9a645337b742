"""``perturbation.mode: conv_mask``: Fig. 5 / D2's "Prune_L" reference (official cfg F5_0).

Official rule (github.com/bbartoldson/GeneralizationStabilityTradeoff, ``models.py``): with a
noise setting, ``_make_conv_prunable`` keeps ``_prunable_conv_forward`` (``weight * mask``, the conv
bias passed unmasked) but skips masking the next BatchNorm ("only mask the next BN layer if a
noise experiment is not being run"), and ``_prune_layer`` zeroes the weights only when ``noise is
None``. So a removed channel's conv output is its bias, which the BN normalises and shifts by its
(still trained) beta, instead of the exact 0 of ordinary pruning.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from trainables.config import TrialConfig
from trainables.errors import UserError
from trainables.loop import TrialRunner

torch.set_num_threads(1)


def _cfg(data_dir: str, mode: str) -> TrialConfig:
    return TrialConfig.from_dict(
        {
            "dataset": {"data_dir": data_dir, "num_samples": 1000},
            "model": {"name": "cnn1d", "width": 8},
            "train": {"epochs": 3, "batch_size": 64, "lr": 3e-3},
            "pruning": {
                "method": "schedule",
                "target": "largest",
                "layers": [
                    {"name": "conv2", "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 0}
                ],
                "perturbation": {"mode": mode},
            },
            "seed": 3,
        }
    )


def _conv2_outputs(runner: TrialRunner) -> tuple[torch.Tensor, torch.Tensor]:
    """conv2's output and its BN's output [N, C, L] on a test batch, in train-mode BN."""
    model = runner.model
    seen = {}
    hooks = [
        model.convs[1].register_forward_hook(lambda m, i, o: seen.__setitem__("conv", o)),
        model.bns[1].register_forward_hook(lambda m, i, o: seen.__setitem__("bn", o)),
    ]
    model.train()
    with torch.no_grad():
        model(runner.data.x_test[:64])
    for h in hooks:
        h.remove()
    return seen["conv"], seen["bn"]


def test_a_removed_channel_emits_its_bias_through_an_unmasked_bn(data_dir):
    runner = TrialRunner(_cfg(data_dir, "conv_mask"), device="cpu", num_threads=1)
    first = runner.run_epoch()
    dead = ~runner.masks.alive("conv2")
    assert first["units_removed"] == [{"layer": "conv2", "units": 4}] and int(dead.sum()) == 4
    conv2, bn2 = runner.model.convs[1], runner.model.bns[1]
    beta0 = bn2.bias.detach()[dead].clone()
    bias0 = conv2.bias.detach()[dead].clone()
    runner.run_epoch()
    assert (conv2.weight[dead] == 0).all()  # the masked conv forward
    # bias and BN keep training: nothing but the weight rows is masked
    assert (conv2.bias.detach()[dead] != bias0).all() and (bn2.bias.detach()[dead] != beta0).all()
    conv_out, bn_out = _conv2_outputs(runner)
    assert torch.equal(
        conv_out[:, dead], conv2.bias[dead].view(1, -1, 1).expand_as(conv_out[:, dead])
    )
    # a constant channel normalises to 0 in training mode: the BN emits beta
    beta = bn2.bias.detach()[dead].view(1, -1, 1).expand_as(bn_out[:, dead])
    torch.testing.assert_close(bn_out[:, dead], beta, atol=1e-4, rtol=0)
    assert (bn2.bias.detach()[dead] > 0).any()  # so ReLU lets it through: not a dead channel
    assert runner.masks.pruned_weights == 4 * conv2.weight[0].numel()  # counted as pruned


def test_ordinary_pruning_outputs_exact_zero_instead(data_dir):
    runner = TrialRunner(_cfg(data_dir, "none"), device="cpu", num_threads=1)
    runner.run_epoch()
    runner.run_epoch()
    dead = ~runner.masks.alive("conv2")
    _, bn_out = _conv2_outputs(runner)
    assert (bn_out[:, dead] == 0).all()


def test_conv_mask_needs_filter_granularity(data_dir):
    cfg = _cfg(data_dir, "conv_mask")
    cfg = dataclasses.replace(cfg, pruning=dataclasses.replace(cfg.pruning, granularity="weight"))
    with pytest.raises(UserError, match="pruning.perturbation.mode: conv_mask needs"):
        TrialRunner(cfg, device="cpu")

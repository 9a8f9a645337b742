"""Fig. 4's presets against Bartoldson et al.'s official code, written out here from its
definitions (bbartoldson/GeneralizationStabilityTradeoff, commit 6d100d5):

- the networks: ``architectures_and_layers/resnet2056_arch.py`` (Idelbayev's CIFAR ResNet-20/56,
  option-A shortcuts: ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))``) and
  ``resnet18_arch.py`` (kuangliu's ResNet-18, 1x1 conv + BN shortcuts);
- a pruned network's forward: ``models.py::_prunable_conv_forward`` (the conv weight times the
  filter mask), ``custom_batch_norm.py::_BatchNorm._prunable_batch_forward`` (gamma and beta times
  the same mask) and ``_mask_shortcuts_forward_C`` (the shortcut added to unpruned channels only);
- an event: ``models.py::_prune_layer`` with ``scoring='L1'``, ``target_large=False``, called by
  ``_prune`` for every layer whose ``utils.py::pruning_scheduler`` range holds the epoch.

Our side runs the preset's trial: its layer schedule, through the schedule plan and the MaskSet.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from official_noise import prune_layer_k
from torch import nn

from search_spaces.expand import expand
from search_spaces.spec import load_spec
from trainables.models import build_model
from trainables.pruning.masks import MaskSet
from trainables.pruning.schedule import plan_schedule

torch.set_num_threads(1)

# config.py F4_*: prune_frac .1, prune_start_epoch 40, prune_end_epoch 100 for every layer.
F4_FRACTION, F4_START, F4_END = 0.1, 40, 100


def _masked_conv(conv: nn.Conv2d, mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    weight = conv.weight * mask[:, None, None, None]
    return F.conv2d(x, weight, None, conv.stride, conv.padding)


def _masked_bn(bn: nn.BatchNorm2d, mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(
        x, bn.running_mean, bn.running_var, bn.weight * mask, bn.bias * mask,
        bn.training, bn.momentum, bn.eps,
    )  # fmt: skip


class _RefBlock(nn.Module):
    """The official BasicBlock with every block conv prunable (F4 prunes them all). Submodules are
    named as ours so that our state dict loads (the official: ``shortcut.0`` / ``shortcut.1``)."""

    def __init__(self, in_planes: int, planes: int, stride: int, option: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.mask1, self.mask2 = torch.ones(planes), torch.ones(planes)  # the layers' .mask
        self.planes, self.option = planes, option
        self.projection = stride != 1 or in_planes != planes
        if self.projection and option == "B":
            self.shortcut_conv = nn.Conv2d(in_planes, planes, 1, stride, bias=False)
            self.shortcut_bn = nn.BatchNorm2d(planes)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if not self.projection:
            return x
        if self.option == "A":
            return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.planes // 4, self.planes // 4))
        return self.shortcut_bn(self.shortcut_conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(_masked_bn(self.bn1, self.mask1, _masked_conv(self.conv1, self.mask1, x)))
        out = _masked_bn(self.bn2, self.mask2, _masked_conv(self.conv2, self.mask2, out))
        keep = self.mask2.bool()
        out[:, keep] += self.shortcut(x)[:, keep]
        return F.relu(out)


class _RefResNet(nn.Module):
    """3x3 stem conv-BN-ReLU, stages of blocks (stride 2 first in every stage but the first),
    ``avg_pool2d`` over the final 8x8 (Idelbayev) or 4x4 (kuangliu) map, one Linear (``fc``;
    the official ``linear``)."""

    def __init__(self, widths: tuple[int, ...], blocks: int, option: str):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes = widths[0]
        for s, planes in enumerate(widths, start=1):
            stage = []
            for b in range(blocks):
                stage.append(_RefBlock(in_planes, planes, 2 if s > 1 and b == 0 else 1, option))
                in_planes = planes
            self.add_module(f"layer{s}", nn.Sequential(*stage))
        self.stages = len(widths)
        self.fc = nn.Linear(in_planes, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for s in range(1, self.stages + 1):
            out = getattr(self, f"layer{s}")(out)
        return self.fc(F.avg_pool2d(out, out.size(3)).flatten(1))


def _reference(model: str) -> _RefResNet:
    if model == "resnet18":  # resnet18_arch.ResNet18: [2, 2, 2, 2] blocks of 64..512
        return _RefResNet((64, 128, 256, 512), 2, "B")
    depth = int(model.removeprefix("resnet"))  # resnet2056_arch: [n, n, n] blocks of 16..64
    return _RefResNet((16, 32, 64), (depth - 2) // 6, "A")


@torch.no_grad()
def _official_event(conv: nn.Conv2d, mask: torch.Tensor, iteration: int, n_iter: int) -> None:
    """``_prune_layer``: k from the linear rule (:func:`official_noise.prune_layer_k`), then the k
    alive filters of smallest L1 norm, cut at ``torch.topk``'s k-th value (random weights: no
    ties); their weights zeroed."""
    pruned = int((~mask.bool()).sum())
    k = prune_layer_k(conv.weight.shape[0], F4_FRACTION, iteration, n_iter, pruned)
    alive = mask.bool()
    target = conv.weight[alive].view(int(alive.sum()), -1).norm(p=1, dim=1)
    if k > 0:
        cutoff = float(torch.topk(target, k, largest=False)[0][-1])
        meets_cutoff = target > cutoff
        assert int((~meets_cutoff).sum()) == k
        mask[alive] = meets_cutoff.float()
        conv.weight[~mask.bool()] *= 0


@torch.no_grad()
def _update(ours: nn.Module, ref: nn.Module, masks: MaskSet, generator: torch.Generator) -> None:
    """The same random step on both (training between events); ours re-zeroes its pruned weights,
    the official masked weights drift behind their masks."""
    theirs = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        step = 0.02 * p.abs().mean() * torch.randn(p.shape, generator=generator)
        p.add_(step)
        theirs[name].add_(step)
    masks.apply_()


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() <= 1e-5 * a.abs().max())


@pytest.mark.parametrize(
    ("preset", "model", "period"),
    [
        ("bartoldson2020-resnet-sgd", "resnet20", 30),  # F4_20_0
        ("bartoldson2020-resnet-sgd", "resnet56", 60),  # F4_56_1
        ("bartoldson2020-resnet18-sgd", "resnet18", 30),  # F4_18_0
    ],
)
def test_preset_events_and_network_match_the_official_code(preset, model, period):
    trial = next(
        t
        for t in expand(load_spec(preset)).pruned
        if t.model.name == model and t.pruning.period == period
    )
    torch.manual_seed(0)
    ours = build_model(model, 0, (3, 32, 32), 10)
    ref = _reference(model)
    ref.load_state_dict({k: v for k, v in ours.state_dict().items() if "shortcut_mask" not in k})
    masks = MaskSet(ours, "filter")
    plan = plan_schedule(trial.pruning.layers, masks.n_units, trial.pruning.period)
    blocks = {n: m for n, m in ref.named_modules() if isinstance(m, _RefBlock)}
    official = {f"{b}.conv{c}": (blk, c) for b, blk in blocks.items() for c in (1, 2)}
    assert sorted(official) == sorted(x.name for x in trial.pruning.layers)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 32, 32, generator=generator)
    epochs = range(F4_START, F4_END + 1, period)  # utils.py::pruning_scheduler
    for iteration, epoch in enumerate(epochs, start=1):
        _update(ours, ref, masks, generator)
        with torch.no_grad():  # a training pass: batch statistics, running ones move
            assert _close(ours.train()(x), ref.train()(x))
        p = trial.pruning
        masks.prune(plan.units_at(epoch), score=p.score, target=p.target, generator=generator)
        for name, (blk, c) in official.items():
            _official_event(
                getattr(blk, f"conv{c}"), getattr(blk, f"mask{c}"), iteration, len(epochs)
            )
            assert torch.equal(masks.masks[name], getattr(blk, f"mask{c}").bool()), (epoch, name)
    removed = sum(int((~masks.masks[name]).sum()) for name in official)
    assert removed == {"resnet20": 60, "resnet56": 180, "resnet18": 376}[model]
    with torch.no_grad():
        for train in (True, False):
            assert _close(ours.train(train)(x), ref.train(train)(x))

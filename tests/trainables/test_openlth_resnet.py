"""OpenLTH's cifar_resnet_20: size, initialisation, shortcuts, IMP's layer set, and outputs against
an independent re-implementation of OpenLTH's definition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainables.models.openlth_resnet import openlth_resnet20
from trainables.models.resnet import Block

torch.set_num_threads(1)


# --- reference: facebookresearch/open_lth, models/cifar_resnet.py (Model, Model.Block), initialised
# by models/initializers.py::kaiming_normal then models/bn_initializers.py::uniform per module, as
# models/registry.py::get composes them; prunable tensors per models/base.py::prunable_layer_names.


class _RefBlock(nn.Module):
    def __init__(self, f_in: int, f_out: int, downsample: bool):
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(f_in, f_out, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        if downsample or f_in != f_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(f_in, f_out, kernel_size=1, stride=2, bias=False), nn.BatchNorm2d(f_out)
            )
        else:
            self.shortcut = nn.Sequential()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _ref_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        torch.nn.init.kaiming_normal_(m.weight)
    if isinstance(m, nn.BatchNorm2d):
        m.weight.data = torch.rand(m.weight.data.shape)
        m.bias.data = torch.zeros_like(m.bias.data)


class _RefResNet(nn.Module):
    """cifar_resnet_20_W: plan [(W, 3), (2W, 3), (4W, 3)]."""

    def __init__(self, w: int = 16, outputs: int = 10):
        super().__init__()
        plan = [(w, 3), (2 * w, 3), (4 * w, 3)]
        current = plan[0][0]
        self.conv = nn.Conv2d(3, current, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(current)
        blocks = []
        for segment, (filters, num_blocks) in enumerate(plan):
            for b in range(num_blocks):
                blocks.append(_RefBlock(current, filters, segment > 0 and b == 0))
                current = filters
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(plan[-1][0], outputs)
        self.apply(_ref_init)

    def forward(self, x):
        out = F.relu(self.bn(self.conv(x)))
        out = self.blocks(out)
        out = F.avg_pool2d(out, out.size()[3])
        return self.fc(out.view(out.size(0), -1))

    def prunable_layer_names(self) -> list[str]:
        return [
            name + ".weight"
            for name, m in self.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))
        ]


# --- helpers ----------------------------------------------------------------------------------

_LEAVES = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)


def _conv_spec(conv: nn.Conv2d) -> tuple:
    return conv.kernel_size, conv.stride, conv.padding, conv.bias is None


def _pairs(ours: nn.Module, ref: nn.Module) -> list[tuple[str, str, nn.Module, nn.Module]]:
    """Our and the reference's conv/BN/linear modules matched by structure (module order)."""
    a = [(n, m) for n, m in ours.named_modules() if isinstance(m, _LEAVES)]
    b = [(n, m) for n, m in ref.named_modules() if isinstance(m, _LEAVES)]
    assert len(a) == len(b)
    for (_, ma), (_, mb) in zip(a, b, strict=True):
        assert type(ma) is type(mb) and ma.weight.shape == mb.weight.shape
        if isinstance(ma, nn.Conv2d):
            assert _conv_spec(ma) == _conv_spec(mb)
    return [(na, nb, ma, mb) for (na, ma), (nb, mb) in zip(a, b, strict=True)]


def _build(width: int = 0, classes: int = 10, seed: int = 0):
    torch.manual_seed(seed)
    return openlth_resnet20((3, 32, 32), classes, width)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


EXPECTED_WEIGHT_PRUNABLE = [
    "conv1",
    *[f"layer1.{b}.conv{c}" for b in range(3) for c in (1, 2)],
    "layer2.0.conv1",
    "layer2.0.conv2",
    "layer2.0.shortcut_conv",
    *[f"layer2.{b}.conv{c}" for b in (1, 2) for c in (1, 2)],
    "layer3.0.conv1",
    "layer3.0.conv2",
    "layer3.0.shortcut_conv",
    *[f"layer3.{b}.conv{c}" for b in (1, 2) for c in (1, 2)],
    "fc",
]


# --- tests ------------------------------------------------------------------------------------


def test_parameter_count_is_openlths():
    assert _params(_build()) == 272_474
    torch.manual_seed(0)
    assert _params(_RefResNet()) == 272_474
    assert _build(width=8).fc.in_features == 32 and _build(classes=100).fc.out_features == 100


def test_initialisation_is_openlths():
    model = _build(seed=3)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    gammas = torch.cat([bn.weight.detach() for bn in bns])
    assert len(bns) == 1 + 18 + 2
    assert gammas.min() >= 0 and gammas.max() < 1 and gammas.unique().numel() == gammas.numel()
    assert all(torch.count_nonzero(bn.bias) == 0 for bn in bns)
    # kaiming normal, fan_in, gain sqrt(2): std sqrt(2 / (9 * 64)) for a 64 -> 64 conv
    assert model.layer3[1].conv1.weight.std().item() == pytest.approx((2 / 576) ** 0.5, rel=0.03)
    # built under the same seed, every tensor equals OpenLTH's, buffers included
    torch.manual_seed(3)
    ref = _RefResNet()
    for _, _, ours, theirs in _pairs(model, ref):
        for (ka, va), (kb, vb) in zip(
            ours.state_dict().items(), theirs.state_dict().items(), strict=True
        ):
            assert ka == kb and torch.equal(va, vb), ka
    # the masked shortcut is the identity on the shortcut: all ones
    assert all(torch.equal(b, torch.ones_like(b)) for b in model.channel_mask_buffers().values())


def test_projection_shortcuts_where_the_shape_changes():
    model = _build()
    blocks = {n: m for n, m in model.named_modules() if isinstance(m, Block)}
    assert len(blocks) == 9
    projected = [n for n, b in blocks.items() if hasattr(b, "shortcut_conv")]
    assert projected == ["layer2.0", "layer3.0"]
    for name in projected:
        conv, bn = blocks[name].shortcut_conv, blocks[name].shortcut_bn
        assert conv.kernel_size == (1, 1) and conv.stride == (2, 2) and conv.bias is None
        assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.out_channels
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():  # the other blocks add the input itself
        block = blocks["layer1.1"].eval()
        out = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
        assert torch.equal(block.pre_activation(x), out + x)


@pytest.mark.parametrize(("width", "classes"), [(0, 10), (8, 100)])
def test_outputs_match_openlths_architecture(width, classes):
    model = _build(width, classes, seed=1)
    torch.manual_seed(2)  # different weights, overwritten by ours below
    ref = _RefResNet(width or 16, classes)
    for _, _, ours, theirs in _pairs(model, ref):
        theirs.load_state_dict(ours.state_dict())
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    for train in (True, False):  # train: batch statistics (and the running ones move); eval
        model.train(train)
        ref.train(train)
        with torch.no_grad():
            ours, theirs = model(x), ref(x)
        assert ours.shape == (8, classes)
        assert torch.allclose(ours, theirs, rtol=0, atol=1e-6), (ours - theirs).abs().max()
    for _, _, ours, theirs in _pairs(model, ref):
        if isinstance(ours, nn.BatchNorm2d):
            assert torch.allclose(ours.running_mean, theirs.running_mean, rtol=0, atol=1e-6)
            assert torch.allclose(ours.running_var, theirs.running_var, rtol=0, atol=1e-6)


def test_weight_pruning_ranks_openlths_tensors():
    model = _build()
    weight_prunable = model.weight_prunable_layers()
    assert list(weight_prunable) == EXPECTED_WEIGHT_PRUNABLE and len(weight_prunable) == 22
    # the same tensors, in the same order, as OpenLTH's prunable_layer_names
    ref = _RefResNet()
    ref_name = {id(ours): name for _, name, ours, _ in _pairs(model, ref)}
    assert [f"{ref_name[id(m)]}.weight" for m in weight_prunable.values()] == (
        ref.prunable_layer_names()
    )
    assert weight_prunable["fc"] is model.fc
    # filter pruning, schedules and perturbation never see the output layer
    assert list(model.prunable_layers()) == EXPECTED_WEIGHT_PRUNABLE[:-1]
    # forward order
    calls: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: calls.append(m)) for m in weight_prunable.values()
    ]
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert calls == list(weight_prunable.values())


def test_no_default_schedule():
    assert _build().default_schedule() == ()

"""Models: shapes, parameter counts, the pruning interface, masked shortcuts, the registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.config import LayerSchedule
from trainables.errors import UserError
from trainables.models import MODELS, build_model, get
from trainables.models.resnet import Block

torch.set_num_threads(1)
IMP_ONLY = {"openlth_resnet20"}

INPUT = {"mlp": (1, 40), "cnn1d": (1, 40), "lenet": (1, 28, 28)}  # others: (3, 32, 32)


def _build(name: str, width: int = 0, classes: int = 10):
    torch.manual_seed(0)
    return build_model(name, width, INPUT.get(name, (3, 32, 32)), classes)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    return {name: _build(name) for name in MODELS}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_shape_and_pruning_interface(models, name):
    model = models[name]
    x = torch.randn(2, *INPUT.get(name, (3, 32, 32)))
    calls: list[nn.Module] = []
    layers = model.prunable_layers()
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append(m)) for m in layers.values()]
    with torch.no_grad():
        y = model(x)
    for h in hooks:
        h.remove()
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    # forward order, each layer once; the output layer is never prunable
    assert calls == list(layers.values())
    assert all(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) for m in layers.values())
    assert model.fc not in list(layers.values())
    # every BN listed follows its layer and has one feature per unit
    for lname, bn in model.following_bn().items():
        assert isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d))
        assert bn.num_features == layers[lname].weight.shape[0]
    # the default schedule names real layers, with sane fractions and epochs
    schedule = model.default_schedule()
    assert bool(schedule) != (name in IMP_ONLY)  # IMP-only models have no default schedule
    assert all(isinstance(s, LayerSchedule) for s in schedule)
    assert {s.name for s in schedule} <= set(layers)
    assert all(0 < s.final_fraction < 1 and 0 <= s.start_epoch <= s.end_epoch for s in schedule)


@pytest.mark.parametrize(
    ("name", "count"),
    [
        # the official networks (bbartoldson/GeneralizationStabilityTradeoff, counted on its
        # architectures_and_layers/): vgg_arch.vgg11_bn with models.py::vgg11_bn's Linear(512, 10)
        # classifier; resnet18_arch.ResNet18 (kuangliu); resnet2056_arch.resnet20 / resnet56
        # (Idelbayev; "0.27M" and "0.85M" in its docstring's table)
        ("vgg11_bn", 9_231_114),
        ("resnet18", 11_173_962),
        ("resnet20", 269_722),
        ("resnet56", 853_018),
        ("lenet", 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10),
        ("mlp", 40 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10),
        ("cnn1d", (25 * 5 + 25) + 2 * (25 * 25 * 3 + 25) + 3 * 2 * 25 + 25 * 5 * 10 + 10),
    ],
)
def test_parameter_counts(models, name, count):
    assert _params(models[name]) == count


def test_vgg16_is_openlths_plan(models):
    plan = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    convs = sum(9 * i * o + o + 2 * o for i, o in zip([3, *plan[:-1]], plan, strict=True))
    assert _params(models["vgg16"]) == convs + 512 * 10 + 10
    assert list(models["vgg16"].prunable_layers()) == [f"conv{i}" for i in range(1, 14)]


def test_vgg11_default_schedule_is_the_papers(models):
    model = models["vgg11_bn"]
    layers = model.prunable_layers()
    # the last four convs are torchvision's features 15, 18, 22, 25 with their BNs right after
    for name, index in zip(("conv5", "conv6", "conv7", "conv8"), (15, 18, 22, 25), strict=True):
        assert layers[name] is model.features[index]
        assert model.following_bn()[name] is model.features[index + 1]
    assert model.default_schedule() == (
        LayerSchedule("conv5", 0.3, 3, 150),
        LayerSchedule("conv6", 0.3, 4, 150),
        LayerSchedule("conv7", 0.3, 5, 150),
        LayerSchedule("conv8", 0.9, 6, 275),
    )


def test_resnet_default_schedules(models):
    assert models["resnet18"].default_schedule() == (
        LayerSchedule("layer4.0.conv1", 0.25, 7, 150),
        LayerSchedule("layer4.0.conv2", 0.4, 8, 150),
        LayerSchedule("layer4.1.conv1", 0.25, 9, 170),
        LayerSchedule("layer4.1.conv2", 0.95, 10, 275),
    )
    # SGD recipe (Fig. 4): every block conv, 10%, epochs 40-100; stem and fc never included
    for name, n_convs in (("resnet20", 18), ("resnet56", 54)):
        schedule = models[name].default_schedule()
        assert len(schedule) == n_convs and "conv1" not in {s.name for s in schedule}
        assert {(s.final_fraction, s.start_epoch, s.end_epoch) for s in schedule} == {
            (0.1, 40, 100)
        }
    r18 = models["resnet18"].prunable_layers()
    assert [n for n in r18 if "shortcut" in n] == [f"layer{s}.0.shortcut_conv" for s in (2, 3, 4)]


def test_channel_mask_buffers_only_on_residual_block_outputs(models):
    for name in ("mlp", "cnn1d", "lenet", "vgg11_bn", "vgg16"):
        assert models[name].channel_mask_buffers() == {}
    for name, blocks in (("resnet18", 8), ("resnet20", 9), ("resnet56", 27)):
        model = models[name]
        buffers = model.channel_mask_buffers()
        layers = model.prunable_layers()
        assert len(buffers) == blocks and all(n.endswith(".conv2") for n in buffers)
        for lname, buf in buffers.items():
            assert buf.dtype == torch.float32 and torch.equal(
                buf, torch.ones(layers[lname].out_channels)
            )
        # persistent: checkpoints carry them
        assert sum(k.endswith("shortcut_mask") for k in model.state_dict()) == blocks


def _prune_channel(model, block_path: str, channel: int) -> None:
    name = f"{block_path}.conv2"
    with torch.no_grad():
        model.prunable_layers()[name].weight[channel] = 0
        bn = model.following_bn()[name]
        bn.weight[channel] = 0
        bn.bias[channel] = 0
        model.channel_mask_buffers()[name][channel] = 0


@pytest.mark.parametrize(
    ("name", "block_path", "channel"),
    [
        ("resnet20", "layer2.0", 10),  # option A: padded shortcut, channel 10 carries input
        ("resnet20", "layer1.1", 3),  # identity shortcut
        ("resnet18", "layer2.0", 5),  # option B: 1x1 conv + BN shortcut
    ],
)
@pytest.mark.parametrize("train_mode", [True, False])
def test_pruned_block_channel_outputs_exactly_zero(name, block_path, channel, train_mode):
    model = _build(name, width=8 if name == "resnet18" else 0)
    block: Block = model.get_submodule(block_path)
    stride = block.conv1.stride[0]
    x = torch.randn(2, block.conv1.in_channels, 8 * stride, 8 * stride).abs()
    model.train(train_mode)
    with torch.no_grad():
        before = block.pre_activation(x)
        assert before[:, channel].abs().sum() > 0
        _prune_channel(model, block_path, channel)
        after = block.pre_activation(x)
        full = model(torch.randn(2, 3, 32, 32))
    assert torch.count_nonzero(after[:, channel]) == 0
    others = [c for c in range(after.shape[1]) if c != channel]
    assert after[:, others].abs().sum() > 0
    assert torch.isfinite(full).all()


def test_shortcut_mask_is_what_silences_the_channel():
    model = _build("resnet20")
    block: Block = model.get_submodule("layer1.0")
    x = torch.randn(2, 16, 8, 8).abs()
    _prune_channel(model, "layer1.0", 2)
    with torch.no_grad():
        block.shortcut_mask[2] = 1.0  # conv row and BN masked, shortcut still added
        leaked = block.pre_activation(x)[:, 2]
    assert torch.equal(leaked, x[:, 2])


def test_width_scales_channels_and_units():
    assert _build("resnet20", width=8).fc.in_features == 32
    assert _build("resnet18", width=8).fc.in_features == 64
    assert _build("vgg11_bn", width=16).fc.in_features == 128
    assert _build("cnn1d", width=7).prunable_layers()["conv3"].out_channels == 7
    lenet = _build("lenet", width=30).prunable_layers()
    assert (lenet["fc1"].out_features, lenet["fc2"].out_features) == (30, 10)
    assert _build("mlp", width=32)(torch.randn(3, 1, 40)).shape == (3, 10)
    assert _build("resnet20", classes=100).fc.out_features == 100


def test_registry_miss_lists_valid_names():
    with pytest.raises(UserError) as err:
        get("vgg12")
    assert str(err.value) == (
        "model.name: unknown model 'vgg12'; choose one of: "
        "cnn1d, lenet, mlp, openlth_resnet20, resnet18, resnet20, resnet56, vgg11_bn, "
        "vgg16"
    )
    with pytest.raises(
        UserError, match=r"model.name: vgg11_bn expects 3-d inputs .* got input shape \(1, 40\)"
    ):
        build_model("vgg11_bn", 0, (1, 40), 10)
    with pytest.raises(UserError, match="spatial sizes >= 32"):
        build_model("vgg11_bn", 0, (1, 28, 28), 10)


def test_build_is_deterministic_under_the_global_seed():
    a, b = _build("cnn1d"), _build("cnn1d")
    assert all(
        torch.equal(p, q)
        for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )

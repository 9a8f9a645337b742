"""CIFAR ResNets with masked shortcuts: ``resnet18`` (kuangliu), ``resnet20`` / ``resnet56``
(Idelbayev, option-A shortcuts), as Bartoldson et al.'s official code uses them.

Every block adds its shortcut through a persistent float buffer ``shortcut_mask [planes]`` (ones at
init): ``out = bn2(conv2(.)) + shortcut(x) * shortcut_mask``. The official code adds the shortcut
only to unpruned channels (``out[:, mask] += shortcut(x)[:, mask]``); multiplying by a 0/1 mask is
the same, so a channel whose conv2 row, bn2 gamma/beta and mask entry are zeroed is exactly 0.

Differences from torchvision's ``BasicBlock``: the masked shortcut, and option-A shortcuts; the
block is written out here (a dozen lines) rather than patched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables.models.base import PrunableModel, check_input, schedule, uniform_schedule


class Block(nn.Module):
    """Basic residual block: conv3x3(stride)-BN-ReLU-conv3x3-BN, + masked shortcut, ReLU.

    ``option="B"``: a 1x1 conv + BN shortcut where the shape changes (kuangliu ResNet18).
    ``option="A"``: parameter-free shortcut, ``x[:, :, ::2, ::2]`` zero-padded in channels
    (Idelbayev ResNet20/56).
    """

    def __init__(self, in_planes: int, planes: int, stride: int, option: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.register_buffer("shortcut_mask", torch.ones(planes))
        self.projection = stride != 1 or in_planes != planes
        self.pad = (planes - in_planes) // 2, planes - in_planes - (planes - in_planes) // 2
        self.option = option
        if self.projection and option == "B":
            self.shortcut_conv = nn.Conv2d(in_planes, planes, 1, stride, bias=False)
            self.shortcut_bn = nn.BatchNorm2d(planes)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if not self.projection:
            return x
        if self.option == "B":
            return self.shortcut_bn(self.shortcut_conv(x))
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, *self.pad))

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """The block output before its final ReLU, ``[N, planes, H', W']``."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return out + self.shortcut(x) * self.shortcut_mask[:, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.pre_activation(x))


class CifarResNet(PrunableModel):
    """``[N, C, H, W] -> [N, num_classes]``: 3x3 stride-1 stem conv-BN-ReLU (no maxpool), stages
    ``layer1..`` of blocks (the first block of every stage but the first has stride 2), global
    average pooling, ``fc``.

    Prunable names are module paths: ``conv1`` (stem), ``layerS.B.conv1``, ``layerS.B.conv2``,
    ``layerS.B.shortcut_conv`` (option B only); channel mask buffers belong to each ``conv2``.
    """

    def __init__(
        self,
        in_channels: int,
        widths: tuple[int, ...],
        blocks: tuple[int, ...],
        option: str,
        num_classes: int,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self._register_layer("conv1", "conv1", "bn1")
        in_planes = widths[0]
        for s, (planes, count) in enumerate(zip(widths, blocks, strict=True), start=1):
            stage = []
            for b in range(count):
                stride = 2 if s > 1 and b == 0 else 1
                stage.append(Block(in_planes, planes, stride, option))
                in_planes = planes
                p = f"layer{s}.{b}"
                self._register_layer(f"{p}.conv1", f"{p}.conv1", f"{p}.bn1")
                self._register_layer(f"{p}.conv2", f"{p}.conv2", f"{p}.bn2")
                self._mask_paths[f"{p}.conv2"] = f"{p}.shortcut_mask"
                if stage[-1].projection and option == "B":
                    self._register_layer(
                        f"{p}.shortcut_conv", f"{p}.shortcut_conv", f"{p}.shortcut_bn"
                    )
            self.add_module(f"layer{s}", nn.Sequential(*stage))
        self.num_stages = len(widths)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        for s in range(1, self.num_stages + 1):
            out = getattr(self, f"layer{s}")(out)
        # Global average pooling: kuangliu's avg_pool2d(out, 4) and Idelbayev's
        # avg_pool2d(out, out.size(3)) on 32x32 inputs.
        return self.fc(out.mean(dim=(2, 3)))

    def block_conv_names(self) -> tuple[str, ...]:
        """The conv1/conv2 names of every residual block, in forward order."""
        return tuple(n for n in self._layer_paths if n.startswith("layer") and "shortcut" not in n)


def resnet18(input_shape: tuple[int, ...], num_classes: int, width: int) -> CifarResNet:
    """kuangliu's CIFAR ResNet18 (11,173,962 parameters for 10 classes); ``width`` = stem channels
    (default 64, stages w/2w/4w/8w); PyTorch default init, as kuangliu.

    Default schedule (Bartoldson et al. Fig. 2: the official ``config.py`` cfgs F2_RN_1..3 as
    ``models.py::resnet18`` applies them; docs/reproducing.md#bartoldson2020-resnet18): the four
    layer4 convs, layer4.0.conv1 / layer4.0.conv2 / layer4.1.conv1 / layer4.1.conv2 with final
    fractions 0.25/0.4/0.25/0.95, start epochs 7/8/9/10, end epochs 150/150/170/275. The stem,
    the 1x1 shortcut convs and ``fc`` are never in it (prunable_layers still lists stem and
    shortcut convs).
    """
    check_input("resnet18", input_shape, rank=3, min_size=8)
    w = width or 64
    model = CifarResNet(input_shape[0], (w, 2 * w, 4 * w, 8 * w), (2, 2, 2, 2), "B", num_classes)
    names = ("layer4.0.conv1", "layer4.0.conv2", "layer4.1.conv1", "layer4.1.conv2")
    model._schedule = schedule(names, (0.25, 0.4, 0.25, 0.95), (7, 8, 9, 10), (150, 150, 170, 275))
    return model


def _idelbayev(input_shape, num_classes: int, width: int, depth: int, name: str) -> CifarResNet:
    check_input(name, input_shape, rank=3, min_size=4)
    w = width or 16
    n = (depth - 2) // 6
    model = CifarResNet(input_shape[0], (w, 2 * w, 4 * w), (n, n, n), "A", num_classes)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)  # Idelbayev's _weights_init
    # Bartoldson et al. Fig. 4 (official config.py cfgs F4_20_*, F4_56_*; models.py::resnetxx):
    # 10% of every block conv, events over epochs 40-100
    # (docs/reproducing.md#bartoldson2020-resnet-sgd).
    model._schedule = uniform_schedule(model.block_conv_names(), 0.1, 40, 100)
    return model


def resnet20(input_shape: tuple[int, ...], num_classes: int, width: int) -> CifarResNet:
    """Idelbayev's ResNet20 (3 blocks per stage, widths w/2w/4w with w = 16; 269,722 parameters
    for 10 classes), option-A shortcuts, kaiming-normal conv/linear weights.

    Default schedule: every block conv (18), final fraction 0.1, epochs 40-100 (Fig. 4). Note:
    OpenLTH's ``cifar_resnet_20`` (Jin et al.) differs: 1x1-conv shortcuts and BN init U(0, 1).
    """
    return _idelbayev(input_shape, num_classes, width, 20, "resnet20")


def resnet56(input_shape: tuple[int, ...], num_classes: int, width: int) -> CifarResNet:
    """Idelbayev's ResNet56 (9 blocks per stage; 853,018 parameters for 10 classes); otherwise
    as :func:`resnet20`. Default schedule: every block conv (54), 0.1, epochs 40-100."""
    return _idelbayev(input_shape, num_classes, width, 56, "resnet56")

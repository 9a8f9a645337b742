"""VGG for CIFAR: ``vgg11_bn`` (Bartoldson et al.) and ``vgg16`` (OpenLTH ``cifar_vgg_16``).

``vgg11_bn``: torchvision's configuration "A" with BatchNorm (conv biases kept), avgpool disabled and
the classifier replaced by a single ``Linear(512, classes)``, exactly as the official code builds it
(``models.py::vgg11_bn``; 9,231,114 parameters for 10 classes). Init as torchvision's VGG
(kaiming-normal fan-out convs, BN 1/0); the replacement ``fc`` keeps PyTorch's default init.

``vgg16``: OpenLTH's plan ``[64, 64, M, 128, 128, M, 256 x3, M, 512 x3, M, 512 x3]`` of conv-BN-ReLU
modules, then ``AvgPool2d(2)`` and ``fc: Linear(512, classes)``; OpenLTH's default init
(kaiming-normal conv/linear weights, BN weight ~ U(0, 1), BN bias 0).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.vgg import cfgs as torchvision_vgg_cfgs

from trainables.models.base import PrunableModel, check_input, schedule, uniform_schedule

_VGG16_PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class VGG(PrunableModel):
    """``[N, C, 32, 32] -> [N, num_classes]``: conv-BN-ReLU / maxpool ``plan``, optional final
    ``AvgPool2d(2)``, flatten, ``fc``. Layer ``convK`` (K = 1..) is ``features.<i>``, its BN
    ``features.<i+1>`` (the indices torchvision's ``make_layers`` gives)."""

    def __init__(self, plan: tuple, in_channels: int, num_classes: int, final_avgpool: bool):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for spec in plan:
            if spec == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            i = len(layers)
            layers += [nn.Conv2d(channels, spec, 3, padding=1), nn.BatchNorm2d(spec), nn.ReLU()]
            self._register_layer(
                f"conv{len(self._layer_paths) + 1}", f"features.{i}", f"features.{i + 1}"
            )
            channels = spec
        self.features = nn.Sequential(*layers)
        self.pool = nn.AvgPool2d(2) if final_avgpool else nn.Identity()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def _scaled(plan, width: int, base: int = 64) -> tuple:
    return tuple(s if s == "M" else s * width // base for s in plan)


def vgg11_bn(input_shape: tuple[int, ...], num_classes: int, width: int) -> VGG:
    """VGG11-BN with the paper's CIFAR head; ``width`` = first conv's channels (default 64).

    Default schedule (Bartoldson et al.'s official ``config.py`` cfgs F2_VGG_1..4 and F3_*, as
    ``models.py::vgg11_bn`` applies them; docs/reproducing.md#bartoldson2020-vgg11): the last four
    convs conv5..conv8 (features 15, 18, 22, 25), final fractions 0.3/0.3/0.3/0.9 (``prune_frac``
    is popped from the deepest conv up), start epochs 3/4/5/6, end epochs 150/150/150/275.
    """
    check_input("vgg11_bn", input_shape, rank=3, min_size=32)
    model = VGG(_scaled(torchvision_vgg_cfgs["A"], width or 64), input_shape[0], num_classes, False)
    for m in model.features:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    model._schedule = schedule(
        ("conv5", "conv6", "conv7", "conv8"),
        (0.3, 0.3, 0.3, 0.9),
        (3, 4, 5, 6),
        (150, 150, 150, 275),
    )
    return model


def vgg16(input_shape: tuple[int, ...], num_classes: int, width: int) -> VGG:
    """OpenLTH ``cifar_vgg_16``; ``width`` = first conv's channels (default 64).

    Default layer set = OpenLTH's prunable set (every conv; ``fc`` ignored): conv1..conv13. The
    fraction and epochs are ours, for OpenLTH's 160-epoch recipe: 0.5 over epochs 3-79 (before the
    first LR drop at epoch 80).
    """
    check_input("vgg16", input_shape, rank=3, min_size=32)
    model = VGG(_scaled(_VGG16_PLAN, width or 64), input_shape[0], num_classes, True)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.0, 1.0)
            nn.init.zeros_(m.bias)
    model._schedule = uniform_schedule(tuple(model._layer_paths), 0.5, 3, 79)
    return model

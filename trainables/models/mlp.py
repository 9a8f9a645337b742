"""Fully connected networks: ``mlp`` (MNIST-1D) and ``lenet`` (LeNet-300-100, OpenLTH).

Both flatten their input, apply ``fc1, fc2, ...`` with ReLU, and end in the unprunable ``fc``.
Filter granularity prunes rows (hidden units) of ``fc1``/``fc2``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trainables.models.base import PrunableModel, schedule


class MLP(PrunableModel):
    """``[N, *input_shape] -> [N, num_classes]`` logits through ``len(hidden)`` ReLU layers."""

    def __init__(self, input_shape: tuple[int, ...], hidden: tuple[int, ...], num_classes: int):
        super().__init__()
        sizes = (math.prod(input_shape), *hidden)
        self.hidden = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.fc = nn.Linear(sizes[-1], num_classes)
        for i in range(len(hidden)):
            self._register_layer(f"fc{i + 1}", f"hidden.{i}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.fc(x)


def mlp(input_shape: tuple[int, ...], num_classes: int, width: int) -> MLP:
    """MNIST-1D MLP, 40-256-256-10 by default (``width`` = hidden units); PyTorch default init,
    as the mnist1d reference MLP.

    Default schedule (ours; no paper prunes this model), scaled from Bartoldson et al.'s VGG11
    recipe (shallow layers 30%, the deepest targeted layer 90%; the last event at about 80% of
    training) to the default 20 epochs: fc1 0.3 over epochs 2-9, fc2 0.9 over epochs 3-16.
    """
    width = width or 256
    model = MLP(input_shape, (width, width), num_classes)
    model._schedule = schedule(("fc1", "fc2"), (0.3, 0.9), (2, 3), (9, 16))
    return model


def lenet(input_shape: tuple[int, ...], num_classes: int, width: int) -> MLP:
    """LeNet-300-100 as OpenLTH's ``mnist_lenet_300_100``: hidden ``(width, round(width/3))``
    (300/100 by default), kaiming-normal weights (OpenLTH's ``kaiming_normal`` initializer,
    biases left at PyTorch's default).

    Default layer set = OpenLTH's prunable set (every layer but ``fc``): fc1 and fc2. Fractions
    and epochs are ours, for OpenLTH's 40-epoch recipe: fc1 0.3 over epochs 2-18, fc2 0.9 over
    epochs 3-34.
    """
    width = width or 300
    model = MLP(input_shape, (width, max(1, round(width / 3))), num_classes)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)
    model._schedule = schedule(("fc1", "fc2"), (0.3, 0.9), (2, 3), (18, 34))
    return model

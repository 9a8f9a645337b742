"""``cnn1d``: the MNIST-1D reference ConvBase, with BatchNorm1d after each conv.

The mnist1d reference (``ConvBase``): conv 1->25 (kernel 5, stride 2, padding 1), conv 25->25
(kernel 3, stride 2, padding 1) twice, ReLU after each, then a linear classifier on the flattened
25x5 features (for length-40 inputs). BatchNorm1d is added after each conv so that filter pruning can
mask the BN and a pruned channel outputs exactly 0 (the design's filter-pruning contract).
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.models.base import PrunableModel, check_input, schedule

_KERNELS = (5, 3, 3)


def _out_len(length: int, kernel: int) -> int:
    return (length + 2 * 1 - kernel) // 2 + 1  # stride 2, padding 1


class CNN1d(PrunableModel):
    """``[N, C, L] -> [N, num_classes]``; three conv-BN-ReLU stages of ``width`` channels."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int):
        super().__init__()
        channels, length = input_shape
        convs, bns = [], []
        for i, kernel in enumerate(_KERNELS):
            convs.append(nn.Conv1d(channels if i == 0 else width, width, kernel, 2, 1))
            bns.append(nn.BatchNorm1d(width))
            length = _out_len(length, kernel)
            self._register_layer(f"conv{i + 1}", f"convs.{i}", f"bns.{i}")
        self.convs = nn.ModuleList(convs)
        self.bns = nn.ModuleList(bns)
        self.fc = nn.Linear(width * length, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, bn in zip(self.convs, self.bns, strict=True):
            x = torch.relu(bn(conv(x)))
        return self.fc(x.flatten(1))


def cnn1d(input_shape: tuple[int, ...], num_classes: int, width: int) -> CNN1d:
    """MNIST-1D CNN; ``width`` = channels per conv (default 25); PyTorch default init.

    Default schedule (ours), scaled from Bartoldson et al.'s VGG11 recipe to the default 20
    epochs: conv1 0.3 over epochs 2-9, conv2 0.3 over 3-9, conv3 0.9 over 4-16.
    """
    check_input("cnn1d", input_shape, rank=2, min_size=8)
    model = CNN1d(input_shape, num_classes, width or 25)
    model._schedule = schedule(("conv1", "conv2", "conv3"), (0.3, 0.3, 0.9), (2, 3, 4), (9, 9, 16))
    return model

"""The pruning interface every model implements (the pruning code depends on exactly this).

A model names its prunable layers with short, stable names ("conv7", "layer4.1.conv2", "fc1") and
maps each name to a module path once, at construction; the methods below resolve the paths on every
call, so they stay valid after ``.to(device)`` and ``load_state_dict``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from trainables.errors import UserError
from trainables.pruning.schedule import LayerSchedule


class PrunableModel(nn.Module):
    """Base class: subclasses fill the four path tables in ``__init__``.

    - ``_layer_paths``: prunable name -> module path of a Conv1d/Conv2d/Linear, in forward order.
      The output layer is never listed.
    - ``_bn_paths``: prunable name -> module path of the BatchNorm applied right after that layer.
    - ``_mask_paths``: prunable name -> buffer path of a float ``[out_units]`` mask (ones at init)
      that multiplies the residual shortcut added to that layer's (post-BN) output.
    - ``_weight_only_paths``: name -> module path of layers that weight pruning may mask but
      filter pruning never removes units of (the output layer, where the reference code prunes
      it: OpenLTH's ResNets).
    - ``_schedule``: the paper's default layer schedule over names in ``_layer_paths``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._layer_paths: dict[str, str] = {}
        self._bn_paths: dict[str, str] = {}
        self._mask_paths: dict[str, str] = {}
        self._weight_only_paths: dict[str, str] = {}
        self._schedule: tuple[LayerSchedule, ...] = ()

    def prunable_layers(self) -> dict[str, nn.Module]:
        """Name -> Conv1d/Conv2d/Linear module, in forward order; never the output layer."""
        return {name: self.get_submodule(path) for name, path in self._layer_paths.items()}

    def weight_prunable_layers(self) -> dict[str, nn.Module]:
        """Name -> layer whose ``.weight`` unstructured pruning ranks and masks, in forward order:
        ``prunable_layers()`` then the weight-only layers (usually none)."""
        extra = {name: self.get_submodule(p) for name, p in self._weight_only_paths.items()}
        return {**self.prunable_layers(), **extra}

    def following_bn(self) -> dict[str, nn.Module]:
        """Prunable name -> the BatchNorm right after it (names without one are absent).

        Masking that BN's weight and bias with a layer's unit mask makes a pruned unit output
        exactly 0 after BN, whatever the running statistics.
        """
        return {name: self.get_submodule(path) for name, path in self._bn_paths.items()}

    def channel_mask_buffers(self) -> dict[str, torch.Tensor]:
        """Prunable name -> float buffer ``[out_units]`` multiplied into the residual shortcut.

        Only the last conv of each residual block has one. Zeroing entry ``c`` (together with the
        conv's row ``c`` and the following BN's gamma/beta ``c``) makes the block output channel
        ``c`` exactly 0 before the final ReLU: "the shortcut is added only to unpruned channels",
        as in the official code. The buffers are persistent (saved in ``state_dict``); edit them
        in place. Empty for non-residual models.
        """
        return {name: self.get_buffer(path) for name, path in self._mask_paths.items()}

    def default_schedule(self) -> tuple[LayerSchedule, ...]:
        """The paper's layer set: names (all in ``prunable_layers``), fractions, start/end epochs."""
        return self._schedule

    def _register_layer(self, name: str, path: str, bn_path: str | None = None) -> None:
        self._layer_paths[name] = path
        if bn_path is not None:
            self._bn_paths[name] = bn_path


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """`model` in eval mode inside; every module's training flag restored on exit."""
    flags = [m.training for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in zip(model.modules(), flags, strict=True):
            m.training = flag


def schedule(
    names: tuple[str, ...] | list[str],
    fractions: tuple[float, ...] | list[float],
    starts: tuple[int, ...] | list[int],
    ends: tuple[int, ...] | list[int],
) -> tuple[LayerSchedule, ...]:
    """Zip per-layer lists (all in forward order) into LayerSchedule entries."""
    return tuple(
        LayerSchedule(name=n, final_fraction=f, start_epoch=s, end_epoch=e)
        for n, f, s, e in zip(names, fractions, starts, ends, strict=True)
    )


def uniform_schedule(
    names: tuple[str, ...] | list[str], fraction: float, start: int, end: int
) -> tuple[LayerSchedule, ...]:
    """The same fraction and epochs for every named layer."""
    k = len(names)
    return schedule(names, [fraction] * k, [start] * k, [end] * k)


def check_input(model: str, input_shape: tuple[int, ...], rank: int, min_size: int = 1) -> None:
    """Raise UserError unless ``input_shape`` is ``(C, *spatial)`` with ``rank`` entries and every
    spatial size >= ``min_size``."""
    spatial = input_shape[1:]
    if len(input_shape) != rank or any(s < min_size for s in spatial):
        want = f"{rank}-d inputs (C" + ", L" * (rank == 2) + ", H, W" * (rank == 3) + ")"
        size = f" with spatial sizes >= {min_size}" if min_size > 1 else ""
        raise UserError(
            f"model.name: {model} expects {want}{size}, got input shape {tuple(input_shape)}; "
            "pick a model that fits dataset.name"
        )

"""The ``activations`` filter score of Bartoldson et al.'s official ResNet-18 runs (Adam recipe).

The official rule (``models.py``: ``resnet18``, the ``'activations' in scoring`` version of
``_mask_shortcuts_forward_C``; the means start in ``_make_conv_prunable`` and are ranked in
``_prune_layer``): every residual block counts its training-mode forward passes, and on every 10th
one updates, per output channel ``c`` of its two convs,

    m1[c] <- 0.1 * sum_{n,h,w} |bn1(conv1(x))[n, c, h, w]| + 0.9 * m1[c]   (conv1: BN output, pre-ReLU)
    m2[c] <- 0.1 * sum_{n,h,w} |pre[n, c, h, w]|           + 0.9 * m2[c]   (conv2)

with ``pre = bn2(conv2(.)) + shortcut(x) * shortcut_mask``, the block output after the masked
shortcut and before the final ReLU (:meth:`trainables.models.resnet.Block.pre_activation`). Both
means start at 0; eval-mode passes neither count nor update. A filter's score is its running mean
(Prune_S removes the smallest). The sums run over the batch, so scores scale with the batch size;
they are only ranked within a layer.

Where the hooks find these values, without editing the model or running a module twice:

- ``bn1``'s forward hook receives ``bn1(conv1(x))``: m1's input as it is.
- ``pre`` is no module's output (the block returns ``relu(pre)``, whose negative part is lost), and
  recomputing it would run the BatchNorms again in training mode and move their running
  statistics. So on an updating pass the hooks of ``bn2`` and, in 1x1-conv shortcut blocks,
  ``shortcut_bn`` keep their outputs, and the block's own forward hook forms
  ``bn2_out + shortcut * shortcut_mask[:, None, None]``: the operations of ``pre_activation`` on
  the same tensors, hence the same values bit for bit. A parameter-free shortcut (identity,
  option A) is recomputed from the block input with ``Block.shortcut``, which has no state.

Sums are taken in float32 (under bf16 autocast too). Every training-mode forward of a block counts,
as in the official code, whichever caller runs it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from trainables.errors import UserError
from trainables.models.resnet import Block

__all__ = ["ActivationTracker", "UPDATE_EVERY"]

UPDATE_EVERY = 10  # official: update when the block's counter % 10 == 0
NEW_WEIGHT, OLD_WEIGHT = 0.1, 0.9  # official: .1 * new + .9 * old
CONVS = ("conv1", "conv2")


class _BlockProbe:
    """One block's hooks, training-pass counter and the running means of its two convs."""

    def __init__(self, block: Block):
        self.block = block
        self.count = 0
        device = block.conv1.weight.device
        # The official scalar 0 broadcasts to every channel on the first update: zeros are equal.
        self.means = {c: torch.zeros(getattr(block, c).out_channels, device=device) for c in CONVS}
        self._kept: dict[str, Tensor] | None = None  # bn2 / shortcut_bn outputs of an updating pass
        self.handles = [
            block.register_forward_pre_hook(self._start),
            block.bn1.register_forward_hook(self._after_bn1),
            block.bn2.register_forward_hook(self._after_bn2),
            block.register_forward_hook(self._finish),
        ]
        if hasattr(block, "shortcut_bn"):
            self.handles.append(block.shortcut_bn.register_forward_hook(self._after_shortcut_bn))

    def _start(self, block: nn.Module, args: tuple) -> None:
        self._kept = None
        if block.training:
            self.count += 1
            if self.count % UPDATE_EVERY == 0:
                self._kept = {}

    def _after_bn1(self, bn: nn.Module, args: tuple, output: Tensor) -> None:
        if self._kept is not None:
            self._update("conv1", output)

    def _after_bn2(self, bn: nn.Module, args: tuple, output: Tensor) -> None:
        if self._kept is not None:
            self._kept["bn2"] = output

    def _after_shortcut_bn(self, bn: nn.Module, args: tuple, output: Tensor) -> None:
        if self._kept is not None:
            self._kept["shortcut"] = output

    def _finish(self, block: nn.Module, args: tuple, output: Tensor) -> None:
        kept, self._kept = self._kept, None
        if kept is None:
            return
        with torch.no_grad():
            shortcut = kept["shortcut"] if "shortcut" in kept else block.shortcut(args[0])
            self._update("conv2", kept["bn2"] + shortcut * block.shortcut_mask[:, None, None])

    @torch.no_grad()
    def _update(self, conv: str, activation: Tensor) -> None:
        total = activation.detach().float().abs().sum(dim=(0, 2, 3))
        old = self.means[conv].to(total.device)
        self.means[conv] = NEW_WEIGHT * total + OLD_WEIGHT * old


class ActivationTracker:
    """Running means of |pre-ReLU activations| for the residual block convs of a ResNet.

    Args:
        model: a prunetune ResNet whose residual blocks are
            :class:`trainables.models.resnet.Block` (``resnet18``, ``resnet20``, ``resnet56``,
            ``openlth_resnet20``). Hooks are attached at once; :meth:`remove` detaches them.
        layers: track only the blocks holding these layers (the official code tracks the pruned
            blocks only; every hooked block costs a few Python calls per forward); None = every
            block. A block's scores do not depend on which other blocks are tracked.

    Layer names are the model's prunable names ``layerS.B.conv1`` / ``layerS.B.conv2``; the stem
    and the 1x1 shortcut convs have no activation score (the official code never ranks them).
    """

    @staticmethod
    def scorable(model: nn.Module) -> tuple[str, ...]:
        """The layers this score can rank in `model`: every residual block's ``conv1`` and
        ``conv2``, in forward order (empty when `model` has no residual block)."""
        blocks = [p for p, m in model.named_modules() if isinstance(m, Block)]
        return tuple(f"{p}.{c}" for p in blocks for c in CONVS)

    def __init__(self, model: nn.Module, layers: Iterable[str] | None = None):
        blocks = {p: m for p, m in model.named_modules() if isinstance(m, Block)}
        if not blocks:
            raise UserError(
                f"pruning.score: 'activations' needs a ResNet with residual blocks, got "
                f"{type(model).__name__} with none"
            )
        if layers is not None:
            layers = tuple(layers)
            scored = self.scorable(model)
            for name in layers:
                _check_scored(name, scored)
            wanted = {name.rpartition(".")[0] for name in layers}
            blocks = {p: m for p, m in blocks.items() if p in wanted}
        self._probes = {p: _BlockProbe(m) for p, m in blocks.items()}

    def layer_names(self) -> tuple[str, ...]:
        """The scored layers, ``layerS.B.conv1`` / ``.conv2``, in forward order."""
        return tuple(f"{p}.{c}" for p in self._probes for c in CONVS)

    def scores(self, name: str) -> Tensor:
        """Filter scores of layer `name`: float32 ``[out_channels]`` on the model's device, the
        running mean (zeros before the first update). The tensor is not modified afterwards."""
        _check_scored(name, self.layer_names())
        path, _, conv = name.rpartition(".")
        return self._probes[path].means[conv]

    def counters(self) -> dict[str, int]:
        """Block path -> training-mode forward passes seen so far."""
        return {p: probe.count for p, probe in self._probes.items()}

    def state_dict(self) -> dict[str, object]:
        """``{"counters": {block path: int}, "means": {layer: float32 [C] CPU tensor}}``."""
        return {
            "counters": self.counters(),
            "means": {n: self.scores(n).detach().cpu().clone() for n in self.layer_names()},
        }

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore counters and means saved by :meth:`state_dict` (for an exact resume)."""
        counters, means = state["counters"], state["means"]
        if set(counters) != set(self._probes) or set(means) != set(self.layer_names()):
            raise ValueError(
                f"activation tracker state names {sorted(means)} do not match "
                f"{sorted(self.layer_names())}"
            )
        for path, probe in self._probes.items():
            probe.count = int(counters[path])
            device = probe.block.conv1.weight.device
            for c in CONVS:
                probe.means[c] = means[f"{path}.{c}"].to(device=device, dtype=torch.float32).clone()

    def remove(self) -> None:
        """Detach every hook; counters and means stay readable and no longer change."""
        for probe in self._probes.values():
            for handle in probe.handles:
                handle.remove()
            probe.handles.clear()


def _check_scored(name: str, scored: Iterable[str]) -> None:
    if name not in scored:
        raise UserError(
            "pruning.layers: the 'activations' score ranks tracked residual block convs only "
            f"({', '.join(scored)}), got {name!r}"
        )

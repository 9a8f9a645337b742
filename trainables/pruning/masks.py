"""The mask holder: which units of which prunable layers are gone, and keeping them at exactly 0.

Pruning is masking, as in Bartoldson et al.'s official code (``models.py::_prunable_conv_forward``,
``_prune_layer``; ``architectures_and_layers/custom_batch_norm.py::_prunable_batch_forward``): a
pruned filter's weights are zeroed and the following BatchNorm's gamma and beta are multiplied by
the same mask, so the channel outputs exactly 0; in ResNets the model adds the shortcut only to
unpruned channels (``resnetxx._mask_shortcuts_forward_C``), which we drive through the model's
``channel_mask_buffers()``. Here parameters stay plain tensors: the masked entries are zeroed once
at the event and re-zeroed in place after every optimizer step (:meth:`MaskSet.apply_`, one
``torch._foreach_mul_``), which keeps them exactly 0 under Adam, SGD with momentum, nesterov and
weight decay. The optimizer's per-parameter state (Adam moments, momentum buffers) is zeroed for
the masked entries at the event (:meth:`MaskSet.zero_optimizer_state`) and their gradients are masked before each
step (:meth:`MaskSet.mask_grads_`), so no stale or fresh update leaks into a pruned entry.

Granularity ``filter``: a mask is bool [out_units] (conv output channels / linear rows); the unit's
weights, its bias, and the following BN's gamma and beta are masked. With ``weights_only`` only
the weight rows are: the official noise runs' Prune_L reference (``models.py::_make_conv_prunable``
with a noise setting masks the conv weight but neither its bias nor the following BN).
Granularity ``weight``: a mask is bool shaped like the weight; only the weight is masked; ranking
is per layer or global.

Sparsity is the fraction of prunable weights (the ``.weight`` of every layer in the model's
``prunable_layers()``) that are masked; biases and BN parameters are not counted. Masks only shrink.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from trainables.pruning import scores


class MaskSet:
    """Per-layer masks over a model's prunable layers (all of them, initially all True).

    Args:
        model: a prunetune model (``prunable_layers()``, ``following_bn()``,
            ``channel_mask_buffers()``); parameters must already be on their final device.
        granularity: ``filter`` or ``weight``.
        weights_only: filter granularity: mask only the layers' weight rows (bias, following BN
            and residual shortcut untouched).
    """

    def __init__(self, model: nn.Module, granularity: str, weights_only: bool = False):
        self.granularity = granularity
        self.weights_only = weights_only
        self.layers: dict[str, nn.Module] = dict(
            model.weight_prunable_layers() if granularity == "weight" else model.prunable_layers()
        )
        self.bns: dict[str, nn.Module] = (
            dict(model.following_bn()) if granularity == "filter" else {}
        )
        self.shortcuts: dict[str, Tensor] = (
            dict(model.channel_mask_buffers())
            if granularity == "filter" and not weights_only
            else {}
        )
        self.masks: dict[str, Tensor] = {
            name: torch.ones(self._unit_shape(layer), dtype=torch.bool, device=layer.weight.device)
            for name, layer in self.layers.items()
        }
        self._total = sum(layer.weight.numel() for layer in self.layers.values())
        self._pruned = 0
        self._params: list[Tensor] = []  # the masked parameters, flat, for foreach
        self._factors: list[Tensor] = []  # float masks broadcastable to each of _params

    # --- queries -------------------------------------------------------------------------------

    @property
    def n_units(self) -> dict[str, int]:
        """Units per layer: filters/rows (filter) or weights (weight granularity)."""
        return {name: int(m.numel()) for name, m in self.masks.items()}

    @property
    def sparsity(self) -> float:
        """Fraction of prunable weights masked, in [0, 1] (no device sync: cached at events)."""
        return self._pruned / self._total if self._total else 0.0

    @property
    def pruned_weights(self) -> int:
        return self._pruned

    @property
    def total_weights(self) -> int:
        return self._total

    def alive(self, name: str) -> Tensor:
        """Bool mask of layer `name` (True = kept); filter [out], weight like the weight."""
        return self.masks[name]

    # --- choosing and removing -----------------------------------------------------------------

    def select(
        self,
        units: Mapping[str, int],
        *,
        score: str,
        target: str,
        generator: torch.Generator,
        scope: str = "layer",
        tracker: scores.ScoreTracker | None = None,
    ) -> dict[str, Tensor]:
        """Choose units to remove without removing them (perturbation methods target this way).

        Args:
            units: {layer: k} units to remove per layer, in the order to draw them. With weight
                granularity and ``scope="global"``, the layers' budgets are pooled: sum(k) weights
                are ranked jointly over those layers (:meth:`select_jointly`).
            score / target: registry names (``scores.FILTER_SCORES`` / ``WEIGHT_SCORES``,
                ``scores.TARGETS``).
            generator: CPU generator for ``random`` targets (checkpointed by the caller).
            tracker: the tracker of a tracked score (``scores.TRACKED_SCORES``; the caller builds
                it with ``scores.make_tracker`` and checkpoints it); None for the other scores.

        Returns:
            {layer: bool tensor shaped like the layer's mask, True = chosen}; chosen units are a
            subset of the alive ones and number exactly k per layer (or sum(k) globally).
        """
        if self.granularity == "weight" and scope == "global":
            return self.select_jointly(list(units), sum(units.values()), score, target, generator)
        return {
            name: scores.select(
                self._scores(name, score, tracker).flatten(),
                self.masks[name].flatten(),
                k,
                target,
                generator,
                ties="cutoff" if self.granularity == "filter" else "index",
            ).view_as(self.masks[name])
            for name, k in units.items()
        }

    def select_jointly(
        self, names: list[str], k: int, score: str, target: str, generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Choose `k` alive units ranked jointly over the layers `names` (global pruning; OpenLTH's
        ``sparse_global`` with ``magnitude``/``smallest``). Ties break by position (a stable sort):
        layer order, then flat index."""
        flat_scores = torch.cat([self._scores(n, score).flatten() for n in names])
        flat_alive = torch.cat([self.masks[n].flatten() for n in names])
        chosen = scores.select(flat_scores, flat_alive, k, target, generator, ties="index")
        parts = chosen.split([self.masks[n].numel() for n in names])
        return {n: p.view_as(self.masks[n]) for n, p in zip(names, parts, strict=True)}

    def chosen_score(
        self,
        chosen: Mapping[str, Tensor],
        score: str,
        tracker: scores.ScoreTracker | None = None,
    ) -> float:
        """:func:`scores.event_score` of the units `chosen` (as :meth:`select` returns them),
        scored now, so call it before :meth:`remove`."""
        means = [
            self._scores(name, score, tracker).flatten()[pick.flatten()].float().mean()
            for name, pick in chosen.items()
            if pick.any()
        ]
        return scores.event_score(means)

    def _scores(self, name: str, score: str, tracker: scores.ScoreTracker | None = None) -> Tensor:
        bn = self.bns.get(name)
        return scores.unit_scores(
            score, self.layers[name], bn, self.granularity, name=name, tracker=tracker
        )

    @torch.no_grad()
    def remove(self, chosen: Mapping[str, Tensor]) -> dict[str, int]:
        """Mask the chosen units for good and zero their parameters (and shortcut entries).

        Returns {layer: units newly removed}. Masks only shrink: already-masked entries stay masked.
        """
        removed = {}
        for name, pick in chosen.items():
            newly = pick & self.masks[name]
            removed[name] = int(newly.sum())
            self.masks[name] &= ~pick
        self._refresh()
        self.apply_()
        for name in chosen:
            if name in self.shortcuts:
                self.shortcuts[name].mul_(self.masks[name].to(self.shortcuts[name].dtype))
        return removed

    def prune(
        self,
        units: Mapping[str, int],
        *,
        score: str,
        target: str,
        generator: torch.Generator,
        scope: str = "layer",
        tracker: scores.ScoreTracker | None = None,
    ) -> dict[str, int]:
        """:meth:`select` then :meth:`remove`; returns {layer: units removed}."""
        chosen = self.select(
            units, score=score, target=target, generator=generator, scope=scope, tracker=tracker
        )
        return self.remove(chosen)

    # --- keeping masked entries at zero --------------------------------------------------------

    @torch.no_grad()
    def apply_(self) -> None:
        """Re-zero every masked entry in place (call after each ``optimizer.step()``)."""
        if self._params:
            torch._foreach_mul_(self._params, self._factors)

    @torch.no_grad()
    def mask_grads_(self) -> None:
        """Zero the gradients of masked entries in place (call before ``optimizer.step()``).

        With the optimizer state zeroed at the event, this keeps moments and momentum buffers of
        masked entries at exactly 0 (BN gamma/beta of a dead channel still receive gradients).
        """
        grads, factors = [], []
        for param, factor in zip(self._params, self._factors, strict=True):
            if param.grad is not None:
                grads.append(param.grad)
                factors.append(factor)
        if grads:
            torch._foreach_mul_(grads, factors)

    @torch.no_grad()
    def zero_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        """Zero per-parameter optimizer state (moments, momentum) at masked entries."""
        for param, factor in zip(self._params, self._factors, strict=True):
            for value in optimizer.state.get(param, {}).values():
                if isinstance(value, Tensor) and value.shape == param.shape:
                    value.mul_(factor)

    def parameter_masks(self, model: nn.Module) -> dict[str, Tensor] | None:
        """{parameter name: 0/1 float tensor of its shape} of every masked parameter (weights,
        biases and BN gamma/beta of pruned units), or None when nothing is pruned."""
        if not self._params:
            return None
        names = {id(p): n for n, p in model.named_parameters()}
        return {
            names[id(param)]: factor.expand_as(param).clone()
            for param, factor in zip(self._params, self._factors, strict=True)
        }

    def _refresh(self) -> None:
        """Rebuild the foreach lists and the pruned-weight count from the bool masks."""
        self._params, self._factors = [], []
        pruned = 0
        for name, mask in self.masks.items():
            n_masked = int(mask.numel() - mask.sum())
            if n_masked == 0:
                continue
            layer = self.layers[name]
            dtype = layer.weight.dtype
            if self.granularity == "weight":
                pruned += n_masked
                self._add(layer.weight, mask.to(dtype))
                continue
            pruned += n_masked * layer.weight[0].numel()
            unit = mask.to(dtype)
            self._add(layer.weight, unit.view(-1, *([1] * (layer.weight.dim() - 1))))
            if self.weights_only:
                continue
            self._add(getattr(layer, "bias", None), unit)
            bn = self.bns.get(name)
            if bn is not None:
                self._add(bn.weight, unit)
                self._add(bn.bias, unit)
        self._pruned = pruned

    def _add(self, param: Tensor | None, factor: Tensor) -> None:
        if param is not None:
            self._params.append(param)
            self._factors.append(factor)

    # --- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, object]:
        """``{"granularity": str, "masks": {layer: bool tensor (CPU)}}``."""
        return {
            "granularity": self.granularity,
            "masks": {n: m.detach().cpu().clone() for n, m in self.masks.items()},
        }

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore masks saved by :meth:`state_dict` (parameters are restored with the model)."""
        if state["granularity"] != self.granularity:
            raise ValueError(
                f"mask granularity {state['granularity']!r} does not match {self.granularity!r}"
            )
        saved = state["masks"]
        if set(saved) != set(self.masks):
            raise ValueError(f"mask layers {sorted(saved)} do not match {sorted(self.masks)}")
        for name, mask in saved.items():
            self.masks[name] = mask.to(device=self.masks[name].device, dtype=torch.bool).clone()
        self._refresh()

    def _unit_shape(self, layer: nn.Module) -> tuple[int, ...]:
        if self.granularity == "weight":
            return tuple(layer.weight.shape)
        return (layer.weight.shape[0],)

"""Pruning scores and targets: pure functions over tensors.

Scores (Bartoldson et al.'s ``models.py::_prune_layer``; a *unit* is a conv output channel or a
linear row, scored from its weight tensor with the bias excluded):

- ``l2`` / ``l1``: the norm of each unit's weights, ``weight.flatten(1).norm(p)`` -> [out_units].
- ``ebn``: E[BN], the expected post-BN, post-ReLU activation of each channel assuming the
  normalised pre-affine activation is N(0, 1): ``beta * Phi(beta/|gamma|) + |gamma| * phi(beta/|gamma|)``
  (``_make_bn_prunable._bn_expectation``; gamma = 0 gives ``max(beta, 0)``, its limit).
- ``magnitude``: per weight, ``|w|`` (unstructured pruning; OpenLTH's ``sparse_global``).

Targets pick ``k`` of the still-unpruned units: ``smallest`` (Prune_S), ``largest`` (Prune_L),
``random`` (Prune_R: exactly k uniformly random still-unpruned units, drawn from the given
``torch.Generator``, which the caller checkpoints). Ties are broken by index (a stable sort), so the
choice is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from trainables.errors import UserError

__all__ = [
    "l2",
    "l1",
    "ebn",
    "magnitude",
    "select",
    "FILTER_SCORES",
    "WEIGHT_SCORES",
    "TARGETS",
    "get_filter_score",
    "get_weight_score",
    "get_target",
    "unit_scores",
]

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def l2(weight: Tensor) -> Tensor:
    """L2 norm per unit. weight [out, ...] -> [out] (float32 or the weight's dtype)."""
    return weight.detach().flatten(1).norm(p=2, dim=1)


def l1(weight: Tensor) -> Tensor:
    """L1 norm per unit. weight [out, ...] -> [out]."""
    return weight.detach().flatten(1).norm(p=1, dim=1)


def ebn(gamma: Tensor, beta: Tensor) -> Tensor:
    """E[ReLU(gamma * z + beta)], z ~ N(0, 1), per channel. gamma, beta [C] -> [C].

    Closed form ``beta * Phi(beta/|gamma|) + |gamma| * phi(beta/|gamma|)``; where gamma == 0 the
    activation is the constant ``max(beta, 0)``, which is also the formula's limit.
    """
    g = gamma.detach().abs()
    b = beta.detach()
    safe_g = torch.where(g > 0, g, torch.ones_like(g))
    t = b / safe_g
    cdf = 0.5 * (1.0 + torch.erf(t / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * t * t) * _INV_SQRT_2PI
    value = b * cdf + g * pdf
    return torch.where(g > 0, value, b.clamp(min=0))


def magnitude(weight: Tensor) -> Tensor:
    """Per-weight magnitude ``|w|``, same shape as `weight`."""
    return weight.detach().abs()


def select(
    scores: Tensor, alive: Tensor, k: int, target: str, generator: torch.Generator
) -> Tensor:
    """Choose `k` still-alive entries to remove.

    Args:
        scores: [n] float scores (any device); ignored for ``random``.
        alive: [n] bool, True = not yet pruned.
        k: how many to remove, 0 <= k <= alive.sum().
        target: ``smallest`` | ``largest`` | ``random``.
        generator: CPU generator; consumed only by ``random`` (exactly one ``randperm``).

    Returns:
        [n] bool on `scores`' device, True at the k chosen entries (a subset of `alive`).
    """
    pick = get_target(target)
    alive_idx = alive.nonzero().flatten()
    if k > alive_idx.numel() or k < 0:
        raise ValueError(f"cannot remove {k} of {alive_idx.numel()} remaining units")
    chosen = torch.zeros_like(alive)
    if k:
        order = pick(scores[alive_idx], generator)
        chosen[alive_idx[order[:k]]] = True
    return chosen


def _ascending(scores: Tensor, generator: torch.Generator) -> Tensor:
    return torch.sort(scores.float(), stable=True).indices


def _descending(scores: Tensor, generator: torch.Generator) -> Tensor:
    return torch.sort(scores.float(), descending=True, stable=True).indices


def _random(scores: Tensor, generator: torch.Generator) -> Tensor:
    # Drawn on the CPU generator so CPU and CUDA runs of a seed pick the same units.
    return torch.randperm(scores.numel(), generator=generator).to(scores.device)


def _unit_l2(weight: Tensor, gamma: Tensor | None, beta: Tensor | None) -> Tensor:
    return l2(weight)


def _unit_l1(weight: Tensor, gamma: Tensor | None, beta: Tensor | None) -> Tensor:
    return l1(weight)


def _unit_ebn(weight: Tensor, gamma: Tensor | None, beta: Tensor | None) -> Tensor:
    if gamma is None or beta is None:
        raise UserError("pruning.score: 'ebn' needs a BatchNorm after every pruned layer")
    return ebn(gamma, beta)


# Filter granularity: fn(weight [out, ...], gamma [out] | None, beta [out] | None) -> [out].
FILTER_SCORES: dict[str, Callable[[Tensor, Tensor | None, Tensor | None], Tensor]] = {
    "l2": _unit_l2,
    "l1": _unit_l1,
    "ebn": _unit_ebn,
}

# At weight granularity the per-weight L1 and L2 norms both equal |w|: all three rank alike.
WEIGHT_SCORES: dict[str, Callable[[Tensor], Tensor]] = {
    "magnitude": magnitude,
    "l1": magnitude,
    "l2": magnitude,
}

TARGETS: dict[str, Callable[[Tensor, torch.Generator], Tensor]] = {
    "smallest": _ascending,
    "largest": _descending,
    "random": _random,
}


def unit_scores(score: str, layer: nn.Module, bn: nn.Module | None, granularity: str) -> Tensor:
    """The scores of a layer's units: ``[out]`` (filter granularity, from the weight and the
    following BatchNorm's gamma/beta) or the weight's shape (weight granularity)."""
    if granularity == "weight":
        return get_weight_score(score)(layer.weight)
    gamma, beta = (bn.weight, bn.bias) if bn is not None else (None, None)
    return get_filter_score(score)(layer.weight, gamma, beta)


def get_filter_score(name: str) -> Callable[[Tensor, Tensor | None, Tensor | None], Tensor]:
    """Score for filter granularity: ``fn(weight [out, ...], gamma [out] | None, beta) -> [out]``."""
    if name not in FILTER_SCORES:
        raise UserError(
            f"pruning.score: {name!r} is not a filter score; choose one of: {', '.join(FILTER_SCORES)}"
        )
    return FILTER_SCORES[name]


def get_weight_score(name: str) -> Callable[[Tensor], Tensor]:
    """Score for weight granularity: ``fn(weight) -> same shape``."""
    if name not in WEIGHT_SCORES:
        raise UserError(
            f"pruning.score: {name!r} is not a weight score; choose one of: {', '.join(WEIGHT_SCORES)}"
        )
    return WEIGHT_SCORES[name]


def get_target(name: str) -> Callable[[Tensor, torch.Generator], Tensor]:
    """Ordering function of a target: ``fn(scores [m], generator) -> [m] indices, first = pruned first``."""
    if name not in TARGETS:
        raise UserError(f"pruning.target: unknown {name!r}; choose one of: {', '.join(TARGETS)}")
    return TARGETS[name]

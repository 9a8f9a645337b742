"""Pruning scores and targets: pure functions over tensors.

Scores (Bartoldson et al.'s ``models.py::_prune_layer``; a *unit* is a conv output channel or a
linear row, scored from its weight tensor with the bias excluded):

- ``l2`` / ``l1``: the norm of each unit's weights, ``weight.flatten(1).norm(p)`` -> [out_units].
- ``ebn``: E[BN], the expected post-BN, post-ReLU activation of each channel assuming the
  normalised pre-affine activation is N(0, 1), from the following BatchNorm's gamma and beta
  (``_make_bn_prunable._bn_expectation``): ``beta * Phi(beta/|gamma|) + |gamma| * phi(beta/|gamma|)``.
- ``ebn_signed``: the official ``EBN_alt`` variant (Fig. B2's ResNet-18 runs): the same formula
  with the signed gamma in place of ``|gamma|``, no longer an expectation where gamma < 0.
- ``activations``: the running mean of a residual block conv's |pre-ReLU activations|
  (:mod:`trainables.pruning.activations`). It is a *tracked* score (:data:`TRACKED_SCORES`): read
  from a tracker that watches the training passes, not from the parameters.
- ``magnitude``: per weight, ``|w|`` (unstructured pruning; OpenLTH's ``sparse_global``).

Targets pick ``k`` of the still-unpruned units: ``smallest`` (Prune_S), ``largest`` (Prune_L),
``random`` (Prune_R: exactly k uniformly random still-unpruned units, drawn from the given
``torch.Generator``, which the caller checkpoints). Both rules below are deterministic:

- ``ties="cutoff"`` (filter granularity; the official ``models.py::_prune_layer``): the cutoff is
  the k-th ``topk`` value; the units at or below it (at or above it for ``largest``) are the
  candidates, and the first k candidates by index are chosen. With ties at the cutoff this can
  skip a strictly smaller score: on ``[.3, .3, 0, .3, .9]``, k = 2 smallest choose {0, 1}.
- ``ties="index"`` (weight granularity, IMP and global pruning): a stable sort, ties broken by
  index, so a smaller score is never skipped (``[.3, .3, 0, .3, .9]`` -> {2, 0}).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from trainables.errors import UserError
from trainables.pruning.activations import ActivationTracker

__all__ = [
    "l2",
    "l1",
    "ebn",
    "ebn_signed",
    "magnitude",
    "select",
    "FILTER_SCORES",
    "WEIGHT_SCORES",
    "TRACKED_SCORES",
    "TARGETS",
    "ScoreTracker",
    "make_tracker",
    "get_filter_score",
    "get_weight_score",
    "get_target",
    "unit_scores",
    "event_score",
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

    :func:`bn_expectation` with ``|gamma|``: ``beta * Phi(beta/|gamma|) + |gamma| * phi(beta/|gamma|)``;
    where gamma == 0 the activation is the constant ``max(beta, 0)``, the formula's limit.
    """
    return bn_expectation(gamma.detach().abs(), beta.detach())


def ebn_signed(gamma: Tensor, beta: Tensor) -> Tensor:
    """The official ``EBN_alt`` score: :func:`bn_expectation` with the signed gamma. [C] -> [C].

    Equal to :func:`ebn` where gamma >= 0; where gamma < 0 it is
    ``beta * Phi(-beta/|gamma|) - |gamma| * phi(beta/|gamma|)``, which may be negative.
    """
    return bn_expectation(gamma.detach(), beta.detach())


def bn_expectation(w: Tensor, b: Tensor) -> Tensor:
    """The official closed form of ``_make_bn_prunable._bn_expectation`` for a scale `w` and a
    shift `b` ([C] each) -> [C], in the official order of operations:

    ``alpha = -b / w``, ``Z = 1 - Phi(alpha)``, value ``Z * (b + phi(alpha) / Z * w)``, with the
    official special cases: 0 where ``Z == 0`` (``alpha`` = +inf, or so large that ``Phi`` rounds
    to 1), and 0 where ``Z`` is NaN (``w == b == 0``). ``w == 0 < b`` gives ``b``.
    """
    alpha = -b / w
    z = 1.0 - 0.5 * (1.0 + torch.erf(alpha / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * alpha * alpha) * _INV_SQRT_2PI
    value = z * (b + pdf / z * w)
    value = torch.where(z == 0, torch.zeros_like(value), value)
    return torch.where(torch.isnan(z), torch.zeros_like(value), value)


def magnitude(weight: Tensor) -> Tensor:
    """Per-weight magnitude ``|w|``, same shape as `weight`."""
    return weight.detach().abs()


def select(
    scores: Tensor,
    alive: Tensor,
    k: int,
    target: str,
    generator: torch.Generator,
    *,
    ties: str = "cutoff",
) -> Tensor:
    """Choose `k` still-alive entries to remove.

    Args:
        scores: [n] float scores (any device); ignored for ``random``.
        alive: [n] bool, True = not yet pruned.
        k: how many to remove, 0 <= k <= alive.sum().
        target: ``smallest`` | ``largest`` | ``random``.
        generator: CPU generator; consumed only by ``random`` (exactly one ``randperm``).
        ties: ``cutoff`` (the official filter rule) or ``index`` (a stable sort); module docstring.
            ``random`` ignores it.

    Returns:
        [n] bool on `scores`' device, True at the k chosen entries (a subset of `alive`).
    """
    pick = get_target(target)
    alive_idx = alive.nonzero().flatten()
    if k > alive_idx.numel() or k < 0:
        raise ValueError(f"cannot remove {k} of {alive_idx.numel()} remaining units")
    if ties not in ("cutoff", "index"):
        raise ValueError(f"ties: must be 'cutoff' or 'index', got {ties!r}")
    chosen = torch.zeros_like(alive)
    if not k:
        return chosen
    values = scores[alive_idx]
    if ties == "cutoff" and target != "random":
        picked = _at_cutoff(values.float(), k, largest=target == "largest")
    else:
        picked = pick(values, generator)[:k]
    chosen[alive_idx[picked]] = True
    return chosen


def event_score(layer_means: Iterable[float]) -> float:
    """The official pruned score of one event (``models.py::_prune``): the mean, over the layers
    that lost units, of ``max(0, mean score of the units chosen in that layer)``; -1 when no layer
    did. The official analysis (``figures_and_tables/utils.py::add_pruning_status_vars``) counts
    an epoch as pruned only when this is > 0, i.e. when some layer's chosen units have a positive
    mean score (``results.tables.summarize`` applies the rule)."""
    means = [max(float(m), 0.0) for m in layer_means]
    return sum(means) / len(means) if means else -1.0


def _at_cutoff(values: Tensor, k: int, *, largest: bool) -> Tensor:
    """The official filter choice: indices (into `values` [m]) of the first k entries, by index,
    whose score is at or beyond the k-th ``topk`` value. [k] long."""
    cutoff = torch.topk(values, k, largest=largest).values[-1]
    candidates = values >= cutoff if largest else values <= cutoff
    return candidates.nonzero().flatten()[:k]


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


def _bn_score(name: str, fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[..., Tensor]:
    def score(weight: Tensor, gamma: Tensor | None, beta: Tensor | None) -> Tensor:
        if gamma is None or beta is None:
            raise UserError(f"pruning.score: {name!r} needs a BatchNorm after every pruned layer")
        return fn(gamma, beta)

    return score


# Filter granularity: fn(weight [out, ...], gamma [out] | None, beta [out] | None) -> [out].
FILTER_SCORES: dict[str, Callable[[Tensor, Tensor | None, Tensor | None], Tensor]] = {
    "l2": _unit_l2,
    "l1": _unit_l1,
    "ebn": _bn_score("ebn", ebn),
    "ebn_signed": _bn_score("ebn_signed", ebn_signed),
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


class ScoreTracker(Protocol):
    """What a tracked score's tracker offers: ``Tracker(model, layers)`` attaches it to the scored
    layers of a model, which it watches from then on (the pruning method owns and checkpoints it);
    ``scorable(model)`` names the layers it can score in a model (the spec checks them)."""

    def __init__(self, model: nn.Module, layers: Iterable[str]) -> None: ...

    @staticmethod
    def scorable(model: nn.Module) -> tuple[str, ...]: ...

    def scores(self, name: str) -> Tensor: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


# The one place that knows which scores come from a tracker rather than from the parameters:
# score name -> its tracker class. Filter granularity only (a config rule).
TRACKED_SCORES: dict[str, type[ScoreTracker]] = {
    "activations": ActivationTracker,
}


def make_tracker(score: str, model: nn.Module, layers: Iterable[str]) -> ScoreTracker | None:
    """The tracker `score` reads over `layers` of `model` (hooks attached now); None for a score
    computed from the parameters. UserError when the model or a layer cannot be tracked."""
    tracker = TRACKED_SCORES.get(score)
    return None if tracker is None else tracker(model, layers)


def unit_scores(
    score: str,
    layer: nn.Module,
    bn: nn.Module | None,
    granularity: str,
    *,
    name: str = "",
    tracker: ScoreTracker | None = None,
) -> Tensor:
    """The scores of a layer's units: ``[out]`` (filter granularity: read from `tracker` under the
    layer's `name` for a tracked score, else from the weight and the following BatchNorm's
    gamma/beta) or the weight's shape (weight granularity)."""
    if granularity == "weight":
        return get_weight_score(score)(layer.weight)
    if score in TRACKED_SCORES:
        if tracker is None:
            raise ValueError(f"score {score!r} is read from a tracker, and none was given")
        return tracker.scores(name)
    gamma, beta = (bn.weight, bn.bias) if bn is not None else (None, None)
    return get_filter_score(score)(layer.weight, gamma, beta)


def get_filter_score(name: str) -> Callable[[Tensor, Tensor | None, Tensor | None], Tensor]:
    """Score for filter granularity: ``fn(weight [out, ...], gamma [out] | None, beta) -> [out]``."""
    if name not in FILTER_SCORES:
        valid = ", ".join([*FILTER_SCORES, *TRACKED_SCORES])
        raise UserError(f"pruning.score: {name!r} is not a filter score; choose one of: {valid}")
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

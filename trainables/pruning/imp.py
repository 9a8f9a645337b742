"""Iterative magnitude pruning with rewinding, and its controls (Jin et al. 2022; OpenLTH).

Rounds. Round 0 trains the dense model for T = ``train.epochs`` epochs; after the last epoch of
round r < R (R = ``pruning.imp.rounds``) an *event* prunes ``ceil(fraction * remaining)`` of the
remaining weights by global magnitude (:func:`global_magnitude_masks`, OpenLTH ``sparse_global``:
|w| ranked jointly over every prunable tensor, unstructured), and round r + 1 begins with a rewind:

- ``rewind: lr`` (learning-rate rewinding, Renda et al.; not in vanilla OpenLTH): keep the current
  weights, replay the LR schedule from its epoch 0 for T epochs.
- ``rewind: weight`` (weight rewinding, OpenLTH ``lottery/runner.py``): load the model state
  (parameters and BN buffers) saved at the start of epoch ``rewind_epoch`` of round 0, apply the
  mask, and train the schedule's epochs ``rewind_epoch .. T-1`` (T - rewind_epoch epochs, as
  OpenLTH's ``standard_train(start_step=train_start_step)``; rewind_epoch 0 = the initialisation).

At every round start the optimizer state is reset (Adam moments, momentum buffers): OpenLTH builds
a fresh optimizer for every level, and a replayed schedule with stale moments would be neither
LRR nor WR as published. Epochs are numbered globally across rounds; records carry ``imp_round``.

Controls:

- ``extended_dense``: the same rounds, events and rewinds with fraction 0, so nothing is ever
  masked; the schedule replays exactly as in the matched IMP trial (P2's "extended dense
  training", papers.md 2.2). Its events have acc_before == acc_after, i.e. instability 0.
- ``sparse_from_start``: the trial first runs the IMP rounds exactly as the matched IMP trial (same
  seed, same data order, so on CPU the same final mask), then one more phase of T epochs: all
  parameters and buffers reset to their initial values (epoch 0), the final mask applied, a fresh
  optimizer, the LR schedule from epoch 0. The transition is recorded as an event (acc_before: the
  final IMP model; acc_after: the masked initialisation; units_removed: the mask's zeros per
  layer), so the default generalization measure ("best after the last event") is taken over the
  control phase only; its instability is not a pruning instability (exclude controls from
  instability fits). Its epochs carry
  ``imp_round = R + 1``. Cost: (R + 1) * T + T epochs; the IMP records are real and can be checked
  against the matched IMP trial. This is the honest way to get "the final round's mask trained
  from initialisation" inside one trial without a dependency between trials.

Deviations from OpenLTH, all documented choices: exactly ``ceil(fraction * remaining)`` weights are
pruned (OpenLTH's ``> threshold`` prunes one more plus ties); ties break by position (stable sort);
the count uses the fraction as the decimal written (``0.2 * 35`` is 7, OpenLTH's float says 8); the
prunable set is the model's ``prunable_layers()`` (every conv/linear but the output layer, so
ResNet-20's ``fc`` is not pruned, unlike OpenLTH).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import Tensor

from trainables.config import TrialConfig

__all__ = [
    "global_magnitude_masks",
    "prune_count",
    "ImpPlan",
    "lr_at",
    "reset_optimizer_",
    "density_after",
]


def prune_count(remaining: int, fraction: float) -> int:
    """``ceil(fraction * remaining)``, the fraction taken as the decimal it prints as."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"pruning.imp.fraction: must be in [0, 1], got {fraction}")
    return math.ceil(Fraction(repr(float(fraction))) * remaining)


def density_after(rounds: int, fraction: float) -> float:
    """Nominal density after `rounds` events, ``(1 - fraction) ** rounds`` (0.8^k by default)."""
    return (1.0 - fraction) ** rounds


def global_magnitude_masks(
    weights: Mapping[str, Tensor], current: Mapping[str, Tensor], fraction: float
) -> dict[str, Tensor]:
    """Prune ``ceil(fraction * remaining)`` of the remaining weights with the smallest |w|, jointly.

    Args:
        weights: {name: weight tensor} of every prunable tensor (any shapes, one device).
        current: {name: bool tensor of the same shape}, True = still alive.
        fraction: in [0, 1]; 0 returns the current masks unchanged (extended dense).

    Returns:
        {name: bool mask}, new tensors; a subset of ``current`` with exactly
        ``alive - ceil(fraction * alive)`` True entries in total. Ties in |w| are broken by
        position (dict order, then flat index).
    """
    if set(weights) != set(current):
        raise ValueError("weights and masks must name the same tensors")
    names = list(weights)
    alive = torch.cat([current[n].reshape(-1) for n in names])
    k = prune_count(int(alive.sum()), fraction)
    masks = {n: current[n].clone() for n in names}
    if k == 0:
        return masks
    magnitude = torch.cat([weights[n].detach().reshape(-1).abs().float() for n in names])
    idx = alive.nonzero().flatten()
    order = torch.sort(magnitude[idx], stable=True).indices[:k]
    keep = alive.clone()
    keep[idx[order]] = False
    for n, part in zip(names, keep.split([current[n].numel() for n in names]), strict=True):
        masks[n] = part.view_as(current[n]).clone()
    return masks


def lr_at(schedule_epoch: int, lr: float, milestones: tuple[int, ...], gamma: float) -> float:
    """The MultiStepLR learning rate used to train schedule epoch ``schedule_epoch`` (0-based)."""
    return lr * gamma ** sum(1 for m in milestones if m <= schedule_epoch)


def reset_optimizer_(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Forget all per-parameter state (a fresh optimizer, as OpenLTH per level) and set `lr`."""
    optimizer.state.clear()
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass(frozen=True)
class ImpPlan:
    """Where each global epoch of an IMP trial sits: round, schedule epoch, events, rewinds.

    ``epochs_per_round`` = T; ``rounds`` = R pruning events; round lengths are T for round 0,
    T (lr) or T - rewind_epoch (weight) for rounds 1..R, and T for the sparse-from-start phase
    (``imp_round`` R + 1).
    """

    epochs_per_round: int
    rounds: int
    rewind: str  # "lr" | "weight"
    rewind_epoch: int
    fraction: float  # effective: 0 for extended_dense
    control: str  # "none" | "extended_dense" | "sparse_from_start"

    @classmethod
    def of(cls, cfg: TrialConfig) -> ImpPlan:
        imp, t = cfg.pruning.imp, cfg.train.epochs
        problems = []
        if imp.rounds < 0:
            problems.append(f"pruning.imp.rounds: must be >= 0, got {imp.rounds}")
        if not 0.0 <= imp.fraction < 1.0:
            problems.append(f"pruning.imp.fraction: must be in [0, 1), got {imp.fraction}")
        if imp.rewind == "weight" and not 0 <= imp.rewind_epoch < t:
            problems.append(
                f"pruning.imp.rewind_epoch: must be in [0, train.epochs={t}), got {imp.rewind_epoch}"
            )
        if problems:
            raise ValueError("\n".join(problems))
        fraction = 0.0 if imp.control == "extended_dense" else imp.fraction
        rewind_epoch = imp.rewind_epoch if imp.rewind == "weight" else 0
        return cls(t, imp.rounds, imp.rewind, rewind_epoch, fraction, imp.control)

    @property
    def round_starts(self) -> tuple[int, ...]:
        """Schedule epoch at which each round (and the control phase) starts."""
        starts = (0,) + (self.rewind_epoch,) * self.rounds
        return starts + ((0,) if self.control == "sparse_from_start" else ())

    @property
    def round_lengths(self) -> tuple[int, ...]:
        return tuple(self.epochs_per_round - s for s in self.round_starts)

    @property
    def total_epochs(self) -> int:
        return sum(self.round_lengths)

    def locate(self, epoch: int) -> tuple[int, int]:
        """``(imp_round, schedule_epoch)`` of global epoch ``epoch``."""
        if not 0 <= epoch < self.total_epochs:
            raise ValueError(f"epoch {epoch} outside the trial's {self.total_epochs} epochs")
        first = 0
        for r, (start, length) in enumerate(
            zip(self.round_starts, self.round_lengths, strict=True)
        ):
            if epoch < first + length:
                return r, start + epoch - first
            first += length
        raise AssertionError("unreachable")

    @property
    def round_end_epochs(self) -> tuple[int, ...]:
        """Global epoch of the last epoch of every round (and of the control phase)."""
        ends, total = [], 0
        for length in self.round_lengths:
            total += length
            ends.append(total - 1)
        return tuple(ends)

    @property
    def prune_epochs(self) -> tuple[int, ...]:
        """Global epochs after whose training an IMP event prunes (ends of rounds 0..R-1)."""
        return self.round_end_epochs[: self.rounds]

    @property
    def control_start_epoch(self) -> int | None:
        """sparse_from_start: the global epoch after which the trial resets to init (else None)."""
        if self.control != "sparse_from_start":
            return None
        return self.round_end_epochs[self.rounds]

    def event_kind(self, epoch: int) -> str | None:
        """What happens after epoch `epoch`'s training: "prune", "reinit" (control) or None."""
        if epoch in self.prune_epochs:
            return "prune"
        if epoch == self.control_start_epoch:
            return "reinit"
        return None


class Imp:
    """The stateful part of an IMP trial: the saved model states it rewinds to.

    The loop calls, with ``plan = ImpPlan.of(cfg)``:

    - ``before_epoch(epoch, model)`` before every epoch's training (saves the WR rewind point and,
      for sparse_from_start, the initialisation);
    - after an epoch whose ``plan.event_kind(epoch)`` is not None: ``acc_before``, then
      ``event(epoch, model, masks)``, then ``acc_after``, then ``start_round(epoch + 1, model,
      optimizer, masks)`` (the rewind of the next round);
    - ``lr(epoch)`` for the learning rate of every epoch (the replayed schedule).

    ``masks`` is a weight-granularity :class:`~trainables.pruning.masks.MaskSet` over the prunable
    layers. ``state_dict`` carries the saved model states (so a resumed trial rewinds exactly).
    """

    def __init__(
        self,
        plan: ImpPlan,
        lr: float,
        milestones: tuple[int, ...],
        gamma: float,
        layers: list[str] | None = None,
    ):
        self.plan = plan
        self.layers = layers  # prunable layer names ranked jointly; None = all of the MaskSet's
        self.base_lr, self.milestones, self.gamma = lr, tuple(milestones), gamma
        self.saved: dict[str, dict[str, Tensor]] = {}  # "rewind" (WR) / "init" (control)

    def lr(self, epoch: int) -> float:
        return lr_at(self.plan.locate(epoch)[1], self.base_lr, self.milestones, self.gamma)

    def before_epoch(self, epoch: int, model: torch.nn.Module) -> None:
        if epoch == 0 and self.plan.control == "sparse_from_start":
            self.saved["init"] = _copy_state(model)
        if self.plan.rewind == "weight" and epoch == self.plan.rewind_epoch:
            self.saved["rewind"] = _copy_state(model)

    def event(self, epoch: int, model: torch.nn.Module, masks) -> dict[str, int]:
        """Apply epoch `epoch`'s event; returns {layer: weights masked by it}.

        ``prune``: the weights newly masked (all 0 for extended_dense, which is then no pruning
        event). ``reinit`` (sparse_from_start): every weight the re-applied final mask holds at 0,
        so the transition is recorded as an event and "best after the last event" covers only the
        control phase; its instability compares the trained model with the masked initialisation.
        """
        kind = self.plan.event_kind(epoch)
        names = self.layers or list(masks.layers)
        if kind == "prune":
            weights = {name: masks.layers[name].weight for name in names}
            current = {name: masks.alive(name) for name in names}
            new = global_magnitude_masks(weights, current, self.plan.fraction)
            return masks.remove({name: current[name] & ~new[name] for name in names})
        if kind == "reinit":
            self._load("init", model, masks)
            return {name: int((~masks.alive(name)).sum()) for name in names}
        raise ValueError(f"epoch {epoch} has no IMP event")

    def start_round(
        self, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, masks
    ) -> None:
        """Begin the round starting at global `epoch`: rewind (WR) and reset the optimizer."""
        round_index, _ = self.plan.locate(epoch)
        if self.plan.rewind == "weight" and 1 <= round_index <= self.plan.rounds:
            self._load("rewind", model, masks)
        reset_optimizer_(optimizer, self.lr(epoch))

    def state_dict(self) -> dict[str, dict[str, Tensor]]:
        return {
            "saved": {k: {n: t.cpu().clone() for n, t in s.items()} for k, s in self.saved.items()}
        }

    def load_state_dict(self, state: Mapping[str, Mapping[str, Mapping[str, Tensor]]]) -> None:
        self.saved = {k: {n: t.clone() for n, t in s.items()} for k, s in state["saved"].items()}

    def _load(self, key: str, model: torch.nn.Module, masks) -> None:
        if key not in self.saved:
            raise RuntimeError(f"IMP: no saved {key!r} model state to rewind to")
        model.load_state_dict(self.saved[key])
        masks.apply_()  # the saved state predates the mask: zero the pruned weights


def _copy_state(model: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}

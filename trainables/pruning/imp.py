"""Iterative magnitude pruning with rewinding, and its controls (Jin et al. 2022; OpenLTH).

The calendar (rounds, event epochs, the replayed LR) is :class:`trainables.pruning.rounds.ImpPlan`.
After the last epoch of round r < R an *event* prunes ``ceil(fraction * remaining)`` of the
remaining weights by global magnitude (OpenLTH ``sparse_global``: |w| ranked jointly over every
prunable tensor, unstructured; :meth:`trainables.pruning.masks.MaskSet.select_jointly`), and round
r + 1 begins with a rewind:

- ``rewind: lr`` (learning-rate rewinding, Renda et al.; not in vanilla OpenLTH): keep the current
  weights, replay the LR schedule from its epoch 0 for T epochs.
- ``rewind: weight`` (weight rewinding, OpenLTH ``lottery/runner.py``): load the model state
  (parameters and BN buffers) saved at the start of epoch ``rewind_epoch`` of round 0, apply the
  mask, and train the schedule's epochs ``rewind_epoch .. T-1`` (T - rewind_epoch epochs, as
  OpenLTH's ``standard_train(start_step=train_start_step)``; rewind_epoch 0 = the initialisation).

At every round start the optimizer state is reset (Adam moments, momentum buffers): OpenLTH builds
a fresh optimizer for every level, and a replayed schedule with stale moments would be neither
LRR nor WR as published. Records carry ``imp_round``.

Controls:

- ``extended_dense``: the same rounds, events and rewinds with fraction 0, so nothing is ever
  masked; the schedule replays exactly as in the matched IMP trial (Jin et al.'s "extended dense
  training"). Its events remove nothing, so the loop records none (and no instability).
- ``sparse_from_start``: the trial first runs the IMP rounds exactly as the matched IMP trial (same
  seed, same data order, so on CPU the same final mask), then one more phase of T epochs: all
  parameters and buffers reset to their initial values (epoch 0), the final mask applied, a fresh
  optimizer, the LR schedule from epoch 0. The transition is recorded as an event (acc_before: the
  final IMP model; acc_after: the masked initialisation; units_removed: the mask's zeros per
  layer), so the default generalization measure ("best after the last event") is taken over the
  control phase only; its instability is not a pruning instability (exclude controls from
  instability fits). Its epoch's record is the final IMP model, the last level's. Its epochs carry ``imp_round = R + 1``. Cost: (R + 1) * T + T epochs; the IMP
  records are real and can be checked against the matched IMP trial. This is the honest way to
  get "the final round's mask trained from initialisation" inside one trial without a dependency
  between trials.

Deviations from OpenLTH, all documented choices: exactly ``ceil(fraction * remaining)`` weights are
pruned (OpenLTH's ``> threshold`` prunes one more plus ties); ties break by position (stable sort);
the count uses the fraction as the decimal written (``0.2 * 35`` is 7, OpenLTH's float says 8).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from trainables.pruning.masks import MaskSet
from trainables.pruning.rounds import ImpPlan, lr_at
from trainables.value_rules import count_of

__all__ = ["Imp", "reset_optimizer_"]


def reset_optimizer_(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Forget all per-parameter state (a fresh optimizer, as OpenLTH per level) and set `lr`."""
    optimizer.state.clear()
    for group in optimizer.param_groups:
        group["lr"] = lr


class Imp:
    """The stateful part of an IMP trial: the saved model states it rewinds to.

    The loop calls, with ``plan = ImpPlan.of(cfg)``:

    - ``before_epoch(epoch, model)`` before every epoch's training (saves the WR rewind point and,
      for sparse_from_start, the initialisation);
    - after an epoch whose ``plan.event_kind(epoch)`` is not None: ``acc_before`` and the
      epoch's other evaluations (the level's trained model: its record, as OpenLTH evaluates each
      level before pruning it; ``trainables.records.measured_before_event``), then
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

    def event(self, epoch: int, model: torch.nn.Module, masks: MaskSet) -> dict[str, int]:
        """Apply epoch `epoch`'s event; returns {layer: weights masked by it}.

        ``prune``: the weights newly masked (all 0 for extended_dense, which is then no pruning
        event). ``reinit`` (sparse_from_start): every weight the re-applied final mask holds at 0,
        so the transition is recorded as an event and "best after the last event" covers only the
        control phase; its instability compares the trained model with the masked initialisation.
        """
        kind = self.plan.event_kind(epoch)
        names = self.layers or list(masks.layers)
        if kind == "prune":
            alive = sum(int(masks.alive(n).sum()) for n in names)
            k = count_of(alive, self.plan.fraction)
            generator = torch.Generator()  # unused: magnitude/smallest draws nothing
            return masks.remove(masks.select_jointly(names, k, "magnitude", "smallest", generator))
        if kind == "reinit":
            self._load("init", model, masks)
            return {name: int((~masks.alive(name)).sum()) for name in names}
        raise ValueError(f"epoch {epoch} has no IMP event")

    def start_round(
        self, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, masks: MaskSet
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

    def _load(self, key: str, model: torch.nn.Module, masks: MaskSet) -> None:
        if key not in self.saved:
            raise RuntimeError(f"IMP: no saved {key!r} model state to rewind to")
        model.load_state_dict(self.saved[key])
        masks.apply_()  # the saved state predates the mask: zero the pruned weights


def _copy_state(model: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}

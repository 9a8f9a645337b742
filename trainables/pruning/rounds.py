"""The calendar of an IMP trial (pure; no torch): rounds, events, rewinds, the replayed LR.

Round 0 trains the dense model for T = ``train.epochs`` epochs; after the last epoch of round
r < R (R = ``pruning.imp.rounds``) an event prunes, and round r + 1 begins with a rewind: ``lr``
rewinding replays the whole LR schedule for T epochs; ``weight`` rewinding trains the schedule's
epochs ``rewind_epoch .. T-1``. The ``sparse_from_start`` control adds one more phase of T epochs
(``imp_round`` R + 1). Epochs are numbered globally across rounds. The stateful part (saved model
states, the events themselves) is :mod:`trainables.pruning.imp`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def lr_at(schedule_epoch: int, lr: float, milestones: tuple[int, ...], gamma: float) -> float:
    """The MultiStepLR learning rate used to train schedule epoch ``schedule_epoch`` (0-based)."""
    return lr * gamma ** sum(1 for m in milestones if m <= schedule_epoch)


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
    def of(cls, cfg: Any) -> ImpPlan:
        """The plan of a validated ``TrialConfig`` with ``pruning.method: imp``."""
        imp, t = cfg.pruning.imp, cfg.train.epochs
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


def total_epochs(cfg: Any) -> int:
    """Epochs a (validated) ``TrialConfig`` runs: ``train.epochs``, or the IMP plan's total."""
    if cfg.pruning.method == "imp":
        return ImpPlan.of(cfg).total_epochs
    return cfg.train.epochs

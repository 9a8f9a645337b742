"""Loop adapters for the papers' mechanisms: thin :class:`trainables.hooks.Hooks` over the science.

The science lives in :mod:`trainables.pruning.perturbation`, :mod:`trainables.pruning.imp`,
:mod:`trainables.flatness` and :mod:`trainables.per_example`; this module only wires it into the
epoch of :class:`trainables.loop.TrialRunner` (``loop.METHODS`` / ``loop.EXTENSIONS`` import it
lazily, since it builds on the loop's classes):

- :class:`PerturbationPruning` (``pruning.method: schedule`` with ``perturbation.mode`` zeroing or
  gaussian): the schedule chooses units; they are perturbed, never removed (sparsity stays 0).
- :class:`ImpPruning` (``pruning.method: imp``): rounds, global magnitude events, LR / weight
  rewinding, the controls; every record gets ``imp_round``.
- :class:`FlatnessProbe` (``flatness.epochs``): the flatness keys of those epochs' records.
- :class:`PerExampleLossProbe` (``per_example_loss: true``): float16 per-example training losses.

Each is checkpointed through its ``state_dict`` (``trainables.state``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from trainables.augment import derived_generator
from trainables.config import flatness_top_k
from trainables.errors import UserError
from trainables.flatness import flatness_subset, measure_flatness
from trainables.hooks import Extension, PruningMethod
from trainables.loop import SchedulePruning, TrialRunner
from trainables.per_example import loss_file_name, per_example_loss, save_loss_file
from trainables.pruning.imp import Imp, ImpPlan
from trainables.pruning.masks import MaskSet
from trainables.pruning.perturbation import Perturbation

__all__ = [
    "schedule_method",
    "PerturbationPruning",
    "ImpPruning",
    "FlatnessProbe",
    "PerExampleLossProbe",
]


def schedule_method(runner: TrialRunner) -> PruningMethod:
    """``pruning.method: schedule``: removal, or re-entry / noise when a perturbation mode is set."""
    if runner.cfg.pruning.perturbation.mode == "none":
        return SchedulePruning(runner)
    return PerturbationPruning(runner)


class PerturbationPruning(SchedulePruning):
    """Schedule-chosen units perturbed for ``perturbation.steps`` training steps, then re-entry."""

    def __init__(self, runner: TrialRunner):
        super().__init__(runner)
        p = self.cfg.pruning
        if p.granularity != "filter":
            raise UserError(
                "pruning.granularity: perturbation modes act on whole units (the official code's "
                f"filters); set granularity: filter, got {p.granularity!r}"
            )
        seed = derived_generator(self.cfg.seed, "perturbation").initial_seed()
        model = runner.model
        self.perturbation = Perturbation(
            p.perturbation, model.prunable_layers(), model.following_bn(), seed
        )

    def event(self, runner: TrialRunner, epoch: int) -> dict[str, int] | None:
        units = self.plan.units_at(epoch)
        if not units:
            return None
        p = self.cfg.pruning
        chosen = self.perturbation.choose(
            units, score=p.score, target=p.target, generator=runner.loop.generators["targets"]
        )
        self.perturbation.on_event(chosen)
        return {name: int(c.sum()) for name, c in chosen.items()}

    def before_step(self, runner: TrialRunner) -> None:
        self.perturbation.before_step()

    def after_step(self, runner: TrialRunner) -> None:
        self.perturbation.after_step()

    def state_dict(self) -> dict[str, Any]:
        return {"perturbation": self.perturbation.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.perturbation.load_state_dict(state["perturbation"])


class ImpPruning(PruningMethod):
    """IMP rounds of T = ``train.epochs`` epochs (:mod:`trainables.pruning.imp` has the rules).

    IMP is unstructured whatever ``pruning.granularity`` says: the runner's masks are replaced by
    weight masks over the prunable layers (``pruning.layers`` names, when given, restrict the
    set). ``pruning.score``, ``target``, ``scope`` and ``period`` do not apply. The LR of every epoch
    is the replayed schedule's (set in ``begin_epoch``; the runner's MultiStepLR is overridden).
    """

    def __init__(self, runner: TrialRunner):
        super().__init__(runner)
        try:
            self.plan = ImpPlan.of(self.cfg)
        except ValueError as e:
            raise UserError(str(e)) from None
        if runner.masks.granularity != "weight":
            runner.masks = MaskSet(runner.model, "weight")
        names = [ls.name for ls in self.cfg.pruning.layers] or None
        unknown = sorted(set(names or ()) - set(runner.masks.layers))
        if unknown:
            valid = ", ".join(runner.masks.layers)
            raise UserError(
                f"pruning.layers: unknown prunable layer {unknown[0]!r}; choose one of: {valid}"
            )
        t = self.cfg.train
        self.imp = Imp(self.plan, t.lr, t.milestones, t.gamma, layers=names)

    def num_epochs(self) -> int:
        return self.plan.total_epochs

    def begin_epoch(self, runner: TrialRunner, epoch: int) -> None:
        self.imp.before_epoch(epoch, runner.model)
        for group in runner.optimizer.param_groups:
            group["lr"] = self.imp.lr(epoch)

    def event(self, runner: TrialRunner, epoch: int) -> dict[str, int] | None:
        if self.plan.event_kind(epoch) is None:
            return None
        return self.imp.event(epoch, runner.model, runner.masks)

    def end_epoch(self, runner: TrialRunner, record: dict[str, Any]) -> None:
        epoch = record["epoch"]
        record["imp_round"] = self.plan.locate(epoch)[0]
        if self.plan.event_kind(epoch) is not None and epoch + 1 < self.plan.total_epochs:
            self.imp.start_round(epoch + 1, runner.model, runner.optimizer, runner.masks)

    def state_dict(self) -> dict[str, Any]:
        return self.imp.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.imp.load_state_dict(state)


def live_parameter_masks(runner: TrialRunner) -> dict[str, Tensor] | None:
    """{parameter name: 0/1 float mask} of the pruned parameters, or None when nothing is pruned."""
    masks = runner.masks
    if masks.pruned_weights == 0:
        return None
    names = {id(p): n for n, p in runner.model.named_parameters()}
    out: dict[str, Tensor] = {}
    for layer_name, layer in masks.layers.items():
        alive = masks.alive(layer_name)
        w = layer.weight
        if masks.granularity == "weight":
            out[names[id(w)]] = alive.to(w.dtype)
            continue
        unit = alive.to(w.dtype)
        out[names[id(w)]] = unit.view(-1, *([1] * (w.dim() - 1))).expand_as(w)
        bn = masks.bns.get(layer_name)
        for param in (getattr(layer, "bias", None), *((bn.weight, bn.bias) if bn else ())):
            if param is not None:
                out[names[id(param)]] = unit
    return out


class FlatnessProbe(Extension):
    """Measures :func:`trainables.flatness.measure_flatness` at ``flatness.epochs``.

    In eval mode right after ``acc_before`` (before the epoch's event), on the first
    ``flatness.subset_size`` examples of ``flatness.split`` (train: against the labels trained
    on), restricted to unpruned parameters; seeded by the trial seed.
    """

    def __init__(self, runner: TrialRunner):
        cfg = runner.cfg.flatness
        late = [e for e in cfg.epochs if not 0 <= e < runner.num_epochs]
        if late:
            raise UserError(
                f"flatness.epochs: {late[0]} is outside the trial's epochs 0..{runner.num_epochs - 1}"
            )
        self.epochs = set(cfg.epochs)
        data = runner.data
        x, y = (data.x_test, data.y_test) if cfg.split == "test" else (data.x_train, data.y_train)
        idx = flatness_subset(y.shape[0], cfg.subset_size).to(y.device)
        self.x, self.y = x[idx], y[idx]

    @classmethod
    def for_runner(cls, runner: TrialRunner) -> FlatnessProbe | None:
        return cls(runner) if runner.cfg.flatness.epochs else None

    def before_event(self, runner: TrialRunner, record: dict[str, Any]) -> None:
        if record["epoch"] not in self.epochs:
            return
        values = measure_flatness(
            runner.model,
            self.x,
            self.y,
            dataclasses.replace(runner.cfg.flatness, top_k=flatness_top_k(runner.cfg)),
            masks=live_parameter_masks(runner),
            seed=runner.cfg.seed,
        )
        record.update(values)


class PerExampleLossProbe(Extension):
    """Per-example training loss at IMP round ends, or at flatness epochs and the final epoch.

    The arrays stay in this extension's state (float16 CPU tensors) so every checkpoint written
    afterwards holds all of them as ``.npy`` files (:meth:`write_files`); the record's
    ``per_example_loss_file`` is the path relative to the checkpoint directory.
    """

    def __init__(self, epochs: set[int], rounds: dict[int, int] | None):
        self.epochs = epochs
        self.rounds = rounds
        self.losses: dict[str, Tensor] = {}

    @classmethod
    def for_runner(cls, runner: TrialRunner) -> PerExampleLossProbe | None:
        if not runner.cfg.per_example_loss:
            return None
        if isinstance(runner.method, ImpPruning):
            plan = runner.method.plan
            ends = plan.round_end_epochs
            return cls(set(ends), {e: plan.locate(e)[0] for e in ends})
        return cls(set(runner.cfg.flatness.epochs) | {runner.num_epochs - 1}, None)

    def before_event(self, runner: TrialRunner, record: dict[str, Any]) -> None:
        epoch = record["epoch"]
        if epoch not in self.epochs:
            return
        name = loss_file_name(epoch, None if self.rounds is None else self.rounds[epoch])
        data = runner.data
        values = per_example_loss(
            runner.model, data.x_train, data.y_train, runner.cfg.train.eval_batch_size
        )
        self.losses[name] = torch.from_numpy(values)
        record["per_example_loss_file"] = name

    def write_files(self, directory) -> None:
        """Write every measurement so far into the checkpoint directory `directory`."""
        for name, values in self.losses.items():
            save_loss_file(directory, name, values.numpy())

    def state_dict(self) -> dict[str, Any]:
        return {"losses": {k: v.clone() for k, v in self.losses.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.losses = {k: v.clone() for k, v in state["losses"].items()}

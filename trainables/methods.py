"""The pruning methods: what ``pruning.method`` does after an epoch's training.

Each is a :class:`trainables.hooks.PruningMethod` over the science in :mod:`trainables.pruning`:

- ``none``: the unpruned baseline (the base class itself);
- ``schedule``: per-layer linear schedules (:class:`SchedulePruning`), or, with a perturbation
  mode, re-entry / noise injection on the scheduled units (:class:`PerturbationPruning`) or the
  noise runs' conv-only Prune_L (:class:`ConvMaskPruning`);
- ``imp``: iterative magnitude pruning with rewinding and its controls (:class:`ImpPruning`).

Every method records the pruning rate and the number of events on every epoch (the derived
schedule facts the aggregator reads); each checkpoints through its ``state_dict``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from trainables.augment import derived_generator
from trainables.errors import UserError
from trainables.hooks import PruningMethod
from trainables.models import schedule_layers
from trainables.pruning import scores
from trainables.pruning.imp import Imp
from trainables.pruning.perturbation import Perturbation, official_passes_for_steps
from trainables.pruning.rounds import ImpPlan
from trainables.pruning.schedule import plan_schedule, schedule_summary

if TYPE_CHECKING:
    from trainables.loop import TrialRunner


class Unpruned(PruningMethod):
    """``pruning.method: none``: no event; pruning rate 0, no events."""

    def end_epoch(self, runner: TrialRunner, record: dict[str, Any]) -> None:
        record.update(pruning_rate=0.0, num_events=0)


class SchedulePruning(PruningMethod):
    """Per-layer linear schedules (``pruning.layers``, or the model's paper default when empty;
    the model rules, ``trainables.models.rules``, checked the names when the config was validated).

    A tracked score (``activations``: ``scores.TRACKED_SCORES``) gets its tracker here, over the
    scheduled layers, watching every training pass from the first; its state is this method's
    checkpoint. With ``pruning.scratch`` the schedule's one event is at epoch 0, which the loop
    does not train (:meth:`trains`).
    """

    def __init__(self, runner: TrialRunner):
        super().__init__(runner)
        p, m = self.cfg.pruning, self.cfg.model
        layers = schedule_layers(p.layers, m.name, m.width, self.cfg.dataset.name)
        try:
            self.plan = plan_schedule(layers, runner.masks.n_units, p.period)
        except ValueError as e:
            raise UserError(str(e)) from None
        names = [lp.name for lp in self.plan.layers]
        self.tracker = scores.make_tracker(p.score, runner.model, names)
        self.pruned_score: float | None = None  # set by event, recorded by end_epoch
        summary = schedule_summary(layers, p.period)
        self.derived = {
            "pruning_rate": summary["pruning_rate"],
            "num_events": summary["num_events"],
        }

    def end_epoch(self, runner: TrialRunner, record: dict[str, Any]) -> None:
        record.update(self.derived)
        if record["is_event"]:  # scored at this epoch's event (scores.event_score)
            record["pruned_score"] = self.pruned_score
        self.pruned_score = None

    def event(self, runner: TrialRunner, epoch: int) -> dict[str, int] | None:
        units = self.plan.units_at(epoch)
        if not units:
            return None
        p = self.cfg.pruning
        chosen = runner.masks.select(
            units,
            score=p.score,
            target=p.target,
            scope=p.scope,
            generator=runner.loop.generators["targets"],
            tracker=self.tracker,
        )
        self.pruned_score = runner.masks.chosen_score(chosen, p.score, self.tracker)
        removed = runner.masks.remove(chosen)
        runner.masks.zero_optimizer_state(runner.optimizer)
        return removed

    def trains(self, epoch: int) -> bool:
        return not (self.cfg.pruning.scratch and epoch == 0)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.tracker is None else {"tracker": self.tracker.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.tracker is not None:
            self.tracker.load_state_dict(state["tracker"])


class PerturbationPruning(SchedulePruning):
    """Schedule-chosen units perturbed in per-layer windows, then re-entry
    (:mod:`trainables.pruning.perturbation` has the rules and the pass sequence).

    With ``eval_passes: official`` every window lasts N + 1 passes, N the official pass count of
    ``perturbation.steps`` at this run's E = ceil(test examples / eval batch) and B =
    ceil(training examples / batch); while a window is open, or when one closed inside the
    pre-event evaluation, epochs without an event evaluate the test set a second time (``event``
    returns ``{}``) and record that as ``test_acc``, as the official code always did.
    Records ``windows_closed`` on the epochs where windows close (open ones at the last epoch).
    """

    def __init__(self, runner: TrialRunner):
        super().__init__(runner)
        seed = derived_generator(self.cfg.seed, "perturbation").initial_seed()
        model, cfg = runner.model, self.cfg
        passes = None
        if cfg.pruning.perturbation.eval_passes == "official":
            data = runner.data
            e = math.ceil(data.y_test.numel() / cfg.train.eval_batch_size)
            b = math.ceil(data.y_train.numel() / cfg.train.batch_size)
            passes = official_passes_for_steps(cfg.pruning.perturbation.steps, e, b)
        self.perturbation = Perturbation(
            cfg.pruning.perturbation, model.prunable_layers(), model.following_bn(), seed, passes
        )

    def event(self, runner: TrialRunner, epoch: int) -> dict[str, int] | None:
        units = self.plan.units_at(epoch)
        if not units:
            return {} if self.perturbation.needs_second_evaluation() else None
        p = self.cfg.pruning
        chosen = self.perturbation.choose(
            units, score=p.score, target=p.target, generator=runner.loop.generators["targets"]
        )
        self.pruned_score = self.perturbation.chosen_score(chosen, p.score)
        self.perturbation.on_event(epoch, chosen)
        return {name: int(c.sum()) for name, c in chosen.items()}

    def before_step(self, runner: TrialRunner) -> None:
        self.perturbation.before_step()

    def after_step(self, runner: TrialRunner) -> None:
        self.perturbation.after_step()

    def before_eval_batch(self, runner: TrialRunner) -> None:
        self.perturbation.before_eval_batch()

    def end_epoch(self, runner: TrialRunner, record: dict[str, Any]) -> None:
        super().end_epoch(runner, record)
        if record["epoch"] + 1 >= self.num_epochs():
            self.perturbation.end_trial()
        record["windows_closed"] = self.perturbation.take_closed() or None

    def state_dict(self) -> dict[str, Any]:
        return {"perturbation": self.perturbation.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.perturbation.load_state_dict(state["perturbation"])


class ConvMaskPruning(SchedulePruning):
    """``perturbation.mode: conv_mask``: the Prune_L reference of the official noise runs (F5_0).

    With a noise setting the official ``models.py::_make_conv_prunable`` keeps the masked conv
    forward (``weight * mask``, the conv bias unmasked) but neither masks the following
    BatchNorm nor zeroes the weights, so a removed channel emits its conv bias through BN (about
    ReLU(beta) once the running statistics settle) instead of exactly 0. Here the masks cover the
    layers' weight rows only (:meth:`mask_weights_only`); everything else is schedule pruning.
    """

    @classmethod
    def mask_weights_only(cls, cfg: Any) -> bool:
        return True


class ImpPruning(PruningMethod):
    """IMP rounds of T = ``train.epochs`` epochs (:mod:`trainables.pruning.imp` has the rules).

    IMP is unstructured whatever ``pruning.granularity`` says (:meth:`mask_granularity`): the
    runner's masks are weight masks over the prunable layers (``pruning.layers`` names, when given,
    restrict the set). ``pruning.score``, ``target``, ``scope`` and ``period`` do not apply. The LR
    of every epoch is the replayed schedule's (set in ``begin_epoch``, overriding the runner's
    MultiStepLR).
    """

    def __init__(self, runner: TrialRunner):
        super().__init__(runner)
        self.plan = ImpPlan.of(self.cfg)
        names = [ls.name for ls in self.cfg.pruning.layers] or None
        t = self.cfg.train
        self.imp = Imp(self.plan, t.lr, t.milestones, t.gamma, layers=names)
        rate = 100.0 * self.cfg.pruning.imp.fraction  # the configured rate, controls included
        self.derived = {"pruning_rate": rate, "num_events": self.plan.rounds}

    @classmethod
    def mask_granularity(cls, cfg: Any) -> str:
        return "weight"

    def num_epochs(self) -> int:
        return self.plan.total_epochs

    def level_ends(self) -> dict[int, int]:
        return {e: self.plan.locate(e)[0] for e in self.plan.round_end_epochs}

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
        record.update(self.derived, imp_round=self.plan.locate(epoch)[0])
        if self.plan.event_kind(epoch) is not None and epoch + 1 < self.plan.total_epochs:
            self.imp.start_round(epoch + 1, runner.model, runner.optimizer, runner.masks)

    def state_dict(self) -> dict[str, Any]:
        return self.imp.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.imp.load_state_dict(state)


# The dispatch point: one class per `pruning.method`; a perturbation mode turns schedule pruning
# into re-entry / noise injection on the same schedule.
METHODS: dict[str, type[PruningMethod]] = {
    "none": Unpruned,
    "schedule": SchedulePruning,
    "imp": ImpPruning,
}


def method_class(cfg: Any) -> type[PruningMethod]:
    """The method class of a trial config (UserError listing the valid names on a miss)."""
    name = cfg.pruning.method
    if name not in METHODS:
        raise UserError(f"pruning.method: unknown {name!r}; choose one of: {', '.join(METHODS)}")
    if name == "schedule" and cfg.pruning.perturbation.mode == "conv_mask":
        return ConvMaskPruning
    if name == "schedule" and cfg.pruning.perturbation.mode != "none":
        return PerturbationPruning
    return METHODS[name]

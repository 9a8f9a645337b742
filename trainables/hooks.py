"""The loop's extension interfaces: what a pruning method or a feature may hook into.

:class:`trainables.loop.TrialRunner` calls every hook of its pruning method and its extensions at
fixed points of the epoch (see that module); a hook left as the no-op default costs nothing in
the per-step loop (:func:`overrides`). The dependency is one-way: this module <- the methods
(:mod:`trainables.methods`) and extensions (:mod:`trainables.extensions`) <- the loop. A method or
extension talks to the runner through its public attributes and these hooks only; what one needs
from another (e.g. the epochs that end a sparsity level) is a hook here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainables.loop import TrialRunner


class Hooks:
    """The points where methods and extensions act; every hook is a no-op by default.

    Per-step hooks are called only on objects whose class overrides them, so an unused seam
    costs nothing in the training loop.
    """

    def begin_epoch(self, runner: TrialRunner, epoch: int) -> None:
        """Before `epoch`'s training (e.g. set the LR of a replayed schedule, save a rewind point)."""

    def before_step(self, runner: TrialRunner) -> None:
        """Before each training step's forward pass."""

    def after_step(self, runner: TrialRunner) -> None:
        """After each ``optimizer.step()`` and the masks' re-zeroing."""

    def before_eval_batch(self, runner: TrialRunner) -> None:
        """Before each batch's forward pass of the test-set evaluations around the event (the one
        giving ``acc_before`` and the one giving ``acc_after`` / ``test_acc``); never on the
        validation split, the noisy-label accuracies or a probe's own forward passes."""

    def before_event(self, runner: TrialRunner, record: dict[str, Any]) -> None:
        """Eval mode, right after ``acc_before`` and before the event (flatness is measured here)."""

    def end_epoch(self, runner: TrialRunner, record: dict[str, Any]) -> None:
        """After the LR step; may add keys to `record` (e.g. ``imp_round``)."""

    def write_files(self, directory: str) -> None:
        """Write side files (e.g. per-example losses) into a checkpoint directory being saved."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class PruningMethod(Hooks):
    """What `pruning.method` decides; this base class is the unpruned baseline (``none``)."""

    def __init__(self, runner: TrialRunner):
        self.cfg = runner.cfg

    @classmethod
    def mask_granularity(cls, cfg: Any) -> str:
        """The granularity of the runner's masks (built before the method): ``pruning.granularity``
        unless the method prunes otherwise (IMP is always unstructured)."""
        return cfg.pruning.granularity

    @classmethod
    def mask_weights_only(cls, cfg: Any) -> bool:
        """True when a removed unit's mask covers only its layer's weight rows (bias, following
        BatchNorm and shortcut left alone: the official noise runs' Prune_L reference)."""
        return False

    def level_ends(self) -> dict[int, int] | None:
        """{epoch: level} of the epochs that end a sparsity level (IMP: every round's last epoch,
        the model OpenLTH evaluates per level); None when the method has no levels."""
        return None

    def num_epochs(self) -> int:
        """Total epochs the trial runs."""
        return self.cfg.train.epochs

    def trains(self, epoch: int) -> bool:
        """Whether `epoch` trains. False (scratch pruning's epoch 0, as the official
        ``experiments.py::main``): no training and no LR step that epoch; its evaluations and
        its event run as usual."""
        return True

    def event(self, runner: TrialRunner, epoch: int) -> dict[str, int] | None:
        """Act after `epoch`'s training, in eval mode, after ``acc_before``.

        Returns None when the model was not changed (the test set is evaluated once); else
        {layer: units removed or targeted}: the test set is evaluated again (``acc_after``, the
        epoch's ``test_acc`` unless the record measures the model before the event:
        ``trainables.records.measured_before_event``), and it is a pruning event when some count
        is > 0. An empty dict
        asks for that second evaluation without an event (a perturbation window that counts
        evaluation passes, as the official code evaluated twice every epoch).
        """
        return None


class Extension(Hooks):
    """A feature that plugs into the epoch through :class:`Hooks` (flatness, perturbation)."""


def overrides(obj: Hooks, hook: str) -> bool:
    return getattr(type(obj), hook) is not getattr(Hooks, hook)

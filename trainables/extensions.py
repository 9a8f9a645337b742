"""Loop extensions: features that plug into the epoch through :class:`trainables.hooks.Hooks`.

- :class:`FlatnessProbe` (``flatness.epochs``): the flatness keys of those epochs' records.
- :class:`PerExampleLossProbe` (``per_example_loss: true``): float16 per-example training losses.

Each factory in :data:`EXTENSIONS` returns the extension, or None when the trial does not use it;
each is checkpointed through its ``state_dict`` (``trainables.state``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from trainables.errors import UserError
from trainables.flatness import flatness_subset, measure_flatness
from trainables.hooks import Extension
from trainables.models import flatness_top_k
from trainables.per_example import loss_file_name, per_example_loss, save_loss_file

if TYPE_CHECKING:
    from trainables.loop import TrialRunner


class FlatnessProbe(Extension):
    """Measures :func:`trainables.flatness.measure_flatness` at ``flatness.epochs``.

    In eval mode right after ``acc_before`` (before the epoch's event), restricted to unpruned
    parameters, seeded by the trial seed: the Hessian and Tr(C) on the first
    ``flatness.subset_size`` examples of ``flatness.split`` (train: against the labels trained on),
    epsilon-flatness on the whole split.
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
        self.eval_x, self.eval_y = x, y  # epsilon-flatness: the whole split, as the official code
        self.cfg = dataclasses.replace(cfg, top_k=flatness_top_k(runner.cfg.model.name, cfg.top_k))

    @classmethod
    def for_runner(cls, runner: TrialRunner) -> FlatnessProbe | None:
        return cls(runner) if runner.cfg.flatness.epochs else None

    def before_event(self, runner: TrialRunner, record: dict[str, Any]) -> None:
        if record["epoch"] not in self.epochs:
            return
        masks = runner.masks.parameter_masks(runner.model)
        values = measure_flatness(
            runner.model,
            self.x,
            self.y,
            self.cfg,
            masks=masks,
            seed=runner.cfg.seed,
            eval_x=self.eval_x,
            eval_y=self.eval_y,
        )
        record.update(values)


class PerExampleLossProbe(Extension):
    """Per-example training loss at the ends of sparsity levels (IMP rounds), or else at the
    flatness epochs and the final epoch.

    The arrays stay in this extension's state (float16 CPU tensors) so every checkpoint written
    afterwards holds all of them as ``.npy`` files (:meth:`write_files`); the record's
    ``per_example_loss_file`` is the path relative to the checkpoint directory.
    """

    def __init__(self, epochs: set[int], levels: dict[int, int] | None):
        self.epochs = epochs
        self.levels = levels
        self.losses: dict[str, Tensor] = {}

    @classmethod
    def for_runner(cls, runner: TrialRunner) -> PerExampleLossProbe | None:
        if not runner.cfg.per_example_loss:
            return None
        levels = runner.method.level_ends()
        if levels is not None:
            return cls(set(levels), levels)
        return cls(set(runner.cfg.flatness.epochs) | {runner.num_epochs - 1}, None)

    def before_event(self, runner: TrialRunner, record: dict[str, Any]) -> None:
        epoch = record["epoch"]
        if epoch not in self.epochs:
            return
        name = loss_file_name(epoch, None if self.levels is None else self.levels[epoch])
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


# Extension factories by name: each returns an Extension, or None when the trial does not use it.
EXTENSIONS: dict[str, Callable[[TrialRunner], Extension | None]] = {
    "flatness": FlatnessProbe.for_runner,
    "per_example_loss": PerExampleLossProbe.for_runner,
}

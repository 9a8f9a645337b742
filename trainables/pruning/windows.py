"""Per-layer perturbation windows: the pass bookkeeping of re-entry / noise injection (no torch).

The official rule (github.com/bbartoldson/GeneralizationStabilityTradeoff, ``models.py``): every
prunable conv has its own counter ``batches_since_targeting``. ``_prune_layer`` sets it to 0 when
an event targets units of that layer (k > 0); ``_noisy_conv_forward`` then, on every forward pass
through the layer while the counter is ``<= N``, first increments it and then perturbs. So a
window lasts N + 1 forward passes, training and test batches alike, and only the layer's own next
event cuts it short (by resetting the counter); other layers' events never touch it.

A :class:`Window` counts the passes one layer's window has perturbed and how many it may still
perturb (its *budget*); :class:`Windows` holds the open windows by layer and the closes not yet
reported. What a pass does to the weights is :mod:`trainables.pruning.perturbation`.

The official legends name a window by the training batches it perturbed, which
``figures_and_tables/utils.py::calc_n_batches_of_training_noise`` computes from N
(:func:`official_passes_to_training_steps`); :func:`official_passes_for_steps` inverts it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = [
    "CLOSED_BY",
    "PassKind",
    "Window",
    "Windows",
    "official_passes_for_steps",
    "official_passes_to_training_steps",
]

PassKind = Literal["train", "eval"]
# Why a window ended: its budget ran out, the layer's own next event reset it, or the trial ended.
CLOSED_BY: tuple[str, ...] = ("duration", "own_event", "trial_end")


def official_passes_to_training_steps(
    passes: int, eval_batches: int, batches_per_epoch: int = 391
) -> int:
    """Training batches the official window ``N = passes`` is named after (its legend number).

    Args:
        passes: N, the ``<N>`` of the official noise string (``iter_129_gaussian``).
        eval_batches: E, test batches per evaluation (79 at test batch 128, 40 at 256 on CIFAR-10).
        batches_per_epoch: B, training batches per epoch (391 = CIFAR-10 at batch 128).

    As ``calc_n_batches_of_training_noise``: N passes are spent on one evaluation (the post-event
    test), then per epoch up to B training batches followed by two evaluations. The window really
    perturbs N + 1 passes; the legend counts the first N (so "1" for N = 0 is the one test pass).
    """
    if min(passes, eval_batches, batches_per_epoch - 1) < 0:
        raise ValueError("passes and eval_batches must be >= 0, batches_per_epoch >= 1")
    left = passes - eval_batches
    steps = 0
    while left > 0:
        steps += min(left, batches_per_epoch)
        left -= batches_per_epoch + 2 * eval_batches
    return steps


def official_passes_for_steps(steps: int, eval_batches: int, batches_per_epoch: int) -> int:
    """The smallest N with ``official_passes_to_training_steps(N, E, B) == steps`` (0 for 0 steps).

    It exists and is unique for every steps >= 0: the conversion starts at 0 and grows by at most
    one per pass. For steps > 0, N is the position of the steps-th training batch in the pass
    sequence E eval, B train, 2E eval, B train, ... (e.g. 50 -> 129 and 1105 -> 1500 at E = 79,
    2480 -> 3000 at E = 40, B = 391: the official configurations).
    """
    if steps < 0 or eval_batches < 0 or batches_per_epoch < 1:
        raise ValueError("steps and eval_batches must be >= 0, batches_per_epoch >= 1")
    if steps == 0:
        return 0
    epochs, within = divmod(steps - 1, batches_per_epoch)
    return eval_batches + epochs * (batches_per_epoch + 2 * eval_batches) + within + 1


@dataclass
class Window:
    """One layer's open window: the passes it perturbed so far and the ones it may still perturb.

    ``train`` / ``eval``: passes perturbed on training batches / on test-evaluation batches;
    ``budget``: passes left (0 = spent).
    """

    layer: str
    event_epoch: int
    budget: int
    train: int = 0
    eval: int = 0

    def count(self, kind: PassKind) -> bool:
        """Count one perturbed pass; True when that spent the budget."""
        if self.budget < 1:
            raise AssertionError(f"window of {self.layer!r} counted past its budget")
        if kind == "train":
            self.train += 1
        else:
            self.eval += 1
        self.budget -= 1
        return self.budget == 0

    def report(self, closed_by: str) -> dict[str, Any]:
        """The ``windows_closed`` record entry (``trainables.records.WINDOWS``)."""
        return {
            "layer": self.layer,
            "event_epoch": self.event_epoch,
            "window_steps": self.train,
            "closed_by": closed_by,
            "noise_draws_train": self.train,
            "noise_draws_eval": self.eval,
        }


class Windows:
    """The open windows by layer, in the model's layer order, and the closes not yet reported."""

    def __init__(self, order: list[str]):
        self.order = list(order)
        self.open: dict[str, Window] = {}
        self.closed: list[dict[str, Any]] = []

    def layers(self) -> list[str]:
        """Layers with an open window, in the model's layer order (the order passes reach them)."""
        return [name for name in self.order if name in self.open]

    def start(self, layer: str, event_epoch: int, budget: int) -> Window:
        if layer in self.open:
            raise AssertionError(f"layer {layer!r} already has an open window")
        self.open[layer] = Window(layer, event_epoch, budget)
        return self.open[layer]

    def close(self, layer: str, closed_by: str) -> None:
        if closed_by not in CLOSED_BY:
            raise AssertionError(f"unknown closed_by {closed_by!r}")
        self.closed.append(self.open.pop(layer).report(closed_by))

    def take_closed(self) -> list[dict[str, Any]]:
        """The closes since the last call, in the order they happened (and forget them)."""
        out, self.closed = self.closed, []
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"open": [asdict(w) for w in self.open.values()], "closed": list(self.closed)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.open = {w["layer"]: Window(**w) for w in state["open"]}
        self.closed = [dict(c) for c in state["closed"]]

"""Re-entry and noise injection (Bartoldson et al. 2020, Fig. 5 and Fig. D2) instead of removal.

The pruning schedule, score and target choose units exactly as for pruning (each unit is targeted
at most once: scores rank only still-untargeted units, :meth:`Perturbation.alive`). Instead of
being removed, the units a layer's event targets are perturbed during that layer's *window*, then
train freely again (re-entry): the parameter count never drops and sparsity stays 0.

Windows are per layer, as the official code's per-layer counter (:mod:`trainables.pruning.windows`
has the bookkeeping): an event that targets units of a layer (k > 0) opens that layer's window;
its units are the ones targeted now (``iter``, official ``newly_pruned``) or every unit of *that
layer* targeted so far (``cumulative``, official ``~mask``). The window ends when its budget of
passes is spent (``duration``), at that layer's own next event (``own_event``: the new event
opens a new window; the old one is not restored, as the official counter reset leaves it), or
with the trial (``trial_end``). Other layers' events never end it, so windows of different layers
overlap.

A *pass* perturbs every open window's units, in the model's layer order, right before a forward
pass (official ``models.py::_noisy_conv_forward``; rows of the layer's ``weight``, i.e. conv output
channels or linear rows; the conv bias is never touched):

- ``zeroing``: the units' weights are set to 0 (official ``w[targeted] *= 0``); with ``restore``
  also the following BatchNorm's gamma and beta (official ``_restore`` runs), so the channel
  outputs exactly 0. Updates made by a training step are wiped by the next pass's zeroing; without
  ``restore`` the update after a window's last pass stays, as officially.
- ``gaussian``: one ``N(0, sigma^2)`` draw per weight is added (official
  ``w[targeted] += Normal(0, sigma).sample()``), so noise accumulates over passes. sigma is
  recomputed at each pass as the official code does: the unbiased std (``Tensor.std``) of the
  layer's *first still-untargeted unit* (``w[mask.bool()][0].std()``); when every unit has been
  targeted we fall back to the whole layer's weights.

With ``restore`` a window saves its units' weights and the following BN's gamma, beta, running
mean and running var when it opens, and copies them back exactly when its budget is spent (a
window cut by its own layer's next event or by the trial's end is not restored, as officially).
Without ``restore`` the BN is never touched. Residual shortcut masks are never touched.

Which passes count (``PerturbationConfig.eval_passes``):

- ``official``: the window's budget is N + 1 passes, N the official pass count whose legend number
  (:func:`~trainables.pruning.windows.official_passes_to_training_steps`) is ``steps``
  (:func:`~trainables.pruning.windows.official_passes_for_steps`, with this run's E test batches
  per evaluation and B training batches per epoch). Passes are every training batch and every
  batch of the two test-set evaluations of an epoch, in the official order: after an event, the
  post-event evaluation (E batches); then per epoch B training batches, the pre-event evaluation
  (E) and the post-event evaluation (E), the latter run on epochs without an event too while a
  window is open or when one closed inside the pre-event evaluation (the official code evaluated
  twice every epoch and logged the second as the test accuracy). A pass on which the budget runs
  out perturbs, then (``restore``) restores before its forward, as the official counter does.
  E.g. at E = 79, B = 391: "Zeroing 1" (steps 0, N = 0) perturbs only the first post-event test
  batch; "Gaussian 50" (N = 129) draws 130 times (79 test + 51 training batches); "Gaussian 1105"
  (N = 1500) 1501 times (395 + 1106).
- ``none``: evaluations are not passes. The window's budget is ``steps + 1``: one pass at the event
  (the whole post-event evaluation sees it) and one before each of the next ``steps`` training
  steps; the window ends (restoring if configured) right after the last of those steps' updates,
  or before the first training step when ``steps`` is 0.

Either way ``acc_after`` and the event's instability see the perturbation's initial effect.
Closed windows are reported (:meth:`Perturbation.take_closed`) with the passes they perturbed.

Randomness comes from a CPU ``torch.Generator`` seeded at construction; its state is part of
``state_dict`` so a run resumed in the middle of windows continues bit-for-bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from trainables.config import NOISE_MODES, PerturbationConfig
from trainables.pruning import scores
from trainables.pruning.windows import (
    PassKind,
    Windows,
    official_passes_for_steps,
    official_passes_to_training_steps,
)

__all__ = [
    "Perturbation",
    "first_alive_std",
    "official_passes_for_steps",
    "official_passes_to_training_steps",
]

_BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def first_alive_std(weight: Tensor, alive: Tensor) -> float:
    """Official sigma: std of the first still-untargeted unit's weights (whole layer if none).

    weight [out, ...], alive [out] bool. Unbiased std, as ``Tensor.std``.
    """
    rows = alive.nonzero().flatten()
    chosen = weight[rows[0]] if rows.numel() else weight
    return float(chosen.detach().float().std())


class Perturbation:
    """Zeroing or Gaussian noise on targeted units during per-layer windows, then re-entry.

    Args:
        cfg: the perturbation section (``mode`` zeroing or gaussian).
        layers / bns: the prunable layers and the BatchNorm after each, by name, in model order.
        seed: seeds the Gaussian draws.
        passes: the official N of every window (``eval_passes: official``), or None (``none``).

    The loop calls ``on_event`` after ``acc_before`` and before ``acc_after``; ``before_step`` /
    ``after_step`` around every training step; ``before_eval_batch`` before every batch of the
    two test-set evaluations. ``alive()`` gives the still-untargeted units.
    """

    def __init__(
        self,
        cfg: PerturbationConfig,
        layers: Mapping[str, nn.Module],
        bns: Mapping[str, nn.Module],
        seed: int,
        passes: int | None = None,
    ):
        if cfg.mode not in NOISE_MODES:
            raise ValueError(
                f"pruning.perturbation.mode: must be zeroing or gaussian, got {cfg.mode!r}"
            )
        self.cfg = cfg
        self.passes = passes
        self.layers = dict(layers)
        self.bns = {k: v for k, v in bns.items() if k in self.layers}
        self.generator = torch.Generator().manual_seed(seed)
        self.targeted = {
            name: torch.zeros(m.weight.shape[0], dtype=torch.bool)
            for name, m in self.layers.items()
        }
        self.windows = Windows(list(self.layers))
        self.units: dict[str, Tensor] = {}  # layer -> bool [out] (CPU): its window's units
        self.saved: dict[str, dict[str, Tensor]] = {}  # restore: layer -> originals
        # a window perturbed a test-evaluation pass since the last training step
        self._eval_perturbed = False

    # --- queries ------------------------------------------------------------------------------

    def alive(self) -> dict[str, Tensor]:
        """Layer -> bool [out] (CPU), True for units never targeted."""
        return {name: ~t for name, t in self.targeted.items()}

    def open_layers(self) -> list[str]:
        """Layers whose window is open, in model order."""
        return self.windows.layers()

    def needs_second_evaluation(self) -> bool:
        """``eval_passes: official`` on an epoch without an event: True when the post-event test
        evaluation must run (the official code ran it every epoch and logged it as the test
        accuracy): a window is open, or one perturbed a batch of the evaluation just run (the
        pre-event one) and closed inside it, leaving that evaluation partly perturbed."""
        return self.passes is not None and (bool(self.windows.open) or self._eval_perturbed)

    def choose(
        self, units: Mapping[str, int], *, score: str, target: str, generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Pick ``{layer: k}`` still-untargeted units by filter score and target (as pruning does).

        Returns {layer: bool [out] on the layer's device}; pass it to :meth:`on_event`.
        """
        chosen = {}
        for name, k in units.items():
            values = scores.unit_scores(score, self.layers[name], self.bns.get(name), "filter")
            alive = (~self.targeted[name]).to(values.device)
            chosen[name] = scores.select(values, alive, k, target, generator, ties="cutoff")
        return chosen

    def chosen_score(self, chosen: Mapping[str, Tensor], score: str) -> float:
        """:func:`scores.event_score` of the units `chosen` (as :meth:`choose` returns them)."""
        means = []
        for name, pick in chosen.items():
            if pick.any():
                values = scores.unit_scores(score, self.layers[name], self.bns.get(name), "filter")
                means.append(values[pick.to(values.device)].float().mean())
        return scores.event_score(means)

    # --- the loop's hooks ---------------------------------------------------------------------

    def on_event(self, epoch: int, newly: Mapping[str, Tensor]) -> None:
        """Open a window for each layer with units chosen at this event (epoch `epoch`).

        newly: layer -> bool [out] (any device) of units chosen now; they must be still alive. A
        layer with no unit chosen keeps its window as it is.
        """
        for name in newly:
            if name not in self.targeted:
                raise KeyError(
                    f"unknown perturbed layer {name!r}; known: {', '.join(self.targeted)}"
                )
        for name in self.layers:
            chosen = newly.get(name)
            if chosen is None or not chosen.any():
                continue
            chosen = chosen.detach().to("cpu", torch.bool)
            if (chosen & self.targeted[name]).any():
                raise ValueError(f"layer {name!r}: a unit was targeted twice")
            if name in self.windows.open:
                self._close(name, "own_event")
            self.targeted[name] |= chosen
            units = self.targeted[name] if self.cfg.variant == "cumulative" else chosen
            self._open(name, epoch, units.clone())

    def before_step(self) -> None:
        """Before a training step's forward pass."""
        self._eval_perturbed = False
        for name in self.windows.layers():
            if self.passes is None and self.windows.open[name].budget == 0:
                self._close(name, "duration")  # a 0-step window ends before training
            else:
                self._pass(name, "train")

    def after_step(self) -> None:
        """After ``optimizer.step()``: ``none`` windows end right after their last step."""
        if self.passes is not None:
            return
        for name in self.windows.layers():
            if self.windows.open[name].budget == 0:
                self._close(name, "duration")

    def before_eval_batch(self) -> None:
        """Before each batch of the two test-set evaluations (a pass only when ``official``)."""
        if self.passes is None:
            return
        for name in self.windows.layers():
            self._eval_perturbed = True
            self._pass(name, "eval")

    def end_trial(self) -> None:
        """The trial ended: report every open window as ``trial_end`` (weights left as they are)."""
        for name in self.windows.layers():
            self._close(name, "trial_end")

    def take_closed(self) -> list[dict[str, Any]]:
        """Windows closed since the last call (``trainables.records.WINDOWS`` entries)."""
        return self.windows.take_closed()

    # --- state --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (CPU tensors and plain values)."""
        return {
            "targeted": {k: v.clone() for k, v in self.targeted.items()},
            "units": {k: v.clone() for k, v in self.units.items()},
            "saved": {k: {n: t.cpu().clone() for n, t in d.items()} for k, d in self.saved.items()},
            "windows": self.windows.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.targeted = {k: v.clone().to(torch.bool) for k, v in state["targeted"].items()}
        self.units = {k: v.clone().to(torch.bool) for k, v in state["units"].items()}
        self.saved = {k: {n: t.clone() for n, t in d.items()} for k, d in state["saved"].items()}
        self.windows.load_state_dict(state["windows"])
        self.generator.set_state(state["generator"])

    # --- windows and effects ------------------------------------------------------------------

    def _open(self, name: str, epoch: int, units: Tensor) -> None:
        self.units[name] = units
        if self.cfg.restore:
            self.saved[name] = self._snapshot(name)
        if self.passes is not None:
            self.windows.start(name, epoch, self.passes + 1)
            return
        self.windows.start(name, epoch, self.cfg.steps + 1)
        self._pass(name, "eval")  # the one pass the whole post-event evaluation sees

    def _pass(self, name: str, kind: PassKind) -> None:
        """Perturb layer `name`'s window once; an ``official`` window ends on its last pass."""
        self._apply(name)
        if self.windows.open[name].count(kind) and self.passes is not None:
            self._close(name, "duration")

    @torch.no_grad()
    def _close(self, name: str, closed_by: str) -> None:
        saved = self.saved.pop(name, {})
        rows = self.units.pop(name)
        if closed_by == "duration":
            for key, value in saved.items():
                t = self._tensor(name, key)
                t[rows.to(t.device)] = value.to(t.device, t.dtype)
        self.windows.close(name, closed_by)

    def _tensor(self, name: str, key: str) -> Tensor:
        if key == "layer_weight":
            return self.layers[name].weight
        return getattr(self.bns[name], key[3:])

    @torch.no_grad()
    def _apply(self, name: str) -> None:
        w = self.layers[name].weight
        rows = self.units[name].to(w.device)
        if self.cfg.mode == "zeroing":
            w[rows] = 0
            bn = self.bns.get(name)
            if self.cfg.restore and bn is not None and bn.weight is not None:
                bn.weight[rows.to(bn.weight.device)] = 0
                bn.bias[rows.to(bn.bias.device)] = 0
            return
        sigma = first_alive_std(w, ~self.targeted[name].to(w.device))
        shape = (int(rows.sum()), *w.shape[1:])
        noise = torch.randn(shape, generator=self.generator, dtype=torch.float32) * sigma
        w[rows] += noise.to(w.device, w.dtype)

    def _snapshot(self, name: str) -> dict[str, Tensor]:
        rows = self.units[name]
        w = self.layers[name].weight
        entry = {"layer_weight": w.detach()[rows.to(w.device)].clone()}
        bn = self.bns.get(name)
        for key in _BN_KEYS if bn is not None else ():
            t = getattr(bn, key, None)
            if t is not None:
                entry[f"bn_{key}"] = t.detach()[rows.to(t.device)].clone()
        return entry

"""Re-entry and noise injection (Bartoldson et al. 2020, Fig. 5 and Fig. D2) instead of removal.

The pruning schedule, score and target choose units exactly as for pruning (each unit is
targeted at most once: scores rank only still-untargeted units, ``Perturbation.alive``). Instead of
being removed, the units chosen at an event are perturbed during a *window*: the event's
post-event evaluation (so ``acc_after`` and the event's instability see the perturbation's initial
effect, as the official code's first noisy forward pass is the first post-pruning test batch) and
the next ``steps`` training steps. After the window the units train freely again (re-entry), so
the parameter count never drops and sparsity stays 0.

Modes (``PerturbationConfig.mode``), applied to the targeted units' weights (rows of the layer's
``weight``, i.e. conv output channels or linear rows; the conv bias is never touched):

- ``zeroing``: the weights are set to exactly 0 at the event, before every training step's forward
  and after every optimizer step of the window, so updates made inside the window are wiped
  (official: ``w[targeted] *= 0`` on every forward pass).
- ``gaussian``: ``N(0, sigma^2)`` noise is added at the event and before every training step of the
  window, so it accumulates (official: ``w[targeted] += Normal(0, sigma).sample()`` per forward
  pass). sigma is recomputed at each addition as the official code does: the standard deviation
  (unbiased, ``Tensor.std``) of the weights of the layer's *first still-untargeted unit*
  (``w[mask.bool()][0].std()``), not of all untargeted weights. When every unit of a layer has been
  targeted (final_fraction 1) we fall back to the std of the whole layer's weights.

Variants: ``iter`` perturbs only the units targeted at this event; ``cumulative`` perturbs every
unit targeted so far (official ``cumu``: ``~mask``). With ``restore`` the window first saves the
perturbed units' weights and the following BatchNorm's gamma, beta, running mean and running var;
``zeroing`` then also zeroes that BN's gamma and beta (so the channel outputs exactly 0, as the
official ``_restore`` runs), and when the window ends the saved originals are copied back exactly.
Without ``restore`` the BN is never touched (official: "for iter zeroing, the conv bias and the
following BN are not touched"). A new event while a window is open first closes that window
(restoring if configured), then opens its own; in ``iter`` mode the older units are thereby
released, as the official code's per-event reset of ``batches_since_targeting`` does.

Window timing: it opens at ``on_event`` and ends right after the ``steps``-th training step's
optimizer update (``steps == 0``: right before the first training step after the event, so only
the post-event evaluation is perturbed). Residual shortcut masks are never touched.

Counting in training steps vs the official forward passes. The official code counted forward
passes, test-set evaluation batches included (``noise = '<variant>_<x>_<mode>'``, ``x + 1``
passes): after an event it ran one test evaluation (the post-pruning accuracy), then each epoch
391 training batches (CIFAR-10 at batch 128) followed by two test evaluations. The paper's legends
give the number of *training* batches that saw the perturbation, which
``official_passes_to_training_steps`` reproduces: with 79 test batches per evaluation (test batch
128), x = 0, 129, 1500 -> 0, 50, 1105 training steps (legends "1", "50", "1105", where "1" counts
the single evaluation pass); with 40 (test batch 256, the cumulative-restore runs of Fig. D2),
x = 129, 750, 1500, 3000 -> 89, 630, 1220, 2480. Set ``pruning.perturbation.steps`` to the
right-hand numbers to reproduce the paper's runs counted in training steps.

Randomness comes from a CPU ``torch.Generator`` seeded at construction; its state is part of
``state_dict`` so a run resumed in the middle of a window continues bit-for-bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from trainables.config import PerturbationConfig
from trainables.errors import UserError
from trainables.pruning import scores

__all__ = ["Perturbation", "official_passes_to_training_steps", "first_alive_std"]

_BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def official_passes_to_training_steps(
    passes: int, eval_batches: int, batches_per_epoch: int = 391
) -> int:
    """Training batches perturbed by the official code's ``x = passes`` window (papers.md §5).

    Args:
        passes: the ``<N>`` of the official noise string (forward passes after the event).
        eval_batches: test batches per evaluation (79 at test batch 128, 40 at 256 on CIFAR-10).
        batches_per_epoch: training batches per epoch (391 = CIFAR-10 at batch 128).

    The window first spends one evaluation's batches (the post-event test), then per epoch up to
    ``batches_per_epoch`` training batches followed by two evaluations, until exhausted.
    """
    if min(passes, eval_batches, batches_per_epoch - 1) < 0:
        raise ValueError("passes and eval_batches must be >= 0, batches_per_epoch >= 1")
    left = passes - eval_batches
    steps = 0
    while left > 0:
        steps += min(left, batches_per_epoch)
        left -= batches_per_epoch + 2 * eval_batches
    return steps


def first_alive_std(weight: Tensor, alive: Tensor) -> float:
    """Official sigma: std of the first still-untargeted unit's weights (whole layer if none).

    weight [out, ...], alive [out] bool. Unbiased std, as ``Tensor.std``.
    """
    rows = alive.nonzero().flatten()
    chosen = weight[rows[0]] if rows.numel() else weight
    return float(chosen.detach().float().std())


class Perturbation:
    """Zeroing or Gaussian noise on targeted units for a window of training steps, then re-entry.

    The training loop calls, per event and per training step (``mode != "none"``):

    - ``on_event({layer: bool [out] newly targeted})`` after ``acc_before`` and before ``acc_after``;
    - ``before_step()`` before every training step's forward pass;
    - ``after_step()`` right after every ``optimizer.step()``.

    ``alive()`` gives the still-untargeted units (what the scorer may choose from).
    """

    def __init__(
        self,
        cfg: PerturbationConfig,
        layers: Mapping[str, nn.Module],
        bns: Mapping[str, nn.Module],
        seed: int,
    ):
        if cfg.mode not in ("zeroing", "gaussian"):
            raise ValueError(
                f"pruning.perturbation.mode: must be zeroing or gaussian, got {cfg.mode!r}"
            )
        self.cfg = cfg
        self.layers = dict(layers)
        self.bns = {k: v for k, v in bns.items() if k in self.layers}
        self.generator = torch.Generator().manual_seed(seed)
        self.targeted = {
            name: torch.zeros(m.weight.shape[0], dtype=torch.bool)
            for name, m in self.layers.items()
        }
        self.window: dict[str, Tensor] = {}  # layer -> bool [out] units perturbed now
        self.saved: dict[str, dict[str, Tensor]] = {}  # restore: originals of the window's units
        self.active = False
        self.steps_left = 0
        self.events = 0

    # --- the loop's hooks -------------------------------------------------------------------

    def alive(self) -> dict[str, Tensor]:
        """Layer -> bool [out] (CPU), True for units never targeted."""
        return {name: ~t for name, t in self.targeted.items()}

    def choose(
        self, units: Mapping[str, int], *, score: str, target: str, generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Pick ``{layer: k}`` still-untargeted units by filter score and target (as pruning does).

        Returns {layer: bool [out] on the layer's device}; pass it to :meth:`on_event`.
        """
        chosen = {}
        for name, k in units.items():
            if name not in self.layers:
                known = ", ".join(self.layers)
                raise UserError(
                    f"pruning.layers: unknown prunable layer {name!r}; choose one of: {known}"
                )
            values = scores.unit_scores(score, self.layers[name], self.bns.get(name), "filter")
            alive = (~self.targeted[name]).to(values.device)
            chosen[name] = scores.select(values, alive, k, target, generator)
        return chosen

    def on_event(self, newly: Mapping[str, Tensor]) -> None:
        """Open a window on the units chosen at this event and apply the initial perturbation.

        newly: layer -> bool [out] (any device) of units chosen now; must be still alive.
        """
        if self.active:
            self._close()
        for name, chosen in newly.items():
            if name not in self.targeted:
                raise KeyError(
                    f"unknown perturbed layer {name!r}; known: {', '.join(self.targeted)}"
                )
            chosen = chosen.detach().to("cpu", torch.bool)
            if (chosen & self.targeted[name]).any():
                raise ValueError(f"layer {name!r}: a unit was targeted twice")
            self.targeted[name] |= chosen
        source = self.targeted if self.cfg.variant == "cumulative" else newly
        self.window = {
            name: units.detach().to("cpu", torch.bool).clone()
            for name, units in source.items()
            if units.any()
        }
        self.events += 1
        if not self.window:
            return
        self.active = True
        self.steps_left = self.cfg.steps
        if self.cfg.restore:
            self.saved = self._snapshot()
        self._apply()

    def before_step(self) -> None:
        """Before a training step's forward: perturb (or close a 0-step window)."""
        if not self.active:
            return
        if self.steps_left == 0:
            self._close()
            return
        self._apply()

    def after_step(self) -> None:
        """After ``optimizer.step()``: wipe in-window updates (zeroing); count the step."""
        if not self.active:
            return
        if self.cfg.mode == "zeroing":
            self._zero()
        self.steps_left -= 1
        if self.steps_left == 0:
            self._close()

    # --- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (CPU tensors and plain values)."""
        return {
            "targeted": {k: v.clone() for k, v in self.targeted.items()},
            "window": {k: v.clone() for k, v in self.window.items()},
            "saved": {k: {n: t.cpu().clone() for n, t in d.items()} for k, d in self.saved.items()},
            "active": self.active,
            "steps_left": self.steps_left,
            "events": self.events,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.targeted = {k: v.clone().to(torch.bool) for k, v in state["targeted"].items()}
        self.window = {k: v.clone().to(torch.bool) for k, v in state["window"].items()}
        self.saved = {k: {n: t.clone() for n, t in d.items()} for k, d in state["saved"].items()}
        self.active = bool(state["active"])
        self.steps_left = int(state["steps_left"])
        self.events = int(state["events"])
        self.generator.set_state(state["generator"])

    # --- effects ----------------------------------------------------------------------------

    def _rows(self, name: str, tensor: Tensor) -> Tensor:
        return self.window[name].to(tensor.device)

    @torch.no_grad()
    def _apply(self) -> None:
        if self.cfg.mode == "zeroing":
            self._zero()
            return
        for name, units in self.window.items():
            w = self.layers[name].weight
            sigma = first_alive_std(w, ~self.targeted[name].to(w.device))
            shape = (int(units.sum()), *w.shape[1:])
            noise = torch.randn(shape, generator=self.generator, dtype=torch.float32) * sigma
            w[self._rows(name, w)] += noise.to(w.device, w.dtype)

    @torch.no_grad()
    def _zero(self) -> None:
        for name in self.window:
            w = self.layers[name].weight
            w[self._rows(name, w)] = 0
            bn = self.bns.get(name)
            if self.cfg.restore and bn is not None and bn.weight is not None:
                rows = self._rows(name, bn.weight)
                bn.weight[rows] = 0
                bn.bias[rows] = 0

    def _snapshot(self) -> dict[str, dict[str, Tensor]]:
        saved = {}
        for name in self.window:
            w = self.layers[name].weight
            entry = {"layer_weight": w.detach()[self._rows(name, w)].clone()}
            bn = self.bns.get(name)
            for key in _BN_KEYS if bn is not None else ():
                t = getattr(bn, key, None)
                if t is not None:
                    entry[f"bn_{key}"] = t.detach()[self._rows(name, t)].clone()
            saved[name] = entry
        return saved

    @torch.no_grad()
    def _close(self) -> None:
        for name, entry in self.saved.items():
            for key, value in entry.items():
                module = self.layers[name] if key == "layer_weight" else self.bns[name]
                t = getattr(module, "weight" if key == "layer_weight" else key[3:])
                t[self._rows(name, t)] = value.to(t.device, t.dtype)
        self.saved = {}
        self.window = {}
        self.active = False
        self.steps_left = 0

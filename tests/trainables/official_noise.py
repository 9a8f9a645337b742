"""A plain-Python simulation of the official noise-injection pass sequence (a test oracle).

Written from the definitions in github.com/bbartoldson/GeneralizationStabilityTradeoff (commit
6d100d5), not from prunetune:

- ``experiments.py::main``: each epoch trains on every training batch (``utils.py::train``), then
  ``model.eval()``, evaluates the test set (``pre_prune_acc``: True in every F5 / FD2 cfg), calls
  ``model.prune``, steps the LR, and evaluates the test set again (``utils.py::validate``), on
  every epoch whether or not anything was pruned.
- ``utils.py::get_train_test_data``: DataLoaders without ``drop_last``, so B = ceil(train / batch)
  training batches and E = ceil(test / test batch) batches per evaluation.
- ``utils.py::pruning_scheduler``: a layer's iterations are ``range(start, end + 1, period)``;
  at an epoch in that range the layer gets iteration i (1-based) of n.
- ``models.py::_prune`` / ``_prune_layer``: a layer with an iteration computes
  ``final_kept = ceil((1 - f) * N)``, ``kept = ceil(final_kept + (N - final_kept) * (n - i) / n)``,
  ``k = N - kept - pruned``; only when k > 0 does it target units and set its own
  ``batches_since_targeting = 0``.
- ``models.py::_make_conv_prunable``: the counter starts at 1e7 (no window before a first event).
- ``models.py::_noisy_conv_forward``: on every forward pass through the layer, if the counter is
  ``<= N`` it is incremented and the layer's targets are perturbed; so a window spans N + 1 passes
  and only the layer's own next event (a reset) cuts it short.

:func:`simulate` returns, per (layer, event), what the window did. ``units`` is the official k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Layer:
    """One prunable conv as the official cfg describes it."""

    name: str
    n_units: int
    final_fraction: float
    start_epoch: int
    end_epoch: int


@dataclass
class OfficialWindow:
    layer: str
    event_epoch: int
    units: int
    train: int = 0  # training passes perturbed
    eval: int = 0  # test-evaluation passes perturbed
    closed_by: str | None = None
    closed_epoch: int | None = None


def prune_layer_k(
    n_units: int, final_fraction: float, iteration: int, n_iter: int, pruned: int
) -> int:
    """``models.py::_prune_layer``'s k: the units to remove at iteration `iteration` (1-based) of
    `n_iter` from a layer of `n_units` that has lost `pruned` so far.

    ``final_kept = ceil((1 - f) * N)``, ``kept = ceil(final_kept + (N - final_kept) * (n - i) /
    n)``, ``k = int(N - kept - pruned)``; may be <= 0: the official code prunes only ``if k > 0``.
    """
    final_kept = math.ceil((1 - final_fraction) * n_units)
    kept = math.ceil(final_kept + (n_units - final_kept) * (n_iter - iteration) / n_iter)
    return int(n_units - kept - pruned)


def official_k(layer: Layer, iteration: int, n_iter: int, pruned: int) -> int:
    """``models.py::_prune_layer``'s k for `layer` (:func:`prune_layer_k`)."""
    return prune_layer_k(layer.n_units, layer.final_fraction, iteration, n_iter, pruned)


def simulate(
    layers: list[Layer],
    period: int,
    epochs: int,
    n_passes: int,
    eval_batches: int,
    batches_per_epoch: int,
) -> list[OfficialWindow]:
    """Every window of an official noise run (``<variant>_<n_passes>_<mode>``), in opening order.

    Counts do not depend on the mode, the variant or restore: the counter is the same for all.
    """
    counters = {layer.name: 10**7 for layer in layers}  # "a big number that won't be reached"
    pruned = {layer.name: 0 for layer in layers}
    current: dict[str, OfficialWindow] = {}
    windows: list[OfficialWindow] = []

    def forward_pass(kind: str, epoch: int) -> None:
        for layer in layers:  # forward order; each conv checks its own counter
            name = layer.name
            if counters[name] <= n_passes:
                counters[name] += 1
                w = current[name]
                if kind == "train":
                    w.train += 1
                else:
                    w.eval += 1
                if counters[name] > n_passes:
                    w.closed_by, w.closed_epoch = "duration", epoch

    for epoch in range(epochs):
        for _ in range(batches_per_epoch):
            forward_pass("train", epoch)
        for _ in range(eval_batches):  # pre_prune_acc
            forward_pass("eval", epoch)
        for layer in layers:
            schedule = range(layer.start_epoch, layer.end_epoch + 1, period)
            if epoch not in schedule:
                continue
            k = official_k(layer, schedule.index(epoch) + 1, len(schedule), pruned[layer.name])
            if k <= 0:
                continue
            old = current.get(layer.name)
            if old is not None and old.closed_by is None:
                old.closed_by, old.closed_epoch = "own_event", epoch
            pruned[layer.name] += k
            counters[layer.name] = 0
            current[layer.name] = OfficialWindow(layer.name, epoch, k)
            windows.append(current[layer.name])
        for _ in range(eval_batches):  # the post-pruning evaluation
            forward_pass("eval", epoch)
    for w in windows:
        if w.closed_by is None:
            w.closed_by, w.closed_epoch = "trial_end", epochs - 1
    return windows


def rows(windows: list[OfficialWindow]) -> list[dict]:
    """The windows as layer_events rows (the columns the oracle defines), sorted."""
    out = [
        {
            "epoch": w.event_epoch,
            "layer": w.layer,
            "units": w.units,
            "window_steps": w.train,
            "closed_by": w.closed_by,
            "closed_epoch": w.closed_epoch,
            "noise_draws_train": w.train,
            "noise_draws_eval": w.eval,
        }
        for w in windows
    ]
    return sorted(out, key=lambda r: (r["epoch"], r["layer"]))

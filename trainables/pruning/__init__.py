"""Pruning science: schedules (pure Python), scores and targets (pure torch), and the mask holder.

- :mod:`trainables.pruning.schedule`: per-layer event epochs and units per event (no torch import,
  so the spec and the aggregator can use it).
- :mod:`trainables.pruning.scores`: l2 / l1 / E[BN] (and its signed variant) / magnitude scores,
  the tracked ``activations`` score (:mod:`trainables.pruning.activations`), and the smallest /
  largest / random targets.
- :mod:`trainables.pruning.masks`: :class:`~trainables.pruning.masks.MaskSet`, the stateful holder
  that keeps pruned entries at exactly zero.
- :mod:`trainables.pruning.perturbation`: re-entry / noise injection on the scheduled units, over
  the per-layer window bookkeeping of :mod:`trainables.pruning.windows` (no torch).

This package's ``__init__`` imports nothing, so importing the schedule never pulls in torch.
"""

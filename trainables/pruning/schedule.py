"""Per-layer pruning schedules: when events happen and how many units each removes (no torch).

The rule is Bartoldson et al.'s official code (github.com/bbartoldson/GeneralizationStabilityTradeoff,
commit 6d100d5): ``utils.py::pruning_scheduler`` puts a layer's events at
``range(start, end + 1, retrain_period)`` (epoch indices; the event follows that epoch's training),
and ``models.py::_prune_layer`` keeps, after event i of n (1-based),
``kept_i = ceil(final_kept + (N - final_kept) * (n - i) / n)`` with ``final_kept = ceil((1 - f) * N)``,
removing ``N - kept_i - already_pruned`` units. The arithmetic below is written in the same order so
the float rounding matches (VGG11's last conv: N=512, f=0.9, period 40 -> 7 events removing
[65, 66, 66, 65, 66, 66, 66]).

Derived quantities: the *pruning rate* is Bartoldson's "iterative pruning rate", the percent of the
most-pruned layer's units removed per event (``Figure_3.py``: ``90 / len(range(6, 275, r))``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trainables.problems import show

__all__ = [
    "LayerSchedule",
    "layer_list_rule",
    "LayerPlan",
    "SchedulePlan",
    "event_epochs",
    "units_per_event",
    "plan_layer",
    "plan_schedule",
    "pruning_rate",
    "schedule_summary",
]


@dataclass(frozen=True)
class LayerSchedule:
    """Pruning schedule of one prunable layer (Bartoldson et al.'s per-layer linear rule)."""

    item_name = "layer"  # how a pruning.layers entry is named in messages

    name: str  # a prunable layer name declared by the model
    final_fraction: float  # fraction of the layer's units removed by the last event
    start_epoch: int  # first event epoch (0-based epoch index; the event follows its training)
    end_epoch: int  # no event after this epoch


def layer_list_rule(layers: tuple[LayerSchedule, ...]) -> list[tuple[str, str]]:
    """The rule of ``pruning.layers``: per-item problems as (path suffix, message)."""
    out = []
    seen: set[str] = set()
    for i, layer in enumerate(layers):
        if not 0 <= layer.final_fraction < 1:
            out.append(
                (f"[{i}].final_fraction", f"must be in [0, 1), got {show(layer.final_fraction)}")
            )
        if layer.start_epoch < 0:
            out.append((f"[{i}].start_epoch", f"must be >= 0, got {layer.start_epoch}"))
        if layer.end_epoch < layer.start_epoch:
            message = f"must be >= start_epoch ({layer.start_epoch}), got {layer.end_epoch}"
            out.append((f"[{i}].end_epoch", message))
        if layer.name in seen:
            out.append((f"[{i}].name", f"each layer may appear once, got {layer.name!r} again"))
        seen.add(layer.name)
    return out


def event_epochs(start_epoch: int, end_epoch: int, period: int) -> tuple[int, ...]:
    """0-based epoch indices of a layer's events: ``range(start, end + 1, period)``.

    Empty when ``start_epoch > end_epoch``. Raises ValueError for ``period < 1`` or a negative start.
    """
    if period < 1:
        raise ValueError(f"pruning.period: must be >= 1, got {period}")
    if start_epoch < 0:
        raise ValueError(f"start_epoch: must be >= 0, got {start_epoch}")
    return tuple(range(start_epoch, end_epoch + 1, period))


def units_per_event(n_units: int, final_fraction: float, n_events: int) -> tuple[int, ...]:
    """Units removed at each of ``n_events`` events by the official linear rule.

    Args:
        n_units: N, the layer's units (filters, rows or weights), >= 1.
        final_fraction: f in [0, 1], the fraction of N removed once all events have happened.
        n_events: n >= 0.

    Returns:
        n non-negative ints summing to ``N - ceil((1 - f) * N)``. Some may be 0 when n exceeds the
        number of units to remove (the official code then skips the layer at that event).
    """
    if n_units < 1:
        raise ValueError(f"n_units: must be >= 1, got {n_units}")
    if not 0.0 <= final_fraction <= 1.0:
        raise ValueError(f"final_fraction: must be in [0, 1], got {final_fraction}")
    final_kept = math.ceil((1 - final_fraction) * n_units)
    removed: list[int] = []
    kept_before = n_units
    for i in range(1, n_events + 1):
        kept = math.ceil(final_kept + (n_units - final_kept) * (n_events - i) / n_events)
        removed.append(kept_before - kept)
        kept_before = kept
    return tuple(removed)


@dataclass(frozen=True)
class LayerPlan:
    """One layer's resolved schedule: the events (epochs) and the units each removes."""

    name: str
    n_units: int
    final_fraction: float
    epochs: tuple[int, ...]
    removed: tuple[int, ...]  # same length as epochs

    def units_at(self, epoch: int) -> int:
        """Units this layer loses at `epoch` (0 if it has no event then)."""
        try:
            return self.removed[self.epochs.index(epoch)]
        except ValueError:
            return 0


@dataclass(frozen=True)
class SchedulePlan:
    """All scheduled layers: a pure lookup from epoch to ``{layer: units to remove}``."""

    layers: tuple[LayerPlan, ...]

    def units_at(self, epoch: int) -> dict[str, int]:
        """Layers with a non-zero removal at `epoch`, in declaration order."""
        out = {lp.name: lp.units_at(epoch) for lp in self.layers}
        return {name: k for name, k in out.items() if k > 0}

    @property
    def event_epochs(self) -> tuple[int, ...]:
        """Sorted epochs at which at least one layer removes at least one unit."""
        pairs = (zip(lp.epochs, lp.removed, strict=True) for lp in self.layers)
        return tuple(sorted({e for layer in pairs for e, k in layer if k}))

    @property
    def last_event_epoch(self) -> int | None:
        epochs = self.event_epochs
        return epochs[-1] if epochs else None


def plan_layer(
    name: str, n_units: int, final_fraction: float, start_epoch: int, end_epoch: int, period: int
) -> LayerPlan:
    """Resolve one layer's schedule (see module docstring for the rule)."""
    epochs = event_epochs(start_epoch, end_epoch, period)
    return LayerPlan(
        name, n_units, final_fraction, epochs, units_per_event(n_units, final_fraction, len(epochs))
    )


def plan_schedule(layers: Sequence[Any], n_units: Mapping[str, int], period: int) -> SchedulePlan:
    """Resolve ``LayerSchedule``-like items (name, final_fraction, start_epoch, end_epoch).

    Args:
        layers: the trial's per-layer schedules (``trainables.config.LayerSchedule``).
        n_units: units per prunable layer name (filters for filter granularity, weights otherwise).
        period: epochs between events (``pruning.period``).
    Raises ValueError naming a layer listed twice; KeyError for a name not in `n_units` (the model
    rules, ``trainables.models.rules``, refuse unknown names when a config is validated).
    """
    seen: set[str] = set()
    plans = []
    for i, ls in enumerate(layers):
        if ls.name in seen:
            raise ValueError(f"pruning.layers[{i}].name: layer {ls.name!r} is listed twice")
        seen.add(ls.name)
        plans.append(
            plan_layer(
                ls.name, n_units[ls.name], ls.final_fraction, ls.start_epoch, ls.end_epoch, period
            )
        )
    return SchedulePlan(tuple(plans))


def pruning_rate(final_fraction: float, n_events: int) -> float:
    """Percent of a layer's units removed per event: ``100 * f / n`` (0 when n == 0)."""
    return 100.0 * final_fraction / n_events if n_events else 0.0


def schedule_summary(layers: Sequence[Any], period: int) -> dict[str, Any]:
    """Derived schedule numbers that need no model (for the spec and the aggregator).

    Args:
        layers: ``LayerSchedule``-like items (name, final_fraction, start_epoch, end_epoch).
        period: epochs between events.

    Returns:
        ``num_events``: distinct event epochs over all layers (nominal: a layer whose linear rule
        removes 0 units at some event still counts; with realistic N it never does);
        ``event_epochs``: those epochs, sorted; ``events_per_layer``: {layer: n};
        ``pruning_rate``: percent of the most-pruned layer's units removed per event
        (Bartoldson's "iterative pruning rate"; ties between equally pruned layers take the
        highest rate); ``last_event_epoch`` (None when there is no event).
    """
    per_layer = {ls.name: event_epochs(ls.start_epoch, ls.end_epoch, period) for ls in layers}
    epochs = sorted({e for es in per_layer.values() for e in es})
    rate = 0.0
    if layers:
        top = max(ls.final_fraction for ls in layers)
        rate = max(
            pruning_rate(ls.final_fraction, len(per_layer[ls.name]))
            for ls in layers
            if ls.final_fraction == top
        )
    return {
        "num_events": len(epochs),
        "event_epochs": tuple(epochs),
        "events_per_layer": {name: len(es) for name, es in per_layer.items()},
        "pruning_rate": rate,
        "last_event_epoch": epochs[-1] if epochs else None,
    }

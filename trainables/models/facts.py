"""What a model has, read off the model itself: its prunable layers, the paper schedule, and the
capabilities its registry entry declares (``trainables.models.needs.CAPABILITIES``).

The registry (``trainables.models.facts_for``) builds each (model, width, dataset) once on the
``meta`` device and keeps its :class:`ModelFacts`; validation (``trainables.models.rules``) and
every resolution of the default layers read them there, so the layer names and the paper schedule
have one owner. :func:`check_declared` runs on every build and refuses a registry entry whose
declared capabilities the built model does not have.

Importing this module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainables.pruning.schedule import LayerSchedule


@dataclass(frozen=True)
class ModelFacts:
    """The layer facts of one built model (all names in forward order).

    ``layers``: the prunable layers (filter granularity, schedules, perturbation); never the
    output layer. ``weight_layers``: what weight granularity and IMP may mask (``layers`` plus the
    weight-only layers, usually none). ``bn_layers``: the layers with a BatchNorm right after.
    ``block_layers``: the convs inside residual blocks (what the ``activations`` score ranks).
    ``schedule``: the paper's default layer schedule (empty: none). ``conv2d``: the model has 4-d
    weights (2-d input; channels-last memory acts on them).
    """

    layers: tuple[str, ...]
    weight_layers: tuple[str, ...]
    bn_layers: tuple[str, ...]
    block_layers: tuple[str, ...]
    schedule: tuple[LayerSchedule, ...]
    conv2d: bool

    @property
    def capabilities(self) -> frozenset[str]:
        """The capabilities (``needs.CAPABILITIES``) this model has."""
        found = set()
        if self.layers and set(self.layers) <= set(self.bn_layers):
            found.add("batchnorm")
        if self.block_layers:
            found.add("residual")
        if self.conv2d:
            found.add("input_2d")
        return frozenset(found)


def facts_of(model: Any) -> ModelFacts:
    """The facts of a built :class:`trainables.models.base.PrunableModel` (any device)."""
    from trainables.pruning.activations import ActivationTracker

    return ModelFacts(
        layers=tuple(model.prunable_layers()),
        weight_layers=tuple(model.weight_prunable_layers()),
        bn_layers=tuple(model.following_bn()),
        block_layers=ActivationTracker.scorable(model),
        schedule=tuple(model.default_schedule()),
        conv2d=any(p.dim() == 4 for p in model.parameters()),
    )


def check_declared(name: str, declared: frozenset[str], model: Any) -> None:
    """Raise AssertionError when the built `model` lacks a capability its registry entry
    declares, or has one it does not declare (the entry is then wrong: a bug, not user input)."""
    found = facts_of(model).capabilities
    if found != declared:
        raise AssertionError(
            f"model {name}: the registry declares {sorted(declared)}, the built model has "
            f"{sorted(found)}"
        )

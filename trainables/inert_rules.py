"""Settings that act only when another field allows them: the one table (:data:`INERT`) of
"field X acts only when Y".

A field set away from its default while it cannot act is refused with the reason: it would
change the spec hash and the trial keys without changing what runs, and the user who wrote it
believes it does something. A field at its default value is not "set". The trial config's
rules (``trainables.cross_rules``) refuse every entry whose fields are trial config fields, on
each trial and on every combination a study spec can make (``search_spaces.cross``); the study
spec refuses the others (``search.*``). A new field that acts only sometimes gets one entry here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trainables.config import (
    NOISE_MODES,
    FlatnessConfig,
    ImpConfig,
    PerturbationConfig,
    PruningConfig,
)
from trainables.datasets import DATASETS
from trainables.fields import type_hints
from trainables.problems import show

# IMP ranks weights by magnitude over its layers at the end of each round (trainables.methods).
SCHEDULE_ONLY = ("score", "target", "scope", "period")
# Datasets read from files (torchvision) may be downloaded; MNIST-1D is generated locally.
FILE_DATASETS = tuple(name for name, info in DATASETS.items() if info.files)
SEARCHES_THAT_DRAW = ("random", "optuna")


@dataclass(frozen=True)
class Inert:
    """``field`` acts only when ``active(value of owner)``; ``when`` says so in words."""

    field: str
    owner: str
    active: Callable[[Any], bool]
    when: str
    unpruned: bool = False  # pruning.method none has its own reason

    def checker(self, root: type) -> Callable[[Any, Any], list[tuple[str, str]]]:
        """``check(owner value, value)`` -> the refusal (suffix, message), if any; `root` is the
        class holding both fields (the field's default there is "not set")."""
        default = default_at(root, self.field)

        def check(owner_value: Any, value: Any) -> list[tuple[str, str]]:
            if value == default or self.active(owner_value):
                return []
            if self.unpruned and owner_value == "none":
                why = "an unpruned trial prunes nothing; baselines: true adds unpruned trials"
            else:
                why = f"it acts only when {self.when}"
            return [("", f"does nothing with {self.owner} {_word(owner_value)} ({why}); remove it")]

        return check


def default_at(root: type, path: str) -> Any:
    """The default of the field at dotted `path` under dataclass `root`."""
    *sections, name = path.split(".")
    for part in sections:
        root = type_hints(root)[part]
    return root.__dataclass_fields__[name].default


def _word(value: Any) -> str:
    return value if isinstance(value, str) else show(value)


def _one_of(values: tuple[Any, ...]) -> Callable[[Any], bool]:
    return lambda v: v in values


def _each(
    cls: type, prefix: str, owner: str, active: Callable, when: str, skip: tuple = ()
) -> list[Inert]:
    return [
        Inert(f"{prefix}.{f.name}", owner, active, when)
        for f in dataclasses.fields(cls)
        if f.name not in skip
    ]


def _pruning() -> list[Inert]:
    out = []
    for f in dataclasses.fields(PruningConfig):
        if f.name not in ("method", "imp", "perturbation"):
            used_by = ("schedule",) if f.name in SCHEDULE_ONLY else ("schedule", "imp")
            when = f"pruning.method is {' or '.join(used_by)}"
            out.append(Inert(f"pruning.{f.name}", "pruning.method", _one_of(used_by), when, True))
    return out


INERT: tuple[Inert, ...] = (
    *_each(ImpConfig, "pruning.imp", "pruning.method", _one_of(("imp",)), "pruning.method is imp"),
    *_each(
        PerturbationConfig,
        "pruning.perturbation",
        "pruning.perturbation.mode",
        _one_of(NOISE_MODES),
        f"pruning.perturbation.mode is {' or '.join(NOISE_MODES)}",
        skip=("mode",),
    ),
    *_pruning(),
    *(
        Inert(f"train.{name}", "train.optimizer", _one_of(("sgd",)), "train.optimizer is sgd")
        for name in ("momentum", "nesterov")
    ),
    Inert("train.gamma", "train.milestones", bool, "train.milestones is not empty"),
    *_each(
        FlatnessConfig,
        "flatness",
        "flatness.epochs",
        bool,
        "flatness.epochs lists the epochs to measure",
        skip=("epochs",),
    ),
    Inert(
        "dataset.label_noise_seed",
        "dataset.label_noise_fraction",
        lambda f: f > 0,
        "dataset.label_noise_fraction is above 0",
    ),
    Inert(
        "dataset.download",
        "dataset.name",
        _one_of(FILE_DATASETS),
        f"dataset.name is one of {', '.join(FILE_DATASETS)}; MNIST-1D is generated locally",
    ),
    Inert(
        "search.seed",
        "search.algorithm",
        _one_of(SEARCHES_THAT_DRAW),
        "search.algorithm is random or optuna; a grid draws nothing",
    ),
    Inert(
        "search.num_samples",
        "search.algorithm",
        _one_of(SEARCHES_THAT_DRAW),
        "search.algorithm is random or optuna; the grids and seeds set a grid's trials",
    ),
)

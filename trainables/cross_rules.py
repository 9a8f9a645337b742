"""Rules relating fields of the trial configuration (:data:`CROSS_RULES`), and :func:`validate`,
which applies every field's own rule and these to a config. The study spec applies the same rules
to every consistent combination of the values its fields can take
(``search_spaces.cross.check_cross``), so each rule is written here only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trainables import datasets
from trainables.config import NOISE_MODES, TrialConfig
from trainables.fields import check_rules
from trainables.inert_rules import INERT
from trainables.models import rules as model_rules
from trainables.problems import Problems, show
from trainables.pruning.schedule import LayerSchedule


@dataclass(frozen=True)
class CrossRule:
    """A rule over several fields: ``check(*values)`` returns (path suffix, message) problems,
    reported at field ``paths[at]`` (plus the suffix). The study spec checks it on every
    consistent combination of the fields' candidate values."""

    paths: tuple[str, ...]
    check: Callable[..., list[tuple[str, str]]]
    at: int = 0


def _below_epochs(values: tuple[int, ...], epochs: int) -> list[tuple[str, str]]:
    return [
        (f"[{i}]", f"must be < train.epochs ({epochs}), got {v}")
        for i, v in enumerate(values)
        if v >= epochs
    ]


def _layers_end(layers: tuple[LayerSchedule, ...], epochs: int) -> list[tuple[str, str]]:
    return [
        (f"[{i}].end_epoch", f"must be < train.epochs ({epochs}), got {layer.end_epoch}")
        for i, layer in enumerate(layers)
        if layer.end_epoch >= epochs
    ]


def _needs(value: Any, other: str, wanted: tuple[Any, ...]) -> Callable[..., list]:
    """``path`` holding ``value`` needs field ``other`` to be one of ``wanted``."""
    choices = (
        " or ".join(wanted) if len(wanted) < 3 else f"{', '.join(wanted[:-1])} or {wanted[-1]}"
    )

    def check(v: Any, o: Any) -> list[tuple[str, str]]:
        if v != value or o in wanted:
            return []
        return [("", f"{_word(value)} needs {other} {choices}, got {_word(o)}")]

    return check


def _word(value: Any) -> str:
    """A YAML scalar as a word in a sentence: true, zeroing, 0.5."""
    return value if isinstance(value, str) else show(value)


def _rewind(rewind: str, epoch: int, epochs: int) -> list[tuple[str, str]]:
    if rewind == "weight" and epoch >= epochs:
        return [("", f"must be < train.epochs ({epochs}) for weight rewinding, got {epoch}")]
    return []


def _imp_rounds(method: str, rounds: int) -> list[tuple[str, str]]:
    if method == "imp" and rounds < 1:
        return [("", f"must be >= 1 when pruning.method is imp, got {rounds}")]
    return []


def _scratch_layers(scratch: bool, layers: tuple[LayerSchedule, ...]) -> list[tuple[str, str]]:
    """Scratch pruning removes each layer's whole fraction at epoch 0, before any training (the
    official cfgs F2_VGG_5 and TF1_3 say so with start = end = 0); the schedule must say it too."""
    if not scratch:
        return []
    if not layers:
        rule = "must list the layers (start_epoch 0, end_epoch 0) when pruning.scratch is true"
        return [("", f"{rule}, got []")]
    return [
        (f"[{i}].{name}", f"must be 0 when pruning.scratch is true, got {value}")
        for i, layer in enumerate(layers)
        for name, value in (("start_epoch", layer.start_epoch), ("end_epoch", layer.end_epoch))
        if value != 0
    ]


def _normalization(choice: str, name: str) -> list[tuple[str, str]]:
    """The dataset's registry entry must hold statistics for the choice (an unknown name is
    dataset.name's problem, reported by its own rule)."""
    if name not in datasets.DATASETS or choice in datasets.get(name).normalization:
        return []
    return _needs(choice, "dataset.name", datasets.with_normalization(choice))(choice, name)


def _val_selected(measure: str, fraction_: float) -> list[tuple[str, str]]:
    if measure == "val_selected" and fraction_ <= 0:
        return [("", f"must be > 0 for generalization val_selected, got {show(fraction_)}")]
    return []


_NEEDS = (
    ("pruning.scope", "global", "pruning.granularity", ("weight",)),
    ("pruning.score", "magnitude", "pruning.granularity", ("weight",)),
    ("pruning.score", "ebn", "pruning.granularity", ("filter",)),
    ("pruning.score", "ebn_signed", "pruning.granularity", ("filter",)),
    ("pruning.score", "activations", "pruning.granularity", ("filter",)),
    # The tracker is checkpointed by schedule pruning; re-entry / noise injection does not carry it.
    ("pruning.score", "activations", "pruning.perturbation.mode", ("none",)),
    ("pruning.scratch", True, "pruning.method", ("schedule",)),
    ("pruning.scratch", True, "pruning.perturbation.mode", ("none",)),
    ("pruning.perturbation.mode", "zeroing", "pruning.method", ("schedule",)),
    ("pruning.perturbation.mode", "gaussian", "pruning.method", ("schedule",)),
    ("pruning.perturbation.mode", "zeroing", "pruning.granularity", ("filter",)),
    ("pruning.perturbation.mode", "gaussian", "pruning.granularity", ("filter",)),
    ("pruning.perturbation.mode", "conv_mask", "pruning.method", ("schedule",)),
    ("pruning.perturbation.mode", "conv_mask", "pruning.granularity", ("filter",)),
    ("pruning.perturbation.eval_passes", "none", "pruning.perturbation.mode", NOISE_MODES),
    ("dataset.augment", True, "dataset.name", datasets.IMAGE_DATASETS),
)


def _inert_rules() -> tuple[CrossRule, ...]:
    """Settings that act only when another field allows them, from the one table
    (``trainables.inert_rules.INERT``): those of the trial config (the study spec checks the rest)."""
    trial = {f.name for f in dataclasses.fields(TrialConfig)}
    return tuple(
        CrossRule((e.owner, e.field), e.checker(TrialConfig), at=1)
        for e in INERT
        if e.field.split(".")[0] in trial
    )


CROSS_RULES: tuple[CrossRule, ...] = (
    CrossRule(("train.milestones", "train.epochs"), _below_epochs),
    CrossRule(("flatness.epochs", "train.epochs"), _below_epochs),
    CrossRule(("pruning.layers", "train.epochs"), _layers_end),
    CrossRule(("pruning.scratch", "pruning.layers"), _scratch_layers, at=1),
    CrossRule(("pruning.imp.rewind", "pruning.imp.rewind_epoch", "train.epochs"), _rewind, at=1),
    *(CrossRule((path, other), _needs(v, other, wanted)) for path, v, other, wanted in _NEEDS),
    CrossRule(("pruning.method", "pruning.imp.rounds"), _imp_rounds, at=1),
    CrossRule(("generalization", "dataset.validation_fraction"), _val_selected, at=1),
    CrossRule(datasets.SPLIT_PATHS, datasets.split_rule),
    *_inert_rules(),
    CrossRule(("dataset.normalization", "dataset.name"), _normalization),
)


# The model-dependent rules (trainables.models.rules): kept apart because they build the model on
# the meta device (torch); the study spec checks them in search_spaces.model_check.
MODEL_RULES: tuple[CrossRule, ...] = tuple(
    CrossRule(paths, check, at) for paths, check, at in model_rules.RULES
)


def value_at(cfg: Any, path: str) -> Any:
    """The value of a dotted field path (``pruning.imp.rounds``) in a config."""
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def validate(cfg: TrialConfig, prefix: str = "") -> None:
    """Raise UserError listing every field-rule, cross-rule and model-rule problem of `cfg` (all
    at once).

    With ``prefix`` (``"dataset."``) only the rules whose fields all lie in that section run. A
    model rule is skipped where one of its fields broke its own rule (it would build nonsense).
    """
    problems = Problems()
    if prefix:
        name = prefix.rstrip(".")
        part = value_at(cfg, name)
        check_rules(type(part), part, name, problems)
    else:
        check_rules(TrialConfig, cfg, "", problems)
    broken = [line.partition(":")[0] for line in problems.lines]  # fields that broke their rule
    model_rules_ = [r for r in MODEL_RULES if not any(b.startswith(r.paths) for b in broken)]
    for rule in (*CROSS_RULES, *model_rules_):
        if all(p.startswith(prefix) for p in rule.paths):
            values = [value_at(cfg, p) for p in rule.paths]
            for suffix, message in rule.check(*values):
                problems.add(rule.paths[rule.at] + suffix, message)
    problems.raise_if_any()

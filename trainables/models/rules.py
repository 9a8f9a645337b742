"""The model-dependent rules, written once: :data:`RULES`.

``trainables.cross_rules.MODEL_RULES`` wraps them as cross-field rules, so they run where the
others do: on every consistent combination of a study spec's values
(``search_spaces.model_check``, before anything starts) and on each trial's config when the trial
is built (``trainables.cross_rules.validate``). What a model has comes from its registry entry
(``trainables.models.MODELS[name].has``, checked against the built model at every build) and its
layer facts (``trainables.models.facts_for``); what a setting needs from a model comes from
``trainables.models.needs``. Each check takes the values of its paths and returns
``(path suffix, message)`` problems, reported at ``paths[at]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainables import datasets
from trainables.models import MODELS, ModelFacts, facts_for, with_capability
from trainables.models.needs import CAPABILITIES, IDLE_WITHOUT, NEEDS, SCORES
from trainables.problems import show

Check = Callable[..., list[tuple[str, str]]]


def _facts(model: str, width: int, dataset: str) -> tuple[ModelFacts | None, str | None]:
    """:func:`trainables.models.facts_for`; (None, None) for a name its own rule refuses."""
    if model not in MODELS or dataset not in datasets.DATASETS:
        return None, None
    return facts_for(model, width, dataset)


def _fit(model: str, width: int, dataset: str) -> list[tuple[str, str]]:
    """The model can take the dataset's inputs."""
    _, error = _facts(model, width, dataset)
    return [("", error)] if error else []


def _needs(path: str) -> Check:
    """A value of `path` whose needs (``needs.NEEDS[path]``) the model lacks is refused."""
    table = NEEDS[path]

    def check(value: Any, model: str) -> list[tuple[str, str]]:
        if model not in MODELS:
            return []  # model.name's own rule reports it
        lacking = [c for c in table.get(value, ()) if c not in MODELS[model].has]
        if not lacking:
            return []
        what = CAPABILITIES[lacking[0]]
        models = ", ".join(with_capability(lacking[0]))
        if path in IDLE_WITHOUT:
            message = (
                f"does nothing on model {model}, which has no {what}; models with it: {models}"
            )
            return [("", f"{message}; remove it")]
        word = value if isinstance(value, str) else show(value)
        return [("", f"{word} needs a model with {what}, got {model} (models with it: {models})")]

    return check


def _layers(
    layers: tuple,
    model: str,
    width: int,
    dataset: str,
    method: str,
    granularity: str,
    score: str,
    epochs: int,
) -> list[tuple[str, str]]:
    """``pruning.layers`` names layers the method can prune (weight granularity and IMP may also
    mask the weight-only layers), an empty list has a paper schedule that ends before training
    does, and a score that ranks residual block convs gets only those."""
    found, _ = _facts(model, width, dataset)
    if found is None or method == "none":
        return []  # reported by model.name's rules, or by the rule that an unpruned trial sets none
    valid = found.weight_layers if method == "imp" or granularity == "weight" else found.layers
    out = [
        (
            f"[{i}].name",
            f"unknown layer {ls.name!r} of model {model}; choose one of: {', '.join(valid)}",
        )
        for i, ls in enumerate(layers)
        if ls.name not in valid
    ]
    if method != "schedule":
        return out
    if not layers:
        last = max((ls.end_epoch for ls in found.schedule), default=-1)
        if not found.schedule:
            out.append(("", f"empty, and model {model} has no default schedule; list the layers"))
        elif last >= epochs:
            out.append(
                (
                    "",
                    f"empty means model {model}'s default schedule, which prunes until epoch "
                    f"{last}; that must be < train.epochs ({epochs}): list the layers",
                )
            )
    if "residual" in SCORES.get(score, ()) and found.block_layers:  # else the score's need says it
        named = [(f"[{i}].name", ls.name) for i, ls in enumerate(layers)] or [
            ("", ls.name) for ls in found.schedule
        ]
        out += [
            (at, f"the {score!r} score ranks residual block convs only, got {name!r}")
            for at, name in named
            if name not in found.block_layers
        ]
    return out


_LAYER_PATHS = (
    "pruning.layers",
    "model.name",
    "model.width",
    "dataset.name",
    "pruning.method",
    "pruning.granularity",
    "pruning.score",
    "train.epochs",
)

# (paths, check, index of the path the problems are reported at)
RULES: tuple[tuple[tuple[str, ...], Check, int], ...] = (
    (("model.name", "model.width", "dataset.name"), _fit, 0),
    *(((path, "model.name"), _needs(path), 0) for path in NEEDS),
    (_LAYER_PATHS, _layers, 0),
)

"""Checks that need the model: does it accept the dataset, do the named layers exist, and can a
tracked score (``activations``) rank them?

Each (model, width, dataset) the spec can produce is built once on PyTorch's ``meta`` device (no
memory, no initialisation cost: about 0.4 s for ResNet-18, a few ms for MNIST-1D models), which
gives its prunable layer names and its paper-default layer schedule. This is the one place where
validating a spec imports torch (through ``trainables.models``), and only after the spec parsed.
"""

from __future__ import annotations

import functools
from typing import Any

from search_spaces.cross import combos
from trainables import datasets, models
from trainables.errors import UserError
from trainables.problems import Problems


@functools.cache
def _build(model: str, width: int, dataset: str) -> tuple[Any, str | None]:
    """(`model` built on the meta device for `dataset`'s inputs, None), or (None, the error)."""
    import torch

    info = datasets.get(dataset)
    shape, classes = info.input_shape, info.num_classes
    try:
        with torch.device("meta"):
            return models.get(model).build(shape, classes, width), None
    except UserError as exc:
        return None, str(exc).removeprefix("model.name: ")
    except (ValueError, RuntimeError) as exc:
        return None, f"{model} cannot take dataset {dataset} inputs of shape {shape}: {exc}"


@functools.cache
def model_facts(model: str, width: int, dataset: str) -> tuple[tuple[str, ...], tuple, str | None]:
    """(prunable layer names, default schedule, error) of `model` built for `dataset`'s inputs."""
    built, error = _build(model, width, dataset)
    if error:
        return (), (), error
    return tuple(built.prunable_layers()), tuple(built.default_schedule()), None


def tracked_layers(score: str, model: str, width: int, dataset: str) -> tuple[str, ...] | None:
    """The layers tracked score `score` can rank in `model` (empty: none); None when `score` is
    read from the parameters (``trainables.pruning.scores.TRACKED_SCORES``)."""
    from trainables.pruning.scores import TRACKED_SCORES

    tracker = TRACKED_SCORES.get(score)
    if tracker is None:
        return None
    built, error = _build(model, width, dataset)
    return () if error else tuple(tracker.scorable(built))


def check_models(spec: Any, problems: Problems) -> None:
    """Model/dataset fit, layer names, tracked scores, and the default schedule against
    train.epochs."""
    paths = (
        "model.name",
        "model.width",
        "dataset.name",
        "pruning.method",
        "pruning.layers",
        "train.epochs",
        "pruning.score",
    )
    for (mwhere, model), (_, width), (_, dataset), (_, method), (lwhere, layers), (
        _,
        epochs,
    ), (swhere, score) in combos(spec, *paths):
        names, default, error = model_facts(model, width, dataset)
        if error:
            problems.add(mwhere, error)
            continue
        for i, layer in enumerate(layers):
            if layer.name not in names:
                problems.add(
                    f"{lwhere}[{i}].name",
                    f"unknown layer {layer.name!r} of model {model}; choose one of: {', '.join(names)}",
                )
        if method == "schedule":
            scorable = tracked_layers(score, model, width, dataset)
            _check_tracked(score, model, scorable, layers, (swhere, lwhere), problems)
        if method == "schedule" and not layers:
            last = max((layer.end_epoch for layer in default), default=-1)
            if not default:
                problems.add(
                    lwhere, f"empty, and model {model} has no default schedule; list the layers"
                )
            elif last >= epochs:
                problems.add(
                    lwhere,
                    f"empty means model {model}'s default schedule, which prunes until epoch {last}; "
                    f"that must be < train.epochs ({epochs}): list the layers",
                )


def _check_tracked(
    score: str,
    model: str,
    scorable: tuple[str, ...] | None,
    layers: tuple,
    where: tuple[str, str],
    problems: Problems,
) -> None:
    """A tracked score needs a model it can track and listed layers it can rank (the default
    schedules of the models it tracks are theirs)."""
    if scorable is None:
        return
    if not scorable:
        problems.add(where[0], f"{score!r} needs a ResNet with residual blocks, got model {model}")
        return
    for i, layer in enumerate(layers):
        if layer.name not in scorable:
            problems.add(
                f"{where[1]}[{i}].name",
                f"the {score!r} score ranks residual block convs only, got {layer.name!r}",
            )

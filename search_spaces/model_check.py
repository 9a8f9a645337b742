"""Checks that need the model: does it accept the dataset, and do the named layers exist?

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
from trainables.fields import Problems


@functools.cache
def model_facts(model: str, width: int, dataset: str) -> tuple[tuple[str, ...], tuple, str | None]:
    """(prunable layer names, default schedule, error) of `model` built for `dataset`'s inputs."""
    import torch

    info = datasets.get(dataset)
    shape, classes = info.input_shape, info.num_classes
    try:
        with torch.device("meta"):
            built = models.get(model).build(shape, classes, width)
    except UserError as exc:
        return (), (), str(exc).removeprefix("model.name: ")
    except (ValueError, RuntimeError) as exc:
        return (), (), f"{model} cannot take dataset {dataset} inputs of shape {shape}: {exc}"
    return tuple(built.prunable_layers()), tuple(built.default_schedule()), None


def check_models(spec: Any, problems: Problems) -> None:
    """Model/dataset fit, layer names, and the default schedule against train.epochs."""
    paths = (
        "model.name",
        "model.width",
        "dataset.name",
        "pruning.method",
        "pruning.layers",
        "train.epochs",
    )
    for (mwhere, model), (_, width), (_, dataset), (_, method), (lwhere, layers), (
        _,
        epochs,
    ) in combos(spec, *paths):
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

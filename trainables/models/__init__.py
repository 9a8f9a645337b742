"""The model registry: one :class:`ModelInfo` entry per model, and :func:`build_model`.

Importing this package is cheap (no torch): each entry's builder imports its model module only
when called, so the trial config and the study spec can validate names and read model facts
without loading torch. Adding a model touches its model file and its entry here, nothing else.

Every builder has the signature ``(input_shape, num_classes, width) -> PrunableModel``
(``width == 0`` means the architecture's default) and returns a model implementing the pruning
interface of :class:`trainables.models.base.PrunableModel`.

Model-dependent rules have one owner. Each entry states the capabilities its model has
(``has``: ``trainables.models.needs.CAPABILITIES``: a BatchNorm after each prunable layer,
residual blocks, 2-d input), which every build checks against the built model; :func:`facts_for`
gives its prunable layers and paper schedule (read off the model built on the ``meta`` device,
once per model, width and dataset); ``trainables.models.rules`` refuses the settings whose needs
(``trainables.models.needs``) a model lacks, at spec time and when a trial is built.

Cost facts (used by ``--dry-run`` plans): ``gpu_epoch_s`` is seconds per epoch (one training pass
plus about one evaluation pass) on one A100 for ``reference_train_size`` training examples,
scaled linearly with the training-set size: ResNet-18 on CIFAR-10 takes about 2.1 s per epoch
(200 epochs in about 7 minutes); VGG11-BN costs about 0.27x its FLOPs (0.6 s); OpenLTH's VGG-16
about 0.56x (1.2 s); the small CIFAR ResNets are bound by kernel latency rather than FLOPs
(ResNet-20 about 0.5 s, ResNet-56 1.0 s, assumed). ``cpu_epoch_s`` (one thread) is given only
where CPU training is practical: measured for the MNIST-1D models with
``trainables.loop.TrialRunner`` on a 2-core machine. Numbers are order-of-magnitude guides.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from trainables import datasets
from trainables.errors import UserError
from trainables.models.facts import ModelFacts, check_declared, facts_of
from trainables.models.needs import CAPABILITIES

if TYPE_CHECKING:
    from trainables.models.base import PrunableModel
    from trainables.pruning.schedule import LayerSchedule

Builder = Callable[[tuple[int, ...], int, int], "PrunableModel"]


@dataclass(frozen=True)
class ModelInfo:
    """One registered model: its builder and the facts planning and defaults need."""

    build: Builder
    description: str
    paper_scale: bool  # a CIFAR model of the papers: flatness sums 100 eigenvalues (else 10)
    gpu_epoch_s: float | None  # seconds per epoch on one A100 at reference_train_size
    reference_train_size: int
    cpu_epoch_s: float | None = None  # one CPU thread, same reference size; None = impractical
    has: frozenset[str] = frozenset()  # capabilities (needs.CAPABILITIES); checked at every build


def _build(module: str, function: str, *args: int | tuple[int, ...]) -> PrunableModel:
    """Call ``trainables.models.<module>.<function>``; the module (and torch) is imported only
    when one of its models is built."""
    return getattr(importlib.import_module(f"trainables.models.{module}"), function)(*args)


def _lazy(module: str, function: str) -> Builder:
    return partial(_build, module, function)


MODELS: dict[str, ModelInfo] = {
    "mlp": ModelInfo(
        build=_lazy("mlp", "mlp"),
        description="MNIST-1D MLP, 40-256-256-10",
        paper_scale=False,
        gpu_epoch_s=0.05,
        reference_train_size=4_000,
        cpu_epoch_s=0.08,
    ),
    "cnn1d": ModelInfo(
        build=_lazy("cnn1d", "cnn1d"),
        description="MNIST-1D reference CNN with BatchNorm",
        paper_scale=False,
        gpu_epoch_s=0.05,
        reference_train_size=4_000,
        cpu_epoch_s=0.1,
        has=frozenset({"batchnorm"}),
    ),
    "lenet": ModelInfo(
        build=_lazy("mlp", "lenet"),
        description="LeNet-300-100 (OpenLTH mnist_lenet_300_100)",
        paper_scale=False,
        gpu_epoch_s=0.3,
        reference_train_size=60_000,
    ),
    "vgg11_bn": ModelInfo(
        build=_lazy("vgg", "vgg11_bn"),
        description="VGG11-BN, one-Linear head (Bartoldson et al.)",
        paper_scale=True,
        gpu_epoch_s=0.6,
        reference_train_size=50_000,
        has=frozenset({"batchnorm", "input_2d"}),
    ),
    "vgg16": ModelInfo(
        build=_lazy("vgg", "vgg16"),
        description="VGG-16 with BatchNorm (OpenLTH cifar_vgg_16)",
        paper_scale=True,
        gpu_epoch_s=1.2,
        reference_train_size=50_000,
        has=frozenset({"batchnorm", "input_2d"}),
    ),
    "resnet18": ModelInfo(
        build=_lazy("resnet", "resnet18"),
        description="CIFAR ResNet-18 (kuangliu)",
        paper_scale=True,
        gpu_epoch_s=2.1,
        reference_train_size=50_000,
        has=frozenset({"batchnorm", "residual", "input_2d"}),
    ),
    "resnet20": ModelInfo(
        build=_lazy("resnet", "resnet20"),
        description="ResNet-20, option-A shortcuts (Idelbayev)",
        paper_scale=True,
        gpu_epoch_s=0.5,
        reference_train_size=50_000,
        has=frozenset({"batchnorm", "residual", "input_2d"}),
    ),
    "resnet56": ModelInfo(
        build=_lazy("resnet", "resnet56"),
        description="ResNet-56, option-A shortcuts (Idelbayev)",
        paper_scale=True,
        gpu_epoch_s=1.0,
        reference_train_size=50_000,
        has=frozenset({"batchnorm", "residual", "input_2d"}),
    ),
    "openlth_resnet20": ModelInfo(
        build=_lazy("openlth_resnet", "openlth_resnet20"),
        description="ResNet-20, 1x1-conv shortcuts (OpenLTH cifar_resnet_20)",
        paper_scale=True,
        gpu_epoch_s=0.5,
        reference_train_size=50_000,
        has=frozenset({"batchnorm", "residual", "input_2d"}),
    ),
}
NAMES: tuple[str, ...] = tuple(sorted(MODELS))


def get(name: str) -> ModelInfo:
    """The entry registered as ``name``; UserError listing the valid names on a miss."""
    try:
        return MODELS[name]
    except KeyError:
        raise UserError(
            f"model.name: unknown model {name!r}; choose one of: {', '.join(NAMES)}"
        ) from None


def build_model(
    name: str, width: int, input_shape: tuple[int, ...], num_classes: int
) -> PrunableModel:
    """Build model ``name`` for per-example inputs ``input_shape`` (e.g. ``(1, 40)``,
    ``(3, 32, 32)``) and ``num_classes`` outputs. Initialisation draws from torch's global RNG:
    seed it first. The built model must have exactly the capabilities its entry declares."""
    info = get(name)
    model = info.build(tuple(input_shape), num_classes, width)
    check_declared(name, info.has, model)
    return model


def with_capability(capability: str) -> tuple[str, ...]:
    """The registered models that have `capability` (``needs.CAPABILITIES``), sorted."""
    assert capability in CAPABILITIES, capability
    return tuple(name for name in NAMES if capability in MODELS[name].has)


@functools.cache
def facts_for(model: str, width: int, dataset: str) -> tuple[ModelFacts | None, str | None]:
    """(the layer facts of `model` built for `dataset`'s inputs, None), or (None, why it cannot
    take them: the message for ``model.name``). Built once per (model, width, dataset) on the
    ``meta`` device: no memory, no initialisation (about 0.4 s for ResNet-18, a few ms for the
    MNIST-1D models)."""
    import torch

    info = datasets.get(dataset)
    shape, classes = info.input_shape, info.num_classes
    try:
        with torch.device("meta"):
            return facts_of(build_model(model, width, shape, classes)), None
    except UserError as exc:
        return None, str(exc).removeprefix("model.name: ")
    except (ValueError, RuntimeError) as exc:
        return None, f"{model} cannot take dataset {dataset} inputs of shape {shape}: {exc}"


def schedule_layers(
    layers: Sequence[LayerSchedule], model: str, width: int, dataset: str
) -> tuple[LayerSchedule, ...]:
    """The layers a schedule prunes: ``pruning.layers``, or when empty the model's paper schedule
    (empty when the model has none, which validation refuses). The one place the default is
    resolved."""
    if layers:
        return tuple(layers)
    found, _ = facts_for(model, width, dataset)
    return found.schedule if found else ()


def flatness_top_k(model: str, top_k: int) -> int:
    """``flatness.top_k`` with 0 resolved: 100 on the papers' CIFAR models, 10 on the small ones
    (Bartoldson et al.'s Fig. 6 sums the top 100 eigenvalues)."""
    if top_k:
        return top_k
    return 100 if get(model).paper_scale else 10


__all__ = [
    "MODELS",
    "NAMES",
    "ModelFacts",
    "ModelInfo",
    "build_model",
    "facts_for",
    "flatness_top_k",
    "get",
    "schedule_layers",
    "with_capability",
]

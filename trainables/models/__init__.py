"""Model registry: ``MODELS`` (name -> builder) and :func:`build_model`.

Every builder has the signature ``(input_shape, num_classes, width) -> PrunableModel``
(``width == 0`` means the architecture's default) and returns a model implementing the pruning
interface of :class:`trainables.models.base.PrunableModel`.
"""

from __future__ import annotations

from collections.abc import Callable

from trainables.config import ModelConfig
from trainables.errors import UserError
from trainables.models.base import PrunableModel
from trainables.models.cnn1d import cnn1d
from trainables.models.mlp import lenet, mlp
from trainables.models.resnet import resnet18, resnet20, resnet56
from trainables.models.vgg import vgg11_bn, vgg16

Builder = Callable[[tuple[int, ...], int, int], PrunableModel]

MODELS: dict[str, Builder] = {
    "mlp": mlp,
    "cnn1d": cnn1d,
    "lenet": lenet,
    "vgg11_bn": vgg11_bn,
    "vgg16": vgg16,
    "resnet18": resnet18,
    "resnet20": resnet20,
    "resnet56": resnet56,
}


def get(name: str) -> Builder:
    """The builder registered as ``name``; UserError listing the valid names on a miss."""
    try:
        return MODELS[name]
    except KeyError:
        valid = ", ".join(sorted(MODELS))
        raise UserError(f"model.name: unknown model {name!r}; choose one of: {valid}") from None


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> PrunableModel:
    """Build ``cfg.name`` for per-example inputs ``input_shape`` (e.g. ``(1, 40)``, ``(3, 32, 32)``)
    and ``num_classes`` outputs. Initialisation draws from torch's global RNG: seed it first."""
    builder = get(cfg.name)
    if cfg.width < 0:
        raise UserError(f"model.width: must be >= 0 (0 = the default width), got {cfg.width}")
    return builder(tuple(input_shape), num_classes, cfg.width)


__all__ = ["MODELS", "PrunableModel", "build_model", "get"]

"""The trial configuration: one fully resolved run of pruned training.

`TrialConfig` is the hand-off between `search_spaces` (which expands a study spec into trials) and
`trainables` (which runs one). It is frozen, typed, and serialises to a plain nested dict of
JSON scalars, lists and dicts, which is what travels through Ray Tune's ``param_space``.

Identity comes from content: :func:`trial_id` hashes the canonical JSON of the config. Fields
added later must default to a value that keeps old ids: ``canonical_dict`` drops every field whose
value equals its default, as open_lth's ``desc.py`` does (pinned by a golden test).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

Granularity = Literal["filter", "weight"]
Score = Literal["l2", "l1", "ebn", "magnitude"]
Target = Literal["smallest", "largest", "random"]
Scope = Literal["layer", "global"]
Method = Literal["none", "schedule", "imp"]
PerturbationMode = Literal["none", "zeroing", "gaussian"]
PerturbationVariant = Literal["iter", "cumulative"]
Rewind = Literal["lr", "weight"]
ImpControl = Literal["none", "extended_dense", "sparse_from_start"]
Optimizer = Literal["adam", "sgd"]
Split = Literal["test", "train"]
GeneralizationMeasure = Literal["best_after_last_event", "final", "val_selected"]


@dataclass(frozen=True)
class DatasetConfig:
    name: str = "mnist1d"  # mnist1d | mnist | cifar10 | cifar100
    data_dir: str = ""  # "" means the default: $PRUNETUNE_DATA or ~/.cache/prunetune/data
    num_samples: int = 5000  # mnist1d only: total samples; 4,000 train / 1,000 test by default
    label_noise_fraction: float = 0.0  # fraction of training labels relabelled uniformly
    validation_fraction: float = 0.0  # fraction of the training set held out for validation
    augment: bool = False  # random crop (4-pixel padding) + horizontal flip, image datasets only
    download: bool = False  # torchvision datasets only: download into data_dir when absent


@dataclass(frozen=True)
class ModelConfig:
    name: str = "cnn1d"  # mlp | cnn1d | lenet | vgg11_bn | vgg16 | resnet18 | resnet20 | resnet56
    width: int = 0  # 0 = the architecture's default width (channels / hidden units)


@dataclass(frozen=True)
class TrainConfig:
    optimizer: Optimizer = "adam"
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = ()  # MultiStepLR milestones, in epochs
    gamma: float = 0.1  # MultiStepLR factor
    batch_size: int = 128
    eval_batch_size: int = 1000
    epochs: int = 20
    bf16: bool = False  # CUDA only: bf16 autocast
    channels_last: bool = False  # CUDA only, 2-d image models


@dataclass(frozen=True)
class LayerSchedule:
    """Pruning schedule of one prunable layer (Bartoldson et al.'s per-layer linear rule)."""

    name: str  # a prunable layer name declared by the model
    final_fraction: float  # fraction of the layer's units removed by the last event
    start_epoch: int  # first event epoch (0-based epoch index; the event follows its training)
    end_epoch: int  # no event after this epoch


@dataclass(frozen=True)
class PerturbationConfig:
    """Re-entry and noise injection (Bartoldson et al. Fig. 5 / D2) instead of removal."""

    mode: PerturbationMode = "none"
    variant: PerturbationVariant = "iter"
    steps: int = 0  # training steps the perturbation lasts after each event
    restore: bool = False  # put the saved originals back when the window ends


@dataclass(frozen=True)
class ImpConfig:
    """Iterative magnitude pruning with rewinding (Jin et al. 2022; OpenLTH defaults)."""

    rounds: int = 0  # pruning rounds after the first (dense) training of T = train.epochs
    fraction: float = 0.2  # fraction of the remaining weights pruned per round
    rewind: Rewind = "lr"  # lr: keep weights, replay LR schedule; weight: reset to rewind_epoch
    rewind_epoch: int = 0  # weight rewinding only
    # extended_dense: the rounds with fraction 0; sparse_from_start: the final mask from init
    control: ImpControl = "none"


@dataclass(frozen=True)
class PruningConfig:
    method: Method = "none"
    granularity: Granularity = "filter"
    score: Score = "l2"
    target: Target = "smallest"
    scope: Scope = "layer"  # weight granularity: per-layer or global ranking
    period: int = 1  # epochs between events
    layers: tuple[LayerSchedule, ...] = ()  # empty = the model's paper default layer set
    perturbation: PerturbationConfig = field(default_factory=PerturbationConfig)
    imp: ImpConfig = field(default_factory=ImpConfig)


@dataclass(frozen=True)
class FlatnessConfig:
    epochs: tuple[int, ...] = ()  # 0-based epoch indices at which to measure; empty = never
    subset_size: int = 512
    split: Split = "test"
    top_k: int = 0  # Hessian eigenvalues summed; 0 = auto (see flatness_top_k)
    power_iters: int = 20
    eps_delta: float = 0.1  # epsilon-flatness: the loss rise to find along top eigenvectors


@dataclass(frozen=True)
class TrialConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    flatness: FlatnessConfig = field(default_factory=FlatnessConfig)
    seed: int = 0
    generalization: GeneralizationMeasure = "best_after_last_event"
    per_example_loss: bool = False  # store float16 per-example train loss at rounds / end

    @property
    def is_baseline(self) -> bool:
        return self.pruning.method == "none"

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        return _from_plain(cls, data, "")

    def canonical_dict(self) -> dict[str, Any]:
        """The dict with default-valued fields dropped: the basis of ids (stable under new fields)."""
        return _drop_defaults(self)


# Models of the papers' CIFAR experiments (run on GPUs): their flatness sums the top 100
# eigenvalues, as Bartoldson et al.'s Fig. 6; the MNIST-1D / MNIST models default to 10.
PAPER_SCALE_MODELS = frozenset({"vgg11_bn", "vgg16", "resnet18", "resnet20", "resnet56"})


def flatness_top_k(config: TrialConfig) -> int:
    """``flatness.top_k`` with 0 resolved: 100 on the papers' CIFAR models, 10 on the small ones."""
    if config.flatness.top_k:
        return config.flatness.top_k
    return 100 if config.model.name in PAPER_SCALE_MODELS else 10


def trial_id(config: TrialConfig) -> str:
    """12 hex chars of the SHA-256 of the canonical config (seed included)."""
    return content_hash(config.canonical_dict())[:12]


def baseline_key(config: TrialConfig) -> str:
    """Hash of everything but the pruning fields and the seed: equal keys are matched baselines."""
    d = config.canonical_dict()
    d.pop("pruning", None)
    d.pop("seed", None)
    return content_hash(d)[:12]


def baseline_of(config: TrialConfig, seed: int | None = None) -> TrialConfig:
    """The unpruned baseline matching `config` (same everything but pruning; optionally a seed)."""
    return dataclasses.replace(
        config, pruning=PruningConfig(), seed=config.seed if seed is None else seed
    )


def content_hash(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# --- (de)serialisation ---------------------------------------------------------------------------


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [_to_plain(v) for v in obj]
    return obj


def _drop_defaults(obj: Any) -> Any:
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            sub = _drop_defaults(value)
            if sub:
                out[f.name] = sub
            continue
        default = f.default if f.default is not dataclasses.MISSING else dataclasses.MISSING
        if default is not dataclasses.MISSING and value == default:
            continue
        out[f.name] = _to_plain(value)
    return out


def _from_plain(cls: type, data: Any, path: str) -> Any:
    """Build dataclass `cls` from plain data, strictly: unknown keys and wrong types raise."""
    if not isinstance(data, dict):
        raise ValueError(f"{path or 'config'}: must be a mapping, got {type(data).__name__}")
    hints = _type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"{_join(path, unknown[0])}: unknown key; valid keys: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(hints[k], v, _join(path, k)) for k, v in data.items()}
    return cls(**kwargs)


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints`` once per class: it dominates parsing 10,000 trial configs."""
    return typing.get_type_hints(cls)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _from_plain(tp, value, path)
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{path}: must be a list, got {type(value).__name__}")
        return tuple(_coerce(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ValueError(
                f"{path}: must be one of {', '.join(map(str, choices))}, got {value!r}"
            )
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{path}: must be a boolean, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{path}: must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{path}: must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{path}: must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported field type {tp!r} at {path}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key

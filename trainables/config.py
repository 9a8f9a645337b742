"""The trial configuration: one fully resolved run of pruned training.

`TrialConfig` is the hand-off between `search_spaces` (which expands a study spec into trials) and
`trainables` (which runs one). It is frozen, typed, and serialises to a plain nested dict of
JSON scalars, lists and dicts, which is what travels through Ray Tune's ``param_space``.

Every field carries its help text and value rule (:func:`trainables.fields.param`); rules that
relate fields are :data:`trainables.cross_rules.CROSS_RULES`; ``trainables.cross_rules.validate``
applies both to a config, and the study spec applies the same rules to every value a field can
take, so each rule is written once.
Identity (content hashes) is :mod:`trainables.identity`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from trainables import datasets, models
from trainables.coerce import parse_mapping
from trainables.fields import INVALID, param, section
from trainables.models import needs
from trainables.problems import Problems, plain
from trainables.pruning.schedule import LayerSchedule, layer_list_rule
from trainables.value_rules import above, all_of, at_least, at_most, fraction, increasing, one_of

Granularity = Literal["filter", "weight"]
# The names of scores, targets, methods and perturbation modes are the keys of the tables of what
# each needs from a model (trainables.models.needs), their one source.
Score = Literal[tuple(needs.SCORES)]
Target = Literal[tuple(needs.TARGETS)]
Scope = Literal["layer", "global"]
Method = Literal[tuple(needs.METHODS)]
PerturbationMode = Literal[tuple(needs.PERTURBATION_MODES)]
NOISE_MODES = ("zeroing", "gaussian")  # the modes whose units re-enter after a window
PerturbationVariant = Literal["iter", "cumulative"]
EvalPasses = Literal["none", "official"]
Rewind = Literal["lr", "weight"]
ImpControl = Literal["none", "extended_dense", "sparse_from_start"]
Optimizer = Literal["adam", "sgd"]
Split = Literal["test", "train"]
HessianAlgorithm = Literal["official", "projected"]
MAX_EPOCHS = 100_000  # an upper bound that plans and tables can hold; far above any paper's 325
GeneralizationMeasure = Literal["best_after_last_event", "final", "val_selected"]
Normalization = Literal["paper", "imagenet"]
TRIAL_SEED = -1  # dataset.label_noise_seed: draw the relabelled subset from the trial's seed


def _noise_seed(v: int) -> str | None:
    """numpy's RandomState takes seeds below 2**32, and OpenLTH's draw also uses seed + 1."""
    if TRIAL_SEED <= v <= 2**32 - 2:
        return None
    return f"must be -1 (the trial's seed) or in [0, {2**32 - 2}], got {v}"


@dataclass(frozen=True)
class DatasetConfig:
    name: str = param("mnist1d", "dataset", one_of("dataset", datasets.NAMES))
    data_dir: str = param("", "where datasets live; '' = $PRUNETUNE_DATA or ~/.cache/prunetune")
    num_samples: int = param(5000, "MNIST-1D only: total samples (80% train)", at_least(10))
    label_noise_fraction: float = param(
        0.0, "fraction of training labels relabelled uniformly at random", fraction(closed=True)
    )
    label_noise_seed: int = param(
        TRIAL_SEED,
        "-1 = the trial's seed; >= 0 = one relabelled subset for every seed (OpenLTH's draw)",
        _noise_seed,
    )
    validation_fraction: float = param(
        0.0, "fraction of the training set held out for validation", fraction()
    )
    augment: bool = param(False, "random crop (4-pixel padding) + flip; image datasets only")
    normalization: Normalization = param(
        "paper", "image statistics: paper (each dataset's own) or imagenet (OpenLTH's CIFAR-10)"
    )
    download: bool = param(False, "torchvision datasets: download into data_dir when absent")
    max_examples: int = param(
        0, "keep the first N training and N test examples; 0 = all", at_least(0)
    )
    synthetic: bool = param(
        False, "learnable random data of the dataset's shape and classes (--smoke); means nothing"
    )


@dataclass(frozen=True)
class ModelConfig:
    name: str = param("cnn1d", "architecture", one_of("model", models.NAMES))
    width: int = param(0, "channels / hidden units; 0 = the architecture's default", at_least(0))


@dataclass(frozen=True)
class TrainConfig:
    optimizer: Optimizer = param("adam", "adam or sgd")
    lr: float = param(1e-3, "learning rate", above(0))
    momentum: float = param(0.9, "sgd only: momentum", fraction())
    nesterov: bool = param(False, "sgd only: Nesterov momentum")
    weight_decay: float = param(0.0, "L2 weight decay", at_least(0))
    milestones: tuple[int, ...] = param((), "MultiStepLR milestones, in epochs", increasing(1))
    gamma: float = param(0.1, "MultiStepLR factor", above(0))
    batch_size: int = param(128, "training batch size", at_least(1))
    eval_batch_size: int = param(1000, "evaluation batch size", at_least(1))
    epochs: int = param(
        20,
        "training epochs (IMP: epochs per round)",
        all_of(at_least(1), at_most(MAX_EPOCHS, "one record per epoch")),
    )
    bf16: bool = param(False, "bf16 autocast on the trial's device (CUDA, or CPU: often slower)")
    channels_last: bool = param(False, "2-d image models: channels-last weights and batches")


@dataclass(frozen=True)
class PerturbationConfig:
    """Re-entry and noise injection (Bartoldson et al. Fig. 5 / D2) instead of removal."""

    mode: PerturbationMode = param(
        "none",
        "none, zeroing or gaussian; conv_mask: prune, masking only the conv weight (Prune_L of "
        "the official noise runs)",
    )
    variant: PerturbationVariant = param("iter", "iter: this event's units; cumulative: all so far")
    steps: int = param(0, "training steps the perturbation lasts after each event", at_least(0))
    restore: bool = param(False, "put the saved originals back when the window ends")
    eval_passes: EvalPasses = param(
        "official",
        "official: test-evaluation batches are perturbed passes too, as officially counted; "
        "none: only training steps count (one pass at the event)",
    )


@dataclass(frozen=True)
class ImpConfig:
    """Iterative magnitude pruning with rewinding (Jin et al. 2022; OpenLTH defaults)."""

    rounds: int = param(0, "pruning rounds after the first (dense) training", at_least(0))
    fraction: float = param(0.2, "fraction of the remaining weights pruned per round", fraction())
    rewind: Rewind = param("lr", "lr: keep weights, replay the LR schedule; weight: rewind them")
    rewind_epoch: int = param(0, "weight rewinding: the epoch rewound to", at_least(0))
    control: ImpControl = param(
        "none", "extended_dense: the rounds with fraction 0; sparse_from_start: final mask at init"
    )


@dataclass(frozen=True)
class PruningConfig:
    method: Method = param("none", "none (unpruned), schedule or imp")
    granularity: Granularity = param("filter", "filter (structured) or weight (unstructured)")
    score: Score = param(
        "l2",
        "unit score: l2, l1, ebn, ebn_signed, activations (filters) or magnitude (weights)",
    )
    target: Target = param("smallest", "which units the score removes: smallest, largest, random")
    scope: Scope = param("layer", "weight granularity: rank per layer or globally")
    period: int = param(1, "epochs between events", at_least(1))
    layers: tuple[LayerSchedule, ...] = param(
        (), "per-layer schedules; empty = the model's paper default", layer_list_rule
    )
    scratch: bool = param(
        False,
        "prune at initialisation: every layer's fraction at epoch 0 (start = end = 0), which "
        "trains nothing and takes no LR step",
    )
    perturbation: PerturbationConfig = section(PerturbationConfig, "re-entry / noise injection")
    imp: ImpConfig = section(ImpConfig, "iterative magnitude pruning")


@dataclass(frozen=True)
class FlatnessConfig:
    epochs: tuple[int, ...] = param((), "0-based epochs at which to measure", increasing(0))
    subset_size: int = param(512, "examples of the fixed evaluation subset", at_least(1))
    split: Split = param("test", "the subset's split: test or train")
    top_k: int = param(
        0, "Hessian eigenvalues summed; 0 = 100 on CIFAR models, else 10", at_least(0)
    )
    power_iters: int = param(20, "power-iteration steps per eigenvalue", at_least(1))
    eps_delta: float = param(0.1, "epsilon-flatness: the loss rise to find", above(0))
    hessian: HessianAlgorithm = param(
        "official", "top-k eigenpairs: official (warm-started, lambda-deflated) or projected"
    )


@dataclass(frozen=True)
class TrialConfig:
    dataset: DatasetConfig = section(DatasetConfig, "the data")
    model: ModelConfig = section(ModelConfig, "the network")
    train: TrainConfig = section(TrainConfig, "the optimiser and its schedule")
    pruning: PruningConfig = section(PruningConfig, "what is pruned, when and how")
    flatness: FlatnessConfig = section(FlatnessConfig, "flatness measurements")
    seed: int = param(0, "the trial's seed", at_least(0))
    generalization: GeneralizationMeasure = param(
        "best_after_last_event", "the generalization measure"
    )
    per_example_loss: bool = param(False, "store float16 per-example training losses")

    @property
    def is_baseline(self) -> bool:
        return self.pruning.method == "none"

    def to_dict(self) -> dict[str, Any]:
        return plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        """Parse plain data strictly: unknown keys and wrong types raise ValueError (all lines)."""
        problems = Problems()
        cfg = parse_mapping(cls, data, "", problems)
        problems.raise_if_any(ValueError)
        assert cfg is not INVALID
        return cfg


def baseline_of(config: TrialConfig, seed: int | None = None) -> TrialConfig:
    """The unpruned baseline matching `config` (same everything but pruning; optionally a seed)."""
    return dataclasses.replace(
        config, pruning=PruningConfig(), seed=config.seed if seed is None else seed
    )

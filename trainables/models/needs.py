"""What each setting needs from a model: the capability vocabulary and, per score, target, method
and perturbation mode, the capabilities it needs (stdlib only, so the trial config can read it).

These tables are the one source of the names: ``trainables.config`` builds its ``Score``,
``Target``, ``Method`` and ``PerturbationMode`` choices from their keys, and the implementations
(``trainables.pruning.scores``, ``trainables.methods``) must register exactly these names (a test
says so). Each model's registry entry (``trainables.models.MODELS``) states which capabilities it
has; ``trainables.models.rules`` refuses a setting whose needs the model lacks, at spec time and
again when a trial is built.
"""

from __future__ import annotations

from typing import Any

# capability -> what the model has, as a sentence fragment ("a model with ...").
CAPABILITIES: dict[str, str] = {
    "batchnorm": "a BatchNorm after each prunable layer",
    "residual": "residual blocks",
    "input_2d": "2-d input (Conv2d layers)",
}

Needs = tuple[str, ...]

# pruning.score: E[BN] reads the following BatchNorm's gamma and beta; `activations` watches the
# residual blocks' convs. The norms and magnitudes read the weight only.
SCORES: dict[str, Needs] = {
    "l2": (),
    "l1": (),
    "ebn": ("batchnorm",),
    "ebn_signed": ("batchnorm",),
    "activations": ("residual",),
    "magnitude": (),
}
TARGETS: dict[str, Needs] = {"smallest": (), "largest": (), "random": ()}
METHODS: dict[str, Needs] = {"none": (), "schedule": (), "imp": ()}
# Re-entry and noise act on a layer's weight rows (and its BatchNorm where there is one).
PERTURBATION_MODES: dict[str, Needs] = {"none": (), "zeroing": (), "gaussian": (), "conv_mask": ()}

# field path -> {value: needs}; a value absent from its table needs nothing.
NEEDS: dict[str, dict[Any, Needs]] = {
    "pruning.score": SCORES,
    "pruning.target": TARGETS,
    "pruning.method": METHODS,
    "pruning.perturbation.mode": PERTURBATION_MODES,
    # channels-last memory changes only 4-d tensors: on other models it does nothing.
    "train.channels_last": {True: ("input_2d",)},
}
# The settings that run without the capability but do nothing (refused as idle, not as failing).
IDLE_WITHOUT: frozenset[str] = frozenset({"train.channels_last"})

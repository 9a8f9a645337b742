"""Per-field value rules of a study spec: ranges and names.

Each rule is checked on every value a field can take (each grid item, each choice, both bounds of
a range), so an error names the exact item: ``train.lr[2]: must be > 0, got -0.1``. Type errors
are found earlier, by the parser; rules that relate fields live in ``search_spaces.cross``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import Any

from search_spaces.sweeps import INVALID, candidates, show
from trainables.records import RECORD_KEYS

# Kept in sync with trainables.data / trainables.models by tests/search_spaces/test_names.py;
# literal here so that validating a spec never imports torch.
DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "mnist", "mnist1d")
MODELS: tuple[str, ...] = (
    "cnn1d",
    "lenet",
    "mlp",
    "resnet18",
    "resnet20",
    "resnet56",
    "vgg11_bn",
    "vgg16",
)

# A rule returns None (fine), a message, or a list of (path suffix, message) for list items.
Rule = Callable[[Any], "str | list[tuple[str, str]] | None"]


def at_least(bound: float) -> Rule:
    return lambda v: None if v >= bound else f"must be >= {bound}, got {show(v)}"


def above(bound: float) -> Rule:
    return lambda v: None if v > bound else f"must be > {bound}, got {show(v)}"


def fraction(closed: bool = False) -> Rule:
    if closed:
        return lambda v: None if 0 <= v <= 1 else f"must be in [0, 1], got {show(v)}"
    return lambda v: None if 0 <= v < 1 else f"must be in [0, 1), got {show(v)}"


def one_of(what: str, names: tuple[str, ...]) -> Rule:
    def rule(v: str) -> str | None:
        if v in names:
            return None
        return f"unknown {what} {v!r}; choose one of: {', '.join(names)}"

    return rule


def increasing(first: int) -> Rule:
    """A tuple of ints, each >= first, strictly increasing."""

    def rule(v: tuple[int, ...]) -> str | None:
        if any(x < first for x in v):
            return f"every item must be >= {first}, got {show(v)}"
        if any(b <= a for a, b in itertools.pairwise(v)):
            return f"must be strictly increasing, got {show(v)}"
        return None

    return rule


def layer_list(v: tuple) -> list[tuple[str, str]]:
    """Per-item problems of a pruning.layers list, as (path suffix, message)."""
    out = []
    seen: set[str] = set()
    for i, layer in enumerate(v):
        if not 0 <= layer.final_fraction < 1:
            out.append(
                (f"[{i}].final_fraction", f"must be in [0, 1), got {show(layer.final_fraction)}")
            )
        if layer.start_epoch < 0:
            out.append((f"[{i}].start_epoch", f"must be >= 0, got {layer.start_epoch}"))
        if layer.end_epoch < layer.start_epoch:
            out.append(
                (
                    f"[{i}].end_epoch",
                    f"must be >= start_epoch ({layer.start_epoch}), got {layer.end_epoch}",
                )
            )
        if layer.name in seen:
            out.append((f"[{i}].name", f"each layer may appear once, got {layer.name!r} again"))
        seen.add(layer.name)
    return out


FIELD_RULES: dict[str, Rule] = {
    "dataset.name": one_of("dataset", DATASETS),
    "dataset.num_samples": at_least(10),
    "dataset.label_noise_fraction": fraction(closed=True),
    "dataset.validation_fraction": fraction(),
    "model.name": one_of("model", MODELS),
    "model.width": at_least(0),
    "train.lr": above(0),
    "train.momentum": fraction(),
    "train.weight_decay": at_least(0),
    "train.milestones": increasing(1),
    "train.gamma": above(0),
    "train.batch_size": at_least(1),
    "train.eval_batch_size": at_least(1),
    "train.epochs": at_least(1),
    "pruning.period": at_least(1),
    "pruning.layers": layer_list,
    "pruning.perturbation.steps": at_least(0),
    "pruning.imp.rounds": at_least(0),
    "pruning.imp.fraction": fraction(),
    "pruning.imp.rewind_epoch": at_least(0),
    "flatness.epochs": increasing(0),
    "flatness.subset_size": at_least(1),
    "flatness.top_k": at_least(0),
    "flatness.power_iters": at_least(1),
    "flatness.eps_delta": above(0),
}


# Record keys a search may optimise (numbers the trainable reports every epoch).
METRICS: tuple[str, ...] = tuple(
    k
    for k in RECORD_KEYS
    if k
    not in ("epoch", "is_event", "status", "units_removed", "per_example_loss_file", "imp_round")
)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

# Top-level fields and the search / resources sections (no sweeps there).
TOP_RULES: dict[str, Rule] = {
    "name": lambda v: (
        None
        if NAME_RE.match(v)
        else f"must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit, got {v!r}"
    ),
    "max_concurrent_trials": at_least(1),
    "checkpoint_frequency": at_least(1),
    "retries": at_least(0),
    "storage": lambda v: None if v.strip() else "must not be empty",
}


def _whole_or_fraction(v: float) -> str | None:
    if v < 0:
        return f"must be >= 0, got {v!r}"
    if v > 1 and v != int(v):
        return f"must be a fraction below 1 or a whole number, got {v!r}"
    return None


PLAIN_RULES: dict[str, Rule] = {
    "search.num_samples": at_least(1),
    "search.metric": one_of("metric", METRICS),
    "search.seed": at_least(0),
    "resources.cpu": above(0),
    "resources.gpu": _whole_or_fraction,
}


def problems_of(path: str, value: Any, where: str | None = None) -> list[tuple[str, str]]:
    """(location, message) for every FIELD_RULES[path] violation among a field's candidates.

    ``path`` is the field path without grid indices (it keys FIELD_RULES); ``where`` (default
    ``path``) is where the value sits in the spec, e.g. ``pruning.perturbation[1].steps``.
    """
    rule = FIELD_RULES.get(path)
    if rule is None or value is INVALID:
        return []
    out = []
    for at, v in candidates(value, where or path):
        message = rule(v)
        if isinstance(message, str):
            out.append((at, message))
        elif message:
            out.extend((at + suffix, m) for suffix, m in message)
    return out

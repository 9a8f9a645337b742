"""Sweep values: one convention for every sweepable field of a study spec.

A sweepable field holds one of

- a **single value**: ``lr: 0.001``;
- a **grid** (a YAML list): ``target: [smallest, random, largest]``; every value is run, crossed
  with the other grids and the seeds;
- a **distribution** (a mapping with exactly one of these keys), for ``search.algorithm`` random or
  optuna only: ``{uniform: [low, high]}``, ``{loguniform: [low, high]}`` (float fields),
  ``{int: [low, high]}`` (integer fields; both ends inclusive), ``{choice: [a, b, ...]}``.

Fields whose value is itself a list (``train.milestones``, ``flatness.epochs``,
``pruning.layers``) take a list as their single value; a grid over them is a list of lists
(``milestones: [[150, 300], [100, 200]]``) and a choice is ``{choice: [[150, 300], [100]]}``.

A section (``dataset``, ``model``, ``train``, ``pruning``, ``flatness``) or sub-section
(``pruning.perturbation``, ``pruning.imp``) given as a list of mappings is a **grid of
sections**: each item is a section of its own (unset fields take their defaults, sweeps inside
are expanded per item) and the items' configurations are unioned. It expresses studies that are
not a full cross product, e.g. ``perturbation: [{mode: none}, {mode: zeroing, steps: [0, 50]}]``.

A one-item grid is the same as its single value; grid items must be distinct.

This module parses those values (each single value is type-checked by
:func:`trainables.coerce.coerce`: no casting but int -> float), samples distributions, and turns
them back into plain YAML data.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from trainables.coerce import coerce
from trainables.fields import INVALID
from trainables.problems import Problems, show

DistKind = Literal["uniform", "loguniform", "int", "choice"]
DIST_KINDS: tuple[str, ...] = typing.get_args(DistKind)


@dataclass(frozen=True)
class Grid:
    """A grid dimension: each value gives its own trials (cross product with the other grids)."""

    values: tuple[Any, ...]


@dataclass(frozen=True)
class Dist:
    """A distribution, sampled by random search or searched by Optuna.

    ``args`` is ``(low, high)`` for uniform / loguniform (floats) and int (ints, both inclusive),
    and the tuple of choices for choice.
    """

    kind: DistKind
    args: tuple[Any, ...]


# --- sweepable values ------------------------------------------------------------------------------


def is_list_field(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple


def parse_sweep(tp: Any, value: Any, path: str, problems: Problems) -> Any:
    """A sweepable field's value: a single value, a Grid or a Dist (INVALID after a problem)."""
    if isinstance(value, dict):
        return _parse_dist(tp, value, path, problems)
    if isinstance(value, list):
        grid = _is_grid(tp, value)
        if grid is None:
            problems.add(
                path, "mixes lists and single items; a grid over a list field is a list of lists"
            )
            return INVALID
        if grid:
            return _parse_grid(tp, value, path, problems)
    return coerce(tp, value, path, problems)


def _is_grid(tp: Any, value: list) -> bool | None:
    """Whether a list is a grid; None when it mixes lists and single items in a list field."""
    if not is_list_field(tp):
        return True
    nested = [isinstance(v, list) for v in value]
    if value and all(nested):
        return True
    return None if any(nested) else False


def first_repeat(items: list[Any]) -> int | None:
    """The index of the first item equal to an earlier one, or None; linear for hashable items
    (a list of 100,000 values is checked at once, not in minutes)."""
    seen: set[Any] = set()
    for i, v in enumerate(items):
        try:
            if v in seen:
                return i
            seen.add(v)
        except TypeError:  # unhashable: compare with every earlier item
            if v in items[:i]:
                return i
    return None


def _parse_grid(tp: Any, value: list, path: str, problems: Problems) -> Any:
    if not value:
        problems.add(path, "an empty list is not a grid; give at least one value")
        return INVALID
    items = [coerce(tp, v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if any(v is INVALID for v in items):
        return INVALID
    i = first_repeat(items)
    if i is not None:
        problems.add(f"{path}[{i}]", f"grid values must be distinct, got {show(items[i])} twice")
        return INVALID
    return items[0] if len(items) == 1 else Grid(tuple(items))


def _parse_dist(tp: Any, value: dict, path: str, problems: Problems) -> Any:
    keys = list(value)
    if len(keys) != 1 or keys[0] not in DIST_KINDS:
        problems.add(
            path,
            "must be a single value, a list (grid) or a distribution with one key of "
            f"{', '.join(DIST_KINDS)}, got a mapping with keys {', '.join(map(str, keys))}",
        )
        return INVALID
    kind = keys[0]
    args = value[kind]
    where = f"{path}.{kind}"
    if kind == "choice":
        if not isinstance(args, list) or len(args) < 2:
            problems.add(where, f"must be a list of at least 2 values, got {show(args)}")
            return INVALID
        grid = _parse_grid(tp, args, where, problems)
        return INVALID if grid is INVALID else Dist("choice", grid.values)
    wanted = float if kind in ("uniform", "loguniform") else int
    if tp is not wanted:
        applies = "float fields" if wanted is float else "integer fields"
        hint = {int: "int", float: "uniform or loguniform"}.get(tp, "choice")
        problems.add(where, f"applies to {applies}; for this field use {hint}")
        return INVALID
    if not isinstance(args, list) or len(args) != 2:
        problems.add(where, f"must be [low, high], got {show(args)}")
        return INVALID
    low, high = (coerce(tp, v, f"{where}[{i}]", problems) for i, v in enumerate(args))
    if low is INVALID or high is INVALID:
        return INVALID
    if not low < high:
        problems.add(where, f"must be [low, high] with low < high, got {show(args)}")
        return INVALID
    if kind == "loguniform" and low <= 0:
        problems.add(where, f"needs low > 0, got {show(low)}")
        return INVALID
    return Dist(kind, (low, high))


def candidates(value: Any, path: str) -> list[tuple[str, Any]]:
    """Every value a field can take, with the path that names it in an error.

    Single: itself; Grid: each item (``path[i]``); choice: each choice (``path.choice[i]``);
    uniform / loguniform / int: both bounds (``path.uniform[0]``, ``[1]``).
    """
    if isinstance(value, Grid):
        return [(f"{path}[{i}]", v) for i, v in enumerate(value.values)]
    if isinstance(value, Dist):
        return [(f"{path}.{value.kind}[{i}]", v) for i, v in enumerate(value.args)]
    return [(path, value)]


def sample(dist: Dist, rng: np.random.Generator) -> Any:
    """One draw: uniform and loguniform floats, int inclusive of both ends, choice uniform."""
    if dist.kind == "uniform":
        return float(rng.uniform(*dist.args))
    if dist.kind == "loguniform":
        low, high = dist.args
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    if dist.kind == "int":
        low, high = dist.args
        return int(rng.integers(low, high, endpoint=True))
    return dist.args[int(rng.integers(len(dist.args)))]


def plain(value: Any) -> Any:
    """YAML/JSON data for a value: Grid -> list, Dist -> {kind: [...]}, tuples -> lists."""
    if isinstance(value, Grid):
        return [plain(v) for v in value.values]
    if isinstance(value, Dist):
        return {value.kind: [plain(v) for v in value.args]}
    if dataclasses.is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value

"""The one type check of a single value, and a dataclass read from a mapping (the trial config
and the study spec both use them): no casting but int -> float; unknown keys refused; a problem
is added as ``path: rule, got value`` and the parser returns ``INVALID``."""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Literal

from trainables.fields import INVALID, join, type_hints
from trainables.problems import Problems, kind_of, show

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def coerce(tp: Any, value: Any, path: str, problems: Problems) -> Any:
    """Check one single value against a field type; INVALID after a recorded problem.

    Ints are accepted (and converted) where floats are wanted; nothing else is converted. A
    dataclass type reads a mapping with exactly its fields (all required unless defaulted).
    """
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return parse_mapping(tp, value, path, problems)
    if origin is tuple:
        item_tp = typing.get_args(tp)[0]
        if not isinstance(value, (list, tuple)):
            problems.add(path, f"must be a list, got {kind_of(value)}")
            return INVALID
        items = [coerce(item_tp, v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        return INVALID if any(v is INVALID for v in items) else tuple(items)
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool) or value not in choices:
            problems.add(path, f"must be one of {', '.join(map(str, choices))}, got {show(value)}")
            return INVALID
        return value
    expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if tp not in expected:
        raise TypeError(f"unsupported field type {tp!r} at {path}")
    ok = (
        isinstance(value, bool)
        if tp is bool
        else isinstance(value, str)
        if tp is str
        else isinstance(value, (int, float) if tp is float else int) and not isinstance(value, bool)
    )
    if not ok:
        problems.add(path, f"must be {expected[tp]}, got {kind_of(value)}")
        return INVALID
    if tp is int and not INT64_MIN <= value <= INT64_MAX:
        problems.add(path, f"must fit in 64 bits (tables store int64), got {show(value)}")
        return INVALID
    if tp is float:
        if not math.isfinite(value):
            problems.add(path, f"must be a finite number, got {show(value)}")
            return INVALID
        return float(value)
    return value


def parse_mapping(cls: type, value: Any, path: str, problems: Problems) -> Any:
    """A dataclass from a mapping: unknown keys refused, fields without a default required.

    A class with required fields is an *item* (a ``pruning.layers`` entry): its messages list
    the keys in field order and name the item (``every layer needs ...``, ``cls.item_name``).
    """
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    required = [f.name for f in fields if _required(f)]
    keys = ", ".join(names if required else sorted(names))
    if not isinstance(value, dict):
        shape = f"a mapping with keys {keys}" if required else "a mapping"
        problems.add(path or "config", f"must be {shape}, got {kind_of(value)}")
        return INVALID
    ok = True
    for key in value:
        if key not in names:
            problems.add(join(path, str(key)), f"unknown key; valid keys: {keys}")
            ok = False
    for name in required:
        if name not in value:
            item = getattr(cls, "item_name", cls.__name__.lower())
            problems.add(join(path, name), f"missing; every {item} needs {keys}")
            ok = False
    hints = type_hints(cls)
    kwargs = {
        k: coerce(hints[k], v, join(path, k), problems) for k, v in value.items() if k in hints
    }
    if not ok or any(v is INVALID for v in kwargs.values()):
        return INVALID
    return cls(**kwargs)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING

"""Configuration fields that carry their own help text and value rule.

Each field of :mod:`trainables.config` (and of the study spec's own sections) is declared with
:func:`param`: its default, one line of help, and the rule its values must satisfy. The trial
config, the study spec, the CLI's help and every error message read them from the field, so a
rule is written once (open_lth puts the help next to each hparam the same way).

A rule is a function of one value returning None (fine), a message (``must be >= 1, got 0``), or,
for list fields, ``[(path suffix, message), ...]`` naming the offending items. :func:`coerce` is
the one type check of a single value (the trial config and the spec both use it): no casting but
int -> float; a problem is added to :class:`Problems` as ``path: rule, got value``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import typing
from collections.abc import Callable
from fractions import Fraction
from typing import Any, Literal

from trainables.errors import UserError

Rule = Callable[[Any], "str | list[tuple[str, str]] | None"]
INVALID = object()  # what a parser returns after it recorded a problem


def param(default: Any, help: str, rule: Rule | None = None) -> Any:
    """A dataclass field with a default, one line of help and an optional value rule."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults are not allowed; use a tuple")
    return dataclasses.field(default=default, metadata={"help": help, "rule": rule})


def section(cls: type, help: str) -> Any:
    """A nested section field (a dataclass defaulting to its own defaults)."""
    return dataclasses.field(default_factory=cls, metadata={"help": help, "rule": None})


def help_of(cls: type, name: str) -> str:
    return _field(cls, name).metadata.get("help", "")


def rule_of(cls: type, name: str) -> Rule | None:
    return _field(cls, name).metadata.get("rule")


def _field(cls: type, name: str) -> dataclasses.Field:
    return {f.name: f for f in dataclasses.fields(cls)}[name]


def rule_at(cls: type, path: str) -> Rule | None:
    """The rule of the field at dotted ``path`` below dataclass ``cls`` (``pruning.imp.rounds``);
    None when the field has none or the path names no field."""
    *sections, name = path.split(".")
    for part in sections:
        hints = type_hints(cls)
        if part not in hints or not dataclasses.is_dataclass(hints[part]):
            return None
        cls = hints[part]
    names = {f.name for f in dataclasses.fields(cls)}
    return rule_of(cls, name) if name in names else None


def problems_of(rule: Rule | None, candidates: list[tuple[str, Any]]) -> list[tuple[str, str]]:
    """(location, message) of every rule violation among ``(where, value)`` candidates."""
    out = []
    for at, v in candidates:
        message = rule(v) if rule else None
        if isinstance(message, str):
            out.append((at, message))
        elif message:
            out.extend((at + suffix, m) for suffix, m in message)
    return out


# --- rules ----------------------------------------------------------------------------------------


def at_least(bound: float) -> Rule:
    return lambda v: None if v >= bound else f"must be >= {bound}, got {show(v)}"


def above(bound: float) -> Rule:
    return lambda v: None if v > bound else f"must be > {bound}, got {show(v)}"


def fraction(closed: bool = False) -> Rule:
    """In [0, 1] (``closed``) or [0, 1)."""
    if closed:
        return lambda v: None if 0 <= v <= 1 else f"must be in [0, 1], got {show(v)}"
    return lambda v: None if 0 <= v < 1 else f"must be in [0, 1), got {show(v)}"


def one_of(what: str, names: tuple[str, ...]) -> Rule:
    """A registered name (``unknown model 'x'; choose one of: a, b``)."""

    def rule(v: str) -> str | None:
        return None if v in names else f"unknown {what} {v!r}; choose one of: {', '.join(names)}"

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


def all_of(*rules: Rule) -> Rule:
    """The first problem of several rules."""

    def rule(v: Any) -> Any:
        for r in rules:
            problem = r(v)
            if problem:
                return problem
        return None

    return rule


def count_of(n: int, fraction_: float) -> int:
    """``ceil(n * fraction)`` with the fraction taken as the decimal it prints as, so ``0.07`` of
    3,600 is 252 (binary floating point says 252.00000000000003, whose ceiling is 253)."""
    return math.ceil(Fraction(repr(float(fraction_))) * n)


def at_most(bound: float, why: str) -> Rule:
    return lambda v: None if v <= bound else f"must be <= {bound:g} ({why}), got {show(v)}"


# --- problems and values as the user wrote them ---------------------------------------------------


class Problems:
    """Collects ``path: rule, got value`` lines; raises them all as one UserError."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, path: str, message: str) -> None:
        line = f"{path}: {message}"
        if line not in self.lines:
            self.lines.append(line)

    def raise_if_any(self, error: type[Exception] = UserError) -> None:
        if self.lines:
            raise error("\n".join(self.lines))


def show(value: Any) -> str:
    """A value as the user wrote it in YAML: 'text', 0.001, true, null, [1, 2], {k: v}."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    if dataclasses.is_dataclass(value):
        return show(plain(value))
    return repr(value)


def kind_of(value: Any) -> str:
    """How a YAML value is described in a type error."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return show(value)


def plain(value: Any) -> Any:
    """JSON/YAML data of a value: dataclasses -> dicts, tuples -> lists (see sweeps for sweeps)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


# --- the one type check ---------------------------------------------------------------------------


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


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints``, cached per class (it dominates parsing 10,000 configs)."""
    return typing.get_type_hints(cls)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def check_rules(cls: type, obj: Any, path: str, problems: Problems) -> None:
    """Apply every field rule of a (nested) config dataclass instance to its values."""
    for f in dataclasses.fields(cls):
        value = getattr(obj, f.name)
        where = join(path, f.name)
        if dataclasses.is_dataclass(value):
            check_rules(type(value), value, where, problems)
            continue
        for at, message in problems_of(f.metadata.get("rule"), [(where, value)]):
            problems.add(at, message)

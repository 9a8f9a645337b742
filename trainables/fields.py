"""Configuration fields that carry their own help text and value rule.

Each field of :mod:`trainables.config` (and of the study spec's own sections) is declared with
:func:`param`: its default, one line of help, and the rule its values must satisfy. The trial
config, the study spec, the CLI's help and every error message read them from the field, so a
rule is written once (open_lth puts the help next to each hparam the same way).

A rule is a function of one value returning None (fine), a message (``must be >= 1, got 0``), or,
for list fields, ``[(path suffix, message), ...]`` naming the offending items; the common ones
are built by :mod:`trainables.value_rules`. :func:`trainables.coerce.coerce` is the one type check
of a single value; a problem is added to :class:`trainables.problems.Problems` as
``path: rule, got value``.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable
from typing import Any

from trainables.problems import Problems

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

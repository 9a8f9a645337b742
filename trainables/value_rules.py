"""The common value rules of config fields (see :mod:`trainables.fields`): each returns None
for a good value, else the message ``must be ..., got <value>``."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from typing import Any

from trainables.fields import Rule
from trainables.problems import show


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
        return (
            None if v in names else f"unknown {what} {show(v)}; choose one of: {', '.join(names)}"
        )

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

"""Parsing pieces of a study spec: sections (whose leaves may hold sweeps), plain mappings of
fields, and seeds. Each records every problem in a :class:`~trainables.problems.Problems` and returns
a value of the right type (a default-valued one after a problem), so parsing goes on and all the
problems are reported at once. :mod:`search_spaces.spec` assembles the whole spec from them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from search_spaces.cross import MAX_TRIALS
from search_spaces.sweeps import Grid, candidates, first_repeat, parse_sweep
from trainables.coerce import coerce
from trainables.fields import INVALID, problems_of, rule_of, type_hints
from trainables.problems import Problems, kind_of


def mapping(value: Any, path: str, valid: list[str], problems: Problems) -> dict[str, Any] | None:
    """`value` as a mapping whose unknown keys are problems; None (a problem) when it is not one."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add(path, f"must be a mapping, got {kind_of(value)}")
        return None
    for key in value:
        if key not in valid:
            problems.add(f"{path}.{key}", f"unknown key; valid keys: {', '.join(sorted(valid))}")
    return value


def parse_section(cls: type, value: Any, where: str, problems: Problems) -> Any:
    """A section: a mapping (its leaves may be sweeps) or a list of mappings (a grid of sections).

    ``where`` names the value in errors (``pruning.perturbation[1]``).
    """
    if isinstance(value, list):
        if not value:
            problems.add(where, "an empty list is not a grid; give at least one mapping")
            return cls()
        items = [parse_section(cls, v, f"{where}[{i}]", problems) for i, v in enumerate(value)]
        repeat = first_repeat(items)
        if repeat is not None:
            problems.add(
                f"{where}[{repeat}]", "grid items must be distinct, got a repeated mapping"
            )
        return items[0] if len(items) == 1 else Grid(tuple(items))
    return parse_fields(cls, value, where, problems, sweeps=True)


def parse_fields(cls: type, value: Any, where: str, problems: Problems, *, sweeps: bool) -> Any:
    """A mapping of `cls`'s fields: each value type-checked (as a sweep when `sweeps`), then its
    field's rule applied to every value it can take; sub-sections parsed as sections."""
    hints = type_hints(cls)
    fields = dataclasses.fields(cls)
    data = mapping(value, where, [f.name for f in fields], problems)
    if data is None:
        return cls()
    kwargs = {}
    for f in fields:
        if f.name not in data:
            continue
        tp, at = hints[f.name], f"{where}.{f.name}"
        if sweeps and dataclasses.is_dataclass(tp):
            kwargs[f.name] = parse_section(tp, data[f.name], at, problems)
            continue
        parse = parse_sweep if sweeps else coerce
        kwargs[f.name] = parse(tp, data[f.name], at, problems)
        if kwargs[f.name] is not INVALID:
            for bad, message in problems_of(rule_of(cls, f.name), candidates(kwargs[f.name], at)):
                problems.add(bad, message)
    return cls(**kwargs)


def parse_seeds(value: Any, problems: Problems) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            problems.add("seeds", f"a seed count must be >= 1, got {value}")
            return INVALID
        if value > MAX_TRIALS:  # checked before the seeds are built: 2**63 of them never fit
            problems.add(
                "seeds",
                f"{value:,} seeds are more than the {MAX_TRIALS:,} trials a study may hold; "
                "split it into several studies",
            )
            return INVALID
        return tuple(range(value))
    if isinstance(value, list) and len(value) > MAX_TRIALS:
        problems.add(
            "seeds",
            f"{len(value):,} seeds are more than the {MAX_TRIALS:,} trials a study may hold",
        )
        return INVALID
    if not isinstance(value, list) or not value:
        problems.add(
            "seeds", f"must be a count or a non-empty list of integers, got {kind_of(value)}"
        )
        return INVALID
    seeds = [coerce(int, v, f"seeds[{i}]", problems) for i, v in enumerate(value)]
    if any(s is INVALID for s in seeds):
        return INVALID
    for i, s in enumerate(seeds):
        if s < 0:
            problems.add(f"seeds[{i}]", f"must be >= 0, got {s}")
    repeat = first_repeat(seeds)
    if repeat is not None:
        problems.add(f"seeds[{repeat}]", f"seeds must be distinct, got {seeds[repeat]} twice")
    return tuple(seeds)

"""Rules that relate fields of a study spec, and which sweeps each search algorithm accepts.

A cross-field rule must hold for every combination of values the related fields can take. With
grids of sections (``perturbation: [{...}, {...}]``) a combination stays inside one grid item:
:func:`combos` never pairs item 0's ``mode`` with item 1's ``steps``. Values that failed to parse
or broke their own field rule are left out (they are reported once, where they are).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterator
from typing import Any

from search_spaces.sweeps import Dist, Grid, candidates, plain
from trainables.config import TrialConfig
from trainables.cross_rules import CROSS_RULES, CrossRule
from trainables.fields import INVALID, problems_of, rule_at, type_hints
from trainables.inert_rules import INERT
from trainables.problems import Problems, show

# The sections of a spec: the TrialConfig fields that are config classes, in order.
SECTION_TYPES: dict[str, type] = {
    f.name: type_hints(TrialConfig)[f.name]
    for f in dataclasses.fields(TrialConfig)
    if dataclasses.is_dataclass(type_hints(TrialConfig)[f.name])
}
SECTIONS: tuple[str, ...] = tuple(SECTION_TYPES)
LIST_FIELDS: tuple[str, ...] = ("train.milestones", "pruning.layers", "flatness.epochs")


def is_section(value: Any) -> bool:
    """True for a spec section (a config class instance), not for a grid of them."""
    return dataclasses.is_dataclass(value) and not isinstance(value, (type, Grid, Dist))


def is_section_grid(value: Any) -> bool:
    return isinstance(value, Grid) and is_section(value.values[0])


def field_path(where: str) -> str:
    """``pruning.perturbation[1].steps`` -> ``pruning.perturbation.steps``."""
    return re.sub(r"\[\d+\]", "", where)


def combos(spec: Any, *paths: str) -> Iterator[tuple[tuple[str, Any], ...]]:
    """Each consistent combination of valid candidate values of `paths`: ``((where, value), ...)``."""
    for assignment in _assign(spec, "", list(dict.fromkeys(paths))):
        yield tuple(assignment[p] for p in paths)


def _assign(node: Any, prefix: str, paths: list[str]) -> Iterator[dict[str, tuple[str, Any]]]:
    groups: dict[str, list[str]] = {}
    for path in paths:
        head, _, rest = path.partition(".")
        groups.setdefault(head, []).append(rest)
    options = []
    for head, rests in groups.items():
        value = getattr(node, head)
        where = f"{prefix}.{head}" if prefix else head
        if value is INVALID:
            return
        if rests == [""]:
            options.append([{head: c} for c in _valid(value, where)])
            continue
        items = (
            [(v, f"{where}[{i}]") for i, v in enumerate(value.values)]
            if isinstance(value, Grid)
            else [(value, where)]
        )
        options.append(
            [
                {f"{head}.{k}": v for k, v in sub.items()}
                for item, at in items
                for sub in _assign(item, at, rests)
            ]
        )
    for combo in itertools.product(*options):
        yield {k: v for part in combo for k, v in part.items()}


def _valid(value: Any, where: str) -> list[tuple[str, Any]]:
    options = candidates(value, where)
    bad = [at for at, _ in problems_of(rule_at(TrialConfig, field_path(where)), options)]
    return [(at, v) for at, v in options if not any(_within(b, at) for b in bad)]


def _within(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


def check_cross(spec: Any, problems: Problems) -> None:
    """The config's rules relating fields (``trainables.cross_rules.CROSS_RULES``), on every
    consistent combination of the fields' candidate values."""
    check_rules(CROSS_RULES, spec, problems)


def check_rules(rules: tuple[CrossRule, ...], spec: Any, problems: Problems) -> None:
    """Each of `rules` on every consistent combination of its fields' candidate values."""
    for rule in rules:
        for combo in combos(spec, *rule.paths):
            values = [v for _, v in combo]
            where = combo[rule.at][0]
            for suffix, message in rule.check(*values):
                problems.add(where + suffix, message)


# --- sweeps per search algorithm ------------------------------------------------------------------


def swept_leaves(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """(where, value) of every Grid or Dist under a section, in field order; a grid of sections
    is yielded itself, then the sweeps inside each of its items (``prefix[i].field``)."""
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        where = f"{prefix}.{f.name}"
        if is_section_grid(value):
            yield where, value
            for i, item in enumerate(value.values):
                yield from swept_leaves(item, f"{where}[{i}]")
        elif isinstance(value, (Grid, Dist)):
            yield where, value
        elif is_section(value):
            yield from swept_leaves(value, where)


def all_swept(spec: Any) -> list[tuple[str, Any]]:
    out = []
    for name in SECTIONS:
        section = getattr(spec, name)
        if is_section_grid(section):
            out.append((name, section))
            for i, item in enumerate(section.values):
                out.extend(swept_leaves(item, f"{name}[{i}]"))
        else:
            out.extend(swept_leaves(section, name))
    return out


def check_search(spec: Any, problems: Problems) -> None:
    """Which sweeps each algorithm accepts (see search_spaces.sweeps for the convention).

    Fields the algorithm does not use (``trainables.inert_rules.INERT``) are refused.
    grid: lists only. random: anything, but num_samples > 1 needs a
    distribution to draw from. optuna: sweeps only under ``pruning``
    (so one set of baselines matches every trial), no list fields, no grids of sections.
    """
    search = spec.search
    if INVALID in (search.algorithm, search.num_samples):
        return
    for entry in INERT:  # search.seed, search.num_samples: the table's spec-level entries
        if entry.field.startswith("search."):
            value = getattr(search, entry.field.removeprefix("search."))
            owner = getattr(search, entry.owner.removeprefix("search."))
            if INVALID not in (value, owner):
                for _, message in entry.checker(type(spec))(owner, value):
                    problems.add(entry.field, message)
    swept = all_swept(spec)
    if search.algorithm == "grid":
        for where, value in swept:
            if isinstance(value, Dist):
                problems.add(
                    where, "a distribution needs search.algorithm random or optuna, got grid"
                )
    if search.algorithm == "random" and search.num_samples != 1 and not problems.lines:
        if not any(isinstance(value, Dist) for _, value in swept):
            problems.add(
                "search.num_samples",
                "random search draws its num_samples from distributions and the spec has none "
                f"(the same trials would repeat), got {search.num_samples}; give a distribution "
                "or use search.algorithm grid",
            )
    if search.algorithm != "optuna":
        return
    for where, value in swept:
        if not _under_pruning(where):
            problems.add(
                where,
                "with search.algorithm optuna only pruning fields may be swept "
                f"(the baselines must match every trial), got {show(plain(value))}",
            )
        elif is_section_grid(value) or field_path(where) in LIST_FIELDS:
            kind = "a grid of sections" if is_section_grid(value) else "a list field"
            problems.add(where, f"optuna cannot search {kind}; use search.algorithm grid or random")
    if not any(_under_pruning(w) for w, _ in swept):
        problems.add("search.algorithm", "optuna needs at least one swept pruning field, got none")


def _under_pruning(where: str) -> bool:
    return where == "pruning" or where.startswith(("pruning.", "pruning["))


# --- scale ----------------------------------------------------------------------------------------

MAX_TRIALS = 200_000  # per study: its plan is held in memory and its tables in one process


def _points_of(node: Any) -> int:
    """How many grid points a section has (a distribution counts once; it is drawn per sample)."""
    n = 1
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if is_section_grid(value):
            n *= sum(_points_of(item) for item in value.values)
        elif is_section(value):
            n *= _points_of(value)
        elif isinstance(value, Grid):
            n *= len(value.values)
    return n


def searched_trials(spec: Any) -> int:
    """The pruned-or-not trials the spec's search runs (baselines not counted), computed without
    expanding: grid points x draws x seeds (optuna: samples x seeds)."""
    seeds = len(spec.seeds)
    if spec.search.algorithm == "optuna":
        return spec.search.num_samples * seeds
    n = 1
    for name in SECTIONS:
        section = getattr(spec, name)
        if is_section_grid(section):
            n *= sum(_points_of(item) for item in section.values)
        else:
            n *= _points_of(section)
    has_dist = any(isinstance(v, Dist) for _, v in all_swept(spec))
    draws = spec.search.num_samples if spec.search.algorithm == "random" and has_dist else 1
    return n * draws * seeds


def check_scale(spec: Any, problems: Problems) -> None:
    """Refuse a study beyond :data:`MAX_TRIALS` before it is expanded (naming what multiplies)."""
    if problems.lines:
        return  # counts of an invalid spec mean nothing
    n = searched_trials(spec)
    if n <= MAX_TRIALS:
        return
    factors = [f"seeds {len(spec.seeds)}"] + [
        f"{where} {len(v.values)}" for where, v in all_swept(spec) if isinstance(v, Grid)
    ]
    if spec.search.algorithm != "grid":
        factors.append(f"search.num_samples {spec.search.num_samples}")
    problems.add(
        "seeds",
        f"the spec expands to {n:,} trials ({' x '.join(factors)}), more than the {MAX_TRIALS:,} "
        "a study may hold; split it into several studies",
    )

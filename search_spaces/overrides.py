"""``KEY=VALUE`` overrides of a spec's fields on the command line, in Hydra's spelling.

``prunetune run quickstart train.epochs=5 seeds=1 pruning.target=[smallest,largest]``

- KEY is a dotted field path of the spec (``train.epochs``, ``pruning.imp.rounds``, ``seeds``);
  it must exist in the spec's schema, which :func:`key_tree` reads from the spec's own
  dataclasses. An unknown key is refused with the closest valid one suggested.
- VALUE is YAML in flow style, read exactly as a spec file reads values
  (:func:`search_spaces.yaml_io.load_yaml`): ``5`` an int, ``1e-3`` a float, ``[a, b]`` a list
  (a grid, or a list field's value), ``{name: fc1, ...}`` a mapping, ``'5'`` a string. An empty
  VALUE (``dataset.data_dir=``) is the empty string, as in Hydra.
- Overrides edit the spec's plain data (the dict its YAML loads to) before validation, so
  validation reports a bad value as it would in the file. They apply in the order given; a later
  one wins over an earlier one on the same key.
- Setting a key inside a section that the data lacks creates the section (``pruning.imp.rounds=3``
  on a spec without ``pruning``).
- Where the data holds a grid of sections (a list of mappings, e.g. ``pruning.perturbation:
  [{mode: none}, {mode: zeroing}]``), a key inside that section is set in EVERY item:
  ``pruning.perturbation.steps=5`` gives each item ``steps: 5``.
- Overriding a whole section (``pruning.perturbation={mode: none}``) replaces it, grid or not;
  unlike Hydra, it does not merge into what the file gave.

Not supported: Hydra's ``+key`` / ``++key`` / ``~key`` prefixes (every key exists in the schema
already) and its comma sweeps ``key=a,b`` (write a grid, ``key=[a,b]``).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from search_spaces.sweeps import Dist, Grid
from search_spaces.yaml_io import load_yaml
from trainables.errors import UserError
from trainables.problems import show

# The command line's help for the KEY=VALUE arguments (`prunetune run`, `prunetune submit`).
OVERRIDES_HELP = (
    "spec fields to change, Hydra style: train.epochs=5 seeds=1 'pruning.target=[smallest,largest]' "
    "(values read as YAML; the resolved spec.yaml records them)"
)

_EXAMPLE = "e.g. train.epochs=5"
# Sweep value wrappers: a field typed ``int | Grid | Dist`` is still a leaf.
_VALUE_WRAPPERS = (Grid, Dist)


@dataclass(frozen=True)
class Override:
    """One parsed ``KEY=VALUE``: ``path`` the key's segments, ``value`` the YAML-read value."""

    text: str  # the item as given, for messages
    path: tuple[str, ...]
    value: Any

    @property
    def key(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class KeyTree:
    """The keys a spec accepts: each field name -> its section's tree, or None for a leaf."""

    fields: Mapping[str, KeyTree | None]

    def paths(self) -> list[str]:
        """Every dotted key path, sections and leaves, in field order."""
        out = []
        for name, sub in self.fields.items():
            out.append(name)
            if sub is not None:
                out.extend(f"{name}.{p}" for p in sub.paths())
        return out


def _said(text: str) -> str:
    """An override as error lines quote it: cut to 80 characters (a value may be huge)."""
    return repr(text) if len(text) <= 80 else f"{text[:80]!r}..."


def key_tree(cls: type) -> KeyTree:
    """The key paths of dataclass `cls`, read from its fields and their type hints.

    A field is a section when its type (or a member of its union type, sweep wrappers aside) is a
    dataclass; anything else, list-valued fields such as ``pruning.layers`` included, is a leaf.
    """
    hints = typing.get_type_hints(cls)
    fields: dict[str, KeyTree | None] = {}
    for f in dataclasses.fields(cls):
        section = _section_class(hints[f.name])
        fields[f.name] = None if section is None else key_tree(section)
    return KeyTree(types.MappingProxyType(fields))


def _section_class(tp: Any) -> type | None:
    members = typing.get_args(tp) if _is_union(tp) else (tp,)
    sections = [m for m in members if dataclasses.is_dataclass(m) and m not in _VALUE_WRAPPERS]
    assert len(sections) <= 1, f"a field typed {tp} mixes sections"
    return sections[0] if sections else None


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def parse_overrides(items: list[str], valid: KeyTree | None = None) -> list[Override]:
    """Parse ``KEY=VALUE`` items (split at the first ``=``); every problem in one UserError.

    With `valid`, unknown keys are refused here too, so that one message lists every problem.
    """
    problems: list[str] = []
    out: list[Override] = []
    for item in items:
        key, eq, raw = item.partition("=")
        if not eq or not key:
            problems.append(f"override {_said(item)}: must be KEY=VALUE, {_EXAMPLE}")
            continue
        try:
            value = "" if raw == "" else load_yaml(raw, f"override {_said(item)}")
        except UserError as exc:
            problems.append(str(exc))
            continue
        out.append(Override(item, tuple(key.split(".")), value))
        if valid is not None and (problem := _check_key(out[-1], valid)):
            problems.append(problem)
    if problems:
        raise UserError("\n".join(problems))
    return out


def apply_overrides(data: dict[str, Any], overrides: list[Override], valid: KeyTree) -> dict:
    """A copy of spec data `data` with `overrides` applied in order (`data` is left unchanged).

    Every key must be a path of `valid` (see :func:`key_tree`); every problem (unknown keys,
    a non-mapping where a section is needed) is reported in one UserError.
    """
    problems = [p for o in overrides if (p := _check_key(o, valid))]
    if problems:
        raise UserError("\n".join(problems))
    out = copy.deepcopy(data)
    for o in overrides:
        problems.extend(_set(out, o.path, o.value, o, ""))
    if problems:
        raise UserError("\n".join(problems))
    return out


def _check_key(o: Override, valid: KeyTree) -> str | None:
    """None when `o.path` names a field of `valid`, else the one-line refusal."""
    tree: KeyTree | None = valid
    for name in o.path:
        if tree is None or name not in tree.fields:
            return f"override {_said(o.text)}: unknown key {o.key}; {_hint(o.key, valid)}"
        tree = tree.fields[name]
    return None


def _hint(key: str, valid: KeyTree) -> str:
    close = difflib.get_close_matches(key, valid.paths(), n=1)
    if close:
        return f"did you mean {close[0]}?"
    return f"valid top-level keys: {', '.join(valid.fields)}"


def _set(node: dict, path: tuple[str, ...], value: Any, o: Override, where: str) -> list[str]:
    """Set `value` at `path` under mapping `node` (whose own path is `where`); problems found."""
    name, rest = path[0], path[1:]
    at = f"{where}.{name}" if where else name
    if not rest:
        node[name] = copy.deepcopy(value)  # each grid item gets its own copy
        return []
    child = node.get(name)
    if child is None:
        child = node[name] = {}
    items = child if isinstance(child, list) else [child]
    problems = []
    for i, item in enumerate(items):
        item_at = f"{at}[{i}]" if isinstance(child, list) else at
        if isinstance(item, dict):
            problems.extend(_set(item, rest, value, o, item_at))
        else:
            problems.append(
                f"override {_said(o.text)}: cannot set {o.key}: {item_at} holds "
                f"{type(item).__name__} {show(item)}, not a mapping"
            )
    return problems

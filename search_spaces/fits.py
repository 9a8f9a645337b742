"""The study spec's ``fits`` section: named correlation fits, each a paper figure's rule.

Every study gets the default fits of ``results.fits.aggregate`` (pruned trials; groupings all, target,
model, dataset). A spec may ask for more, one list item per fit::

    fits:
      - name: fig3_per_period        # names the fit's rows in fits.parquet (column ``fit``)
        x: mean_stability            # numeric trials.parquet columns
        y: generalization
        include: [pruned]            # which trials: pruned, unpruned (baselines), scratch
        where: {pruning.target: [smallest, largest]}   # keep trials holding one of the values
        group_by: pruning.period     # one fit per value; '' = one pooled fit
        levels: [trial]              # trial: a point per trial; config: seeds averaged first
        panel: fig3                  # the report panel that draws it (none: the fits table only)

``where`` is one mapping (every column must hold one of its values) or a list of such mappings
(a trial passing any one of them is kept), for subsets that are no cross product: Bartoldson et
al.'s Fig. 2 takes Prune_S at periods 4 and 40 but Prune_L at 40 only::

        where: [{pruning.target: smallest, pruning.period: [4, 40]},
                {pruning.target: largest, pruning.period: 40}]

``panel`` names the report panel that draws the fit from its trial-level rows (one number per
figure: the panel shows the fit's r, never one of its own): ``fig2`` (its trials by target, a line
per group), ``fig3`` (a line and an r per group: needs ``group_by``), ``flatness`` (one subplot
per fit; Figs. 6 / E). At most one fit per spec draws ``fig2``, at most one ``fig3``. A panel no
spec fit draws gets the aggregator's default fit for it (``results.fits.aggregate``, fit names
starting with ``default``).

Column names are trials.parquet columns (``results/README.md``); a config field may be spelled as
its dotted path (``pruning.period`` is the column ``pruning_period``) and is stored as the column
name. Fits are analysis, not science: the spec hash leaves them out, so a fit added to an existing
study's ``spec.yaml`` does not block ``resume``, and ``prunetune aggregate`` reads them from there
(:func:`fits_from_spec_text`).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from typing import Any, Literal

from search_spaces.yaml_io import load_yaml
from trainables.coerce import coerce
from trainables.config import TrialConfig
from trainables.errors import UserError
from trainables.fields import INVALID, param, problems_of, rule_of, type_hints
from trainables.problems import Problems, kind_of, show
from trainables.records import BOOL, FLOAT, INT, STR
from trainables.trial_columns import COLUMN_TAGS, CONFIG_COLUMNS

FitKind = Literal["pruned", "unpruned", "scratch"]
FitLevel = Literal["trial", "config"]
FitPanel = Literal["none", "fig2", "fig3", "flatness"]
KINDS: tuple[str, ...] = typing.get_args(FitKind)
DEFAULT_FIT = "default"  # the ``fit`` of the default rows; no spec fit may take it
SINGLE_PANELS = ("fig2", "fig3")  # panels that draw one fit each
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# trials.parquet columns (trainables.trial_columns): numeric ones may be x / y, scalar ones may
# filter and group.
_KIND_OF_TAG = {BOOL: "bool", INT: "int", FLOAT: "float", STR: "str"}


def column_kind(name: str) -> str:
    """``bool``, ``int``, ``float``, ``str``, or ``nested`` (list / struct) of a trials column."""
    return _KIND_OF_TAG.get(COLUMN_TAGS[name], "nested")


_KIND_WORDS = {
    "bool": "a true/false column",
    "int": "an integer column",
    "float": "a number column",
    "str": "a text column",
    "nested": "a list or struct column",
}
NUMERIC: tuple[str, ...] = tuple(
    n for n in COLUMN_TAGS if column_kind(n) in ("int", "float") and n != "seed"
)
SCALAR: tuple[str, ...] = tuple(n for n in COLUMN_TAGS if column_kind(n) != "nested")


def column_name(name: str) -> str:
    """The trials column a fit names: ``pruning.period`` -> ``pruning_period``."""
    return name.replace(".", "_")


def _column_rule(choices: tuple[str, ...], what: str):
    def rule(v: str) -> str | None:
        if v in choices:
            return None
        if v in COLUMN_TAGS:
            return f"must be {what}, got {v!r} ({_KIND_WORDS[column_kind(v)]})"
        return f"unknown trials.parquet column {v!r}; choose one of: {', '.join(choices)}"

    return rule


def _fit_name(v: str) -> str | None:
    if v == DEFAULT_FIT or v.startswith(f"{DEFAULT_FIT}."):
        return f"{v!r} names the default fits; choose another name"
    if _NAME_RE.fullmatch(v):
        return None
    return (
        f"must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, got {v!r}"
    )


def _distinct(choices: tuple[str, ...]):
    def rule(v: tuple[str, ...]) -> str | None:
        if not v:
            return f"must list at least one of {', '.join(choices)}, got []"
        if len(set(v)) < len(v):
            return f"items must be distinct, got {show(v)}"
        return None

    return rule


def _group_rule(v: str) -> str | None:
    return None if v == "" else _column_rule(SCALAR, "a column of single values")(v)


@dataclass(frozen=True)
class FitFilter:
    """Keep the trials whose ``column`` holds one of ``values`` (typed as the column)."""

    column: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class FitSpec:
    name: str = param("", "names the fit's rows in fits.parquet (column fit)", _fit_name)
    x: str = param(
        "mean_instability",
        "x: a numeric trials.parquet column",
        _column_rule(NUMERIC, "a numeric column"),
    )
    y: str = param(
        "gain", "y: a numeric trials.parquet column", _column_rule(NUMERIC, "a numeric column")
    )
    include: tuple[FitKind, ...] = param(
        ("pruned",),
        "trials fitted: pruned; unpruned (baselines, instability 0); scratch (instability 0)",
        _distinct(KINDS),
    )
    where: tuple[tuple[FitFilter, ...], ...] = param(
        (), "{column: [values]}, or a list of them: the trials kept (all trials when empty)"
    )
    group_by: str = param("", "one fit per value of this trials column; '' = pooled", _group_rule)
    levels: tuple[FitLevel, ...] = param(
        ("trial", "config"),
        "trial: a point per trial; config: seeds averaged first",
        _distinct(typing.get_args(FitLevel)),
    )
    panel: FitPanel = param(
        "none",
        "the report panel drawing this fit's trial-level rows: fig2, fig3 (needs group_by), "
        "flatness, or none",
    )

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML data that parses back to an equal FitSpec."""
        return {
            "name": self.name,
            "x": self.x,
            "y": self.y,
            "include": list(self.include),
            "where": _where_plain(self.where),
            "group_by": self.group_by,
            "levels": list(self.levels),
            "panel": self.panel,
        }


def _where_plain(where: tuple[tuple[FitFilter, ...], ...]) -> Any:
    clauses = [{f.column: list(f.values) for f in clause} for clause in where]
    return clauses[0] if len(clauses) == 1 else clauses if clauses else {}


_FIELDS = tuple(f.name for f in dataclasses.fields(FitSpec))
_PY_TYPES = {"bool": bool, "int": int, "float": float, "str": str}


def _config_value_types() -> dict[str, tuple[Any, Any]]:
    """Config column -> (field type, field rule): a filter value must be a value of the field."""
    out = {}
    for name, path, _ in CONFIG_COLUMNS:
        cls = TrialConfig
        for part in path[:-1]:
            cls = type_hints(cls)[part]
        out[name] = (type_hints(cls)[path[-1]], rule_of(cls, path[-1]))
    return out


_CONFIG_TYPES = _config_value_types()


def parse_fits(value: Any, problems: Problems) -> tuple[FitSpec, ...] | Any:
    """The ``fits`` list (None = no fits); records every problem, returns INVALID after one."""
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.add("fits", f"must be a list of fit mappings, got {kind_of(value)}")
        return INVALID
    before = len(problems.lines)
    specs = [_parse_one(item, f"fits[{i}]", problems) for i, item in enumerate(value)]
    names = [s.name for s in specs if s is not INVALID]
    for i, spec in enumerate(specs):
        if spec is not INVALID and names.count(spec.name) > 1 and spec.name in names[:i]:
            problems.add(f"fits[{i}].name", f"fit names must be unique, got {spec.name!r} twice")
    panels = [s.panel if s is not INVALID else "none" for s in specs]
    for i, panel in enumerate(panels):
        if panel in SINGLE_PANELS and panel in panels[:i]:
            problems.add(f"fits[{i}].panel", f"only one fit may draw panel {panel!r}")
    return INVALID if len(problems.lines) > before else tuple(specs)


def _parse_one(item: Any, at: str, problems: Problems) -> Any:
    if not isinstance(item, dict):
        problems.add(at, f"must be a mapping with keys {', '.join(_FIELDS)}, got {kind_of(item)}")
        return INVALID
    ok = True
    for key in item:
        if key not in _FIELDS:
            problems.add(f"{at}.{key}", f"unknown key; valid keys: {', '.join(_FIELDS)}")
            ok = False
    if "name" not in item:
        problems.add(f"{at}.name", "missing; every fit needs a name")
        ok = False
    hints = typing.get_type_hints(FitSpec)
    kwargs: dict[str, Any] = {}
    for key in _FIELDS:
        if key not in item:
            continue
        where = f"{at}.{key}"
        if key == "where":
            kwargs[key] = _parse_where(item[key], where, problems)
            continue
        parsed = coerce(hints[key], item[key], where, problems)
        if parsed is not INVALID and key in ("x", "y", "group_by"):
            parsed = column_name(parsed)
        if parsed is not INVALID:
            found = problems_of(rule_of(FitSpec, key), [(where, parsed)])
            for bad, message in found:
                problems.add(bad, message)
            parsed = INVALID if found else parsed
        kwargs[key] = parsed
    if not ok or any(v is INVALID for v in kwargs.values()):
        return INVALID
    spec = FitSpec(**kwargs)
    if spec.x == spec.y:
        problems.add(f"{at}.y", f"must differ from x, got {spec.y!r} for both")
        return INVALID
    if spec.panel != "none" and "trial" not in spec.levels:
        problems.add(f"{at}.levels", f"must hold trial for panel {spec.panel!r} to draw it")
        return INVALID
    if spec.panel == "fig3" and not spec.group_by:
        problems.add(f"{at}.group_by", "must name a column for panel 'fig3' (one r per group)")
        return INVALID
    return spec


def _parse_where(value: Any, at: str, problems: Problems) -> Any:
    """One clause (a mapping) or a union of clauses (a list of mappings)."""
    if isinstance(value, dict):
        clause = _parse_clause(value, at, problems)
        return INVALID if clause is INVALID else ((clause,) if clause else ())
    if not isinstance(value, list) or not value:
        got = "[]" if value == [] else kind_of(value)
        problems.add(at, f"must be a mapping {{column: [values]}} or a list of them, got {got}")
        return INVALID
    clauses = [_parse_clause(v, f"{at}[{i}]", problems) for i, v in enumerate(value)]
    return INVALID if any(c is INVALID for c in clauses) else tuple(clauses)


def _parse_clause(value: Any, at: str, problems: Problems) -> Any:
    if not isinstance(value, dict):
        problems.add(at, f"must be a mapping {{column: [values]}}, got {kind_of(value)}")
        return INVALID
    filters, ok = [], True
    for key, raw in value.items():
        column = column_name(str(key))
        where = f"{at}.{key}"
        message = _column_rule(SCALAR, "a column of single values")(column)
        if message:
            problems.add(where, message)
            ok = False
            continue
        items = raw if isinstance(raw, list) else [raw]
        if not items:
            problems.add(where, "must list at least one value, got []")
            ok = False
            continue
        tp, rule = _CONFIG_TYPES.get(column, (_PY_TYPES[column_kind(column)], None))
        paths = [f"{where}[{i}]" if isinstance(raw, list) else where for i in range(len(items))]
        values = [coerce(tp, v, p, problems) for v, p in zip(items, paths, strict=True)]
        checked = [(p, v) for p, v in zip(paths, values, strict=True) if v is not INVALID]
        broken = problems_of(rule, checked)
        for bad, message in broken:
            problems.add(bad, message)
        if broken or any(v is INVALID for v in values):
            ok = False
            continue
        filters.append(FitFilter(column, tuple(values)))
    columns = [f.column for f in filters]
    for i, column in enumerate(columns):
        if column in columns[:i]:
            problems.add(at, f"names column {column!r} twice")
            ok = False
    return tuple(filters) if ok else INVALID


def fits_plain(fits: tuple[FitSpec, ...]) -> list[dict[str, Any]]:
    """The ``fits`` section as plain YAML data."""
    return [f.to_dict() for f in fits]


def fits_from_spec_text(text: str, source: str) -> tuple[FitSpec, ...]:
    """The fits a stored ``spec.yaml`` asks for (() when it has none or is empty).

    Reads only the ``fits`` key, so a study whose spec predates a later field still aggregates.
    Raises UserError listing every problem, each line prefixed by `source`.
    """
    data = load_yaml(text, source) if text.strip() else None
    if not isinstance(data, dict):
        return ()
    problems = Problems()
    fits = parse_fits(data.get("fits"), problems)
    if problems.lines:
        raise UserError("\n".join(f"{source}: {line}" for line in problems.lines))
    return fits

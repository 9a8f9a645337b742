"""YAML in and out for study specs: ruamel.yaml's safe loader and dumper, YAML 1.2.

YAML 1.2 makes a spec mean what it looks like: ``1e-3`` is the float 0.001 (YAML 1.1 read it as
a string), ``yes`` / ``on`` are strings, not booleans (``baselines: yes`` is then refused by
validation, which casts nothing), and a key repeated in one mapping is an error.

Syntax errors become :class:`~trainables.errors.UserError` naming the source, line and column.

A document is bounded before any value is built from it (``search_spaces.yaml_bounds``).
"""

from __future__ import annotations

import io
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from search_spaces.yaml_bounds import MAX_CHARS, MAX_DEPTH, check_bounds
from trainables.errors import UserError


def _loader() -> YAML:
    return YAML(typ="safe", pure=True)  # pure: the same behaviour with or without libyaml


def load_yaml(text: str, source: str) -> Any:
    """Parse one YAML document within the bounds of ``yaml_bounds``; a syntax error is a
    UserError ``source: invalid YAML at ...``."""
    if len(text) > MAX_CHARS:
        raise UserError(
            f"{source}: {len(text):,} characters, more than the {MAX_CHARS:,} a spec may have"
        )
    try:
        loader = _loader()
        node = loader.compose(text)
        check_bounds(node, source)
        return None if node is None else loader.constructor.construct_document(node)
    except RecursionError:
        raise UserError(f"{source}: nested more than {MAX_DEPTH} levels deep") from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = exc.problem or exc.context or "invalid YAML"
        raise UserError(f"{source}: invalid YAML at {where}: {problem}") from None
    except YAMLError as exc:
        raise UserError(f"{source}: invalid YAML: {' '.join(str(exc).split())}") from None


class _FlowList(list):
    pass


class _FlowDict(dict):
    pass


def _dumper() -> YAML:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False
    yaml.width = 100
    yaml.representer.add_representer(
        _FlowList,
        lambda r, v: r.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True),
    )
    yaml.representer.add_representer(
        _FlowDict,
        lambda r, v: r.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True),
    )
    return yaml


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, (list, dict))


def _styled(data: Any, in_list: bool = False) -> Any:
    if isinstance(data, list):
        items = [_styled(v, in_list=True) for v in data]
        return _FlowList(items) if all(_is_scalar(v) for v in data) else items
    if isinstance(data, dict):
        items = {k: _styled(v) for k, v in data.items()}
        return _FlowDict(items) if in_list and all(map(_is_scalar, data.values())) else items
    return data


def dump_yaml(data: Any) -> str:
    """Dump plain data (dicts, lists, scalars) as block YAML, keys in insertion order.

    Lists of scalars, and mappings of scalars inside lists (layer entries), are written inline:
    ``milestones: [150, 300]``, ``- {name: fc1, final_fraction: 0.5, ...}``.
    """
    out = io.StringIO()
    _dumper().dump(_styled(data), out)
    return out.getvalue()

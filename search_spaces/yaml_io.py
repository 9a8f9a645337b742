"""YAML in and out for study specs: one strict loader, one stable dumper.

The loader is PyYAML's safe loader with two changes, both so that a spec means what it looks like:

- numbers follow YAML 1.2: ``1e-3`` is the float 0.001 (PyYAML's YAML 1.1 resolver would read it
  as the *string* "1e-3", which validation then rejects; quoting it, ``"1e-3"``, still gives a
  string and still is an error: nothing is cast);
- a repeated key in one mapping is an error (PyYAML silently keeps the last one).

Syntax errors become :class:`~trainables.errors.UserError` naming the source and line.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from trainables.errors import UserError

_FLOAT_TAG = "tag:yaml.org,2002:float"
# YAML 1.2 core-schema floats (exponent without a dot allowed), plus PyYAML's inf/nan spellings.
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class SpecLoader(yaml.SafeLoader):
    """Safe loader with YAML 1.2 floats and duplicate-key detection."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SpecLoader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_RE, list("-+0123456789."))


def load_yaml(text: str, source: str) -> Any:
    """Parse one YAML document; a syntax error is a UserError ``source: line L, column C: ...``."""
    try:
        return yaml.load(text, Loader=SpecLoader)  # noqa: S506 - SpecLoader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = exc.problem or exc.context or "invalid YAML"
        raise UserError(f"{source}: invalid YAML at {where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: invalid YAML: {exc}") from None


class _Dumper(yaml.SafeDumper):
    pass


class _FlowList(list):
    pass


class _FlowDict(dict):
    pass


_Dumper.add_representer(
    _FlowList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)
_Dumper.add_representer(
    _FlowDict, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True)
)


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
    return yaml.dump(
        _styled(data), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100
    )

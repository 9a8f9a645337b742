"""Problems and values as the user wrote them: :class:`Problems` collects every
``path: rule, got value`` line and raises them as one UserError; :func:`show` writes a value as
YAML would."""

from __future__ import annotations

import dataclasses
from typing import Any

from trainables.errors import UserError


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

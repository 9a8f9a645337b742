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
        self._seen: set[str] = set()

    def add(self, path: str, message: str) -> None:
        line = clip(f"{path}: {message}", LINE_CHARS)
        if line not in self._seen:
            self._seen.add(line)
            self.lines.append(line)

    def raise_if_any(self, error: type[Exception] = UserError) -> None:
        if self.lines:
            shown = self.lines[:SHOW_LINES]
            if len(self.lines) > SHOW_LINES:
                shown.append(f"... and {len(self.lines) - SHOW_LINES:,} more problems")
            raise error("\n".join(shown))


SHOW_CHARS = 200  # the most of a value one error line shows
LINE_CHARS = 1_000  # the most one problem line holds (its path, rule and value)
SHOW_LINES = 50  # the most problem lines one error shows


def clip(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters with how much was left off."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def show(value: Any, limit: int = SHOW_CHARS) -> str:
    """A value as the user wrote it in YAML: 'text', 0.001, true, null, [1, 2], {k: v}; cut
    after `limit` characters (written piece by piece, so a huge value costs only `limit`)."""
    parts: list[str] = []
    size = 0

    def put(text: str) -> bool:
        nonlocal size
        parts.append(text)
        size += len(text)
        return size <= limit

    def write(v: Any) -> bool:
        if isinstance(v, bool):
            return put("true" if v else "false")
        if v is None:
            return put("null")
        if isinstance(v, str):
            return put(repr(v[: limit + 1]))
        if isinstance(v, (list, tuple, dict)):
            items = list(v.items()) if isinstance(v, dict) else v
            if not put("{" if isinstance(v, dict) else "["):
                return False
            for i, item in enumerate(items):
                if i and not put(", "):
                    return False
                if isinstance(v, dict) and not put(f"{item[0]}: "):
                    return False
                if not write(item[1] if isinstance(v, dict) else item):
                    return False
            return put("}" if isinstance(v, dict) else "]")
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return write(plain(v))
        return put(repr(v)[: limit + 1])

    if write(value):
        return "".join(parts)
    return "".join(parts)[:limit] + "..."


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

"""Bounds on a YAML document, checked on its composed node graph before any value is built.

Its size, its nesting depth, its aliases, and its nodes counted with every alias expanded. Aliases
let a few hundred bytes stand for billions of values (nine levels of nine aliases each); without
the bound every later walk over the value (validation, hashing, an error line showing it) would
hang. The counts never expand an alias: each node's expanded size is computed once.
"""

from __future__ import annotations

from typing import Any

from trainables.errors import UserError

MAX_CHARS = 100_000  # a preset is 2-4 kB; the pure-Python parser reads ~30 kB a second
MAX_NODES = 20_000  # values in the document, every alias expanded
MAX_DEPTH = 40  # nesting of lists and mappings
MAX_ALIASES = 1_000  # uses of an anchor (*name)


def check_bounds(root: Any, source: str) -> None:
    """Refuse a composed document beyond the bounds above, counting without expanding: each
    node's expanded size is computed once (an alias reuses its anchor's node object)."""
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    open_nodes: set[int] = set()
    aliases = 0

    def walk(node: Any) -> None:
        nonlocal aliases
        key = id(node)
        if key in open_nodes:
            raise UserError(f"{source}: an alias refers to a node that contains it")
        if key in sizes:
            aliases += 1
            if aliases > MAX_ALIASES:
                raise UserError(f"{source}: more than {MAX_ALIASES:,} aliases (*name)")
            return
        open_nodes.add(key)
        children = node.value if isinstance(node.value, list) else []
        flat = [c for pair in children for c in (pair if isinstance(pair, tuple) else (pair,))]
        for child in flat:
            walk(child)
        open_nodes.discard(key)
        sizes[key] = 1 + sum(sizes[id(c)] for c in flat)
        depths[key] = 1 + max((depths[id(c)] for c in flat), default=0)
        if sizes[key] > MAX_NODES:
            raise UserError(
                f"{source}: more than {MAX_NODES:,} values once its aliases are expanded; "
                "a study spec is far smaller"
            )
        if depths[key] > MAX_DEPTH:
            raise UserError(f"{source}: nested more than {MAX_DEPTH} levels deep")

    if root is not None:
        walk(root)

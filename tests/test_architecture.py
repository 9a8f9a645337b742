"""The package's shape (issue "one definition per fact"): no import circle between its modules,
function-level imports included; ``results/`` never imports Ray; ``trainables/`` imports Ray only
in its Tune shim; modules stay small (median at most 150 lines, none over 400)."""

from __future__ import annotations

import ast
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestrator", "results", "search_spaces", "trainables")
SHIM = "trainables.tune_trainable"


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every module this file imports anywhere (top level or inside functions), resolved to the
    longest known module name; a ``from package import module`` counts the module."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If)
        and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only: never executed
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _all_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is_package_parent(a: str, b: str) -> bool:
    return b.startswith(a + ".") or a.startswith(b + ".")


def test_no_import_circle_function_level_imports_included():
    modules = _modules()
    graph = {
        name: {t for t in _imports(path, name, set(modules)) if not _is_package_parent(name, t)}
        for name, path in modules.items()
    }
    assert _cycles(graph) == []


def test_results_never_imports_ray_and_trainables_only_in_its_shim():
    for name, path in _modules().items():
        uses_ray = any(m == "ray" or m.startswith("ray.") for m in _all_imports(path))
        if name.startswith("results") or (name.startswith("trainables") and name != SHIM):
            assert not uses_ray, name


def test_modules_stay_small():
    """Every module of the four packages counts, ``__init__`` files included."""
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert statistics.median(sizes.values()) <= 150, statistics.median(sizes.values())
    assert {n: s for n, s in sizes.items() if s > 400} == {}

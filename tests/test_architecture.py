"""The package's shape: no import circle between its modules, function-level imports included;
the packages import one way only (trainables <- search_spaces <- results <- orchestrator); Ray is
imported only by the Tune shim, the Tune space adapter, and ``orchestrator.tune`` /
``orchestrator.cluster``; modules stay small (median at most 150 lines, none over 400), counting
only modules with code (an ``__init__`` holding a docstring and re-exports is no module)."""

from __future__ import annotations

import ast
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestrator", "results", "search_spaces", "trainables")
# Each package may import only itself and the packages before it.
ORDER = ("trainables", "search_spaces", "results", "orchestrator")
# The only modules (or packages, with everything below them) that may import Ray.
RAY_ADAPTERS = (
    "trainables.tune_trainable",
    "search_spaces.tune_space",
    "orchestrator.tune",
    "orchestrator.cluster",
)


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


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_packages_import_one_way():
    """trainables <- search_spaces <- results <- orchestrator: never an import back up the flow."""
    modules = _modules()
    rank = {package: i for i, package in enumerate(ORDER)}
    back = sorted(
        (name, target)
        for name, path in modules.items()
        for target in _imports(path, name, set(modules))
        if rank[target.split(".")[0]] > rank[name.split(".")[0]]
    )
    assert back == []


def test_ray_only_in_the_tune_and_cluster_adapters():
    users = sorted(
        name
        for name, path in _modules().items()
        if any(m == "ray" or m.startswith("ray.") for m in _all_imports(path))
    )
    assert users, "no module imports Ray: the check would pass vacuously"
    assert [n for n in users if not any(_within(n, a) for a in RAY_ADAPTERS)] == []


def _has_code(path: Path) -> bool:
    """False for a module of a docstring, imports and ``__all__`` only (a package's front door)."""
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["__all__"]:
            continue
        return True
    return False


def test_modules_stay_small():
    """Modules with code count; an ``__init__`` that only documents or re-exports does not."""
    sizes = {
        name: len(path.read_text().splitlines())
        for name, path in _modules().items()
        if _has_code(path)
    }
    assert statistics.median(sizes.values()) <= 150, statistics.median(sizes.values())
    assert {n: s for n, s in sizes.items() if s > 400} == {}


def test_code_free_modules_are_only_package_front_doors():
    """The modules the size rule leaves out are ``__init__`` files, never a real module."""
    skipped = [p for p in _modules().values() if not _has_code(p)]
    assert skipped and all(p.name == "__init__.py" for p in skipped)

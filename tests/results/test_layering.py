"""No module of results imports Ray or the orchestrator; nothing here needs torch."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import results.fits.aggregate, results.api, results.fits.bootstrap, results.commands, results.tables.export
import results.tables.history, results.report.page, results.report.data, results.fits.stats, results.tables.snapshot,\
    results.tables.status, results.tables.storage, results.tables.summarize, results.tables.schema, results.report.panels,\
    results.report.panels_data, results.report.curves_data, results.report.base, results.report.style,\
    results.tables.environment
heavy = sorted(m for m in ("ray", "torch", "orchestrator") if m in sys.modules)
print(",".join(heavy))
"""


def test_importing_results_pulls_in_neither_ray_nor_torch_nor_the_orchestrator():
    out = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == ""


def test_the_statistics_import_neither_plotly_nor_ray():
    check = (
        "import sys; import results.fits.aggregate, results.fits.stats, results.fits.bootstrap, results.tables.summarize,"
        " results.report.panels_data, results.report.curves_data;"
        "print(','.join(m for m in ('plotly', 'ray') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == ""


def _imports(package: str) -> dict[str, set[str]]:
    """Every module a package's sources import, function-level imports included."""
    import ast
    from pathlib import Path

    out = {}
    for path in sorted(Path(package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
        out[str(path)] = names
    return out


def test_no_results_source_imports_ray_anywhere_and_trainables_only_in_the_shim():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for package, allowed in (("results", set()), ("trainables", {"trainables/tune_trainable.py"})):
        for path, names in _imports(str(root / package)).items():
            uses_ray = {n for n in names if n == "ray" or n.startswith("ray.")}
            if Path(path).relative_to(root).as_posix() not in allowed:
                assert not uses_ray, f"{path} imports {sorted(uses_ray)}"

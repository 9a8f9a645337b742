"""Only results.tune_reader touches Ray, and only when called; nothing here needs torch."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import results.aggregate, results.api, results.bootstrap, results.commands, results.export
import results.history, results.report, results.report_data, results.stats, results.tune_reader
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
        "import sys; import results.aggregate, results.stats, results.bootstrap, results.summarize;"
        "print(','.join(m for m in ('plotly', 'ray') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == ""

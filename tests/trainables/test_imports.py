"""Importing trainables (every module but the Tune shim) never imports Ray."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import trainables

SHIM = "trainables.tune_trainable"


def _modules() -> list[str]:
    found = [m.name for m in pkgutil.walk_packages(trainables.__path__, "trainables.")]
    return ["trainables", *sorted(m for m in found if m != SHIM)]


def _imported(modules: list[str]) -> dict[str, bool]:
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps({k: k in sys.modules for k in ('ray', 'ray.tune', 'torch')}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_no_module_but_the_shim_imports_ray():
    modules = _modules()
    assert {"trainables.loop", "trainables.state", "trainables.pruning.masks"} <= set(modules)
    seen = _imported(modules)
    assert seen["torch"]  # the modules really were imported
    assert not seen["ray"] and not seen["ray.tune"]

"""The driver's environment: what produced a study's numbers, as ``study.json``'s ``environment``.

:func:`environment` is called once, by the driver, when it creates the study
(``orchestrator.study.directory``). Each trial records where it really ran on its own records (the
``per_trial`` keys of ``trainables.records``: ``device``, ``torch_version``, ``threads``, ...),
since trials may run on other nodes of a cluster.

The capture never fails and stays cheap: every piece that cannot be read (git absent, torch not
installed, no GPU driver) is null; torch is imported inside :func:`environment` only, so importing
``results`` pulls in neither torch nor Ray.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections import Counter
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

# The distributions whose versions are recorded (as installed; torch's from torch itself).
PACKAGES = ("numpy", "ray", "optuna", "pyarrow")
# The checkout the running package comes from, when it runs from one.
SOURCE_ROOT = Path(__file__).resolve().parents[2]
GIT_TIMEOUT_S = 5.0
# Linux's CPU description, read for the CPU model.
CPUINFO = Path("/proc/cpuinfo")

# Every key of environment(), with what it holds (the study layout docs list the same).
KEYS: dict[str, str] = {
    "prunetune_version": "the installed prunetune distribution's version",
    "git_commit": "`git rev-parse HEAD` of the checkout the package runs from, else null",
    "git_dirty": "that checkout has uncommitted changes to tracked files (null without one)",
    "python_version": "platform.python_version()",
    "torch_version": "torch.__version__ (with its build tag, e.g. 2.14.1+cu130)",
    "cuda_version": "the CUDA torch was built with (torch.version.cuda); null for a CPU build",
    "cudnn_version": "the cuDNN torch loads (torch.backends.cudnn.version()); null without one",
    **{f"{name}_version": f"the installed {name} version" for name in PACKAGES},
    "platform": "platform.platform()",
    "cpu_count": "os.cpu_count() on the driver",
    "cpu_model": "the driver's CPU model name (Linux /proc/cpuinfo, macOS sysctl), else null",
    "cpu_capability": "the CPU kernels torch dispatches to (torch.backends.cpu.get_cpu_capability())",
    "gpus": "names of the GPUs the driver sees ([] when none; null when torch is absent)",
}


def environment() -> dict[str, Any]:
    """The driver's environment (:data:`KEYS`, in that order); a piece that cannot be read is
    None. JSON-ready: strings, ints, a bool and a list of strings."""
    from results.tables.schema import prunetune_version

    out: dict[str, Any] = {"prunetune_version": _safe(prunetune_version)}
    out.update(_git())
    out["python_version"] = _safe(platform.python_version)
    out.update(_torch())
    for name in PACKAGES:
        out[f"{name}_version"] = _safe(lambda n=name: metadata.version(n))
    out["platform"] = _safe(platform.platform)
    out["cpu_count"] = _safe(os.cpu_count)
    out["cpu_model"] = _safe(_cpu_model)
    return {key: out.get(key) for key in KEYS}


def _safe(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except Exception:  # any failure only means the fact is unknown
        return None


def _git() -> dict[str, Any]:
    """``git_commit`` and ``git_dirty`` of :data:`SOURCE_ROOT`, when it is a checkout's top level
    (an installed copy inside some other repository is not that repository's commit)."""
    unknown = {"git_commit": None, "git_dirty": None}
    top = _run_git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != SOURCE_ROOT:
        return unknown
    commit = _run_git("rev-parse", "HEAD")
    if commit is None:
        return unknown
    status = _run_git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if status is None else status != ""}


def _cpu_model() -> str | None:
    """The CPU's model name: CPU kernels differ between models, and so do the numbers a study
    computes on the CPU with one torch build. None when it cannot be read."""
    if CPUINFO.exists():
        for line in CPUINFO.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    if platform.system() == "Darwin":
        done = subprocess.run(
            ["sysctl", "-n", "machdep.cpu.brand_string"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    return platform.processor() or None


def _run_git(*args: str) -> str | None:
    """git's stdout (stripped) run in :data:`SOURCE_ROOT`; None when git is missing or fails."""
    try:
        done = subprocess.run(
            ["git", "-C", str(SOURCE_ROOT), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _torch() -> dict[str, Any]:
    """torch's version, its CUDA and cuDNN versions, its CPU capability and the GPUs the driver
    sees."""
    try:
        import torch
    except Exception:  # not installed, or broken: every torch fact is unknown
        return {}
    cuda = _safe(lambda: torch.version.cuda)
    return {
        "torch_version": _safe(lambda: str(torch.__version__)),
        "cuda_version": None if cuda is None else str(cuda),
        "cudnn_version": _safe(
            lambda: torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        ),
        "cpu_capability": _safe(lambda: str(torch.backends.cpu.get_cpu_capability())),
        "gpus": _safe(lambda: _gpu_names(torch)),
    }


def _gpu_names(torch: Any) -> list[str]:
    """Names of the visible GPUs. The count comes first (from NVML where torch can, which starts
    no CUDA); CUDA is initialised in the driver only when there is a GPU to name."""
    n = torch.cuda.device_count()
    return [str(torch.cuda.get_device_name(i)) for i in range(n)]


# --- what the report shows (pure) --------------------------------------------------------------


def environment_rows(env: dict[str, Any] | None) -> tuple[tuple[str, str], ...]:
    """(key, value as text) for each of :data:`KEYS` in `env` (``study.json``'s
    ``environment``); () when the study did not record one. Unknown values read "unknown"."""
    if not env:
        return ()
    return tuple((key, _text(env.get(key))) for key in KEYS)


def _text(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def trial_environments(cols: dict[str, np.ndarray]) -> tuple[tuple[str, str, str, int], ...]:
    """(device, torch_version, threads, trials) over the trials that reported (``n_epochs`` > 0),
    most trials first, from trials-table columns as ``results.tables.export.trial_arrays`` gives them
    (threads as float, NaN = null). A key a trial never reported (a study older than the key, or
    a trials.parquet exported before it) reads "not recorded"."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for i in np.flatnonzero(cols["n_epochs"] > 0):
        device, version, threads = (
            cols[k][i] if k in cols else None for k in ("device", "torch_version", "threads")
        )
        counts[
            (
                _recorded(device),
                _recorded(version),
                _recorded(None if threads is None or np.isnan(threads) else int(threads)),
            )
        ] += 1
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return tuple((*key, count) for key, count in ordered)


def _recorded(value: Any) -> str:
    return "not recorded" if value is None else str(value)

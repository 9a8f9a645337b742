"""The driver's environment (study.json): every key, its type, and null for what cannot be read."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata

import numpy as np
import pytest
import torch

from results.tables import environment as E

REPO = E.SOURCE_ROOT


def test_every_key_with_its_type_and_value():
    env = E.environment()
    assert list(env) == list(E.KEYS)
    assert json.loads(json.dumps(env)) == env  # JSON-ready as study.json stores it
    assert isinstance(env["prunetune_version"], str) and env["prunetune_version"]
    assert env["python_version"] == platform.python_version()
    assert env["torch_version"] == str(torch.__version__)
    assert env["cuda_version"] == torch.version.cuda  # the build's; None for a CPU-only build
    expected_cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    assert env["cudnn_version"] == expected_cudnn
    for name in ("numpy", "ray", "optuna", "pyarrow"):
        assert env[f"{name}_version"] == metadata.version(name)
    assert env["numpy_version"] == np.__version__
    assert env["platform"] == platform.platform()
    assert env["cpu_count"] == os.cpu_count()
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert isinstance(env["cpu_model"], str) and env["cpu_model"]
    assert isinstance(env["gpus"], list) and all(isinstance(g, str) for g in env["gpus"])
    assert len(env["gpus"]) == torch.cuda.device_count()


def test_git_commit_and_dirty_flag_of_the_checkout_the_package_runs_from():
    """The tests run from a checkout: its HEAD, and a bool dirty flag."""
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if head.returncode != 0:
        pytest.skip("the package does not run from a git checkout here")
    env = E.environment()
    assert env["git_commit"] == head.stdout.strip() and len(env["git_commit"]) == 40
    assert isinstance(env["git_dirty"], bool)


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_dirty_means_uncommitted_changes_to_tracked_files(tmp_path, monkeypatch):
    repo = tmp_path / "checkout"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    monkeypatch.setattr(E, "SOURCE_ROOT", repo.resolve())
    assert E._git() == {"git_commit": head, "git_dirty": False}
    (repo / "notes.txt").write_text("untracked files do not count")
    assert E._git()["git_dirty"] is False
    (repo / "a.py").write_text("x = 2\n")
    assert E._git() == {"git_commit": head, "git_dirty": True}
    # A package copied somewhere inside another repository is not that repository's commit.
    inner = repo / "site-packages"
    inner.mkdir()
    monkeypatch.setattr(E, "SOURCE_ROOT", inner.resolve())
    assert E._git() == {"git_commit": None, "git_dirty": None}


def test_without_git_the_commit_is_null_and_the_rest_is_still_read(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no git executable
    env = E.environment()
    assert env["git_commit"] is None and env["git_dirty"] is None
    assert env["python_version"] == platform.python_version()
    assert env["torch_version"] == str(torch.__version__)


def test_outside_a_checkout_the_commit_is_null(tmp_path, monkeypatch):
    monkeypatch.setattr(E, "SOURCE_ROOT", tmp_path.resolve())
    env = E.environment()
    assert env["git_commit"] is None and env["git_dirty"] is None


def test_a_piece_that_fails_is_null_and_nothing_raises(monkeypatch):
    def broken():
        raise RuntimeError("no platform today")

    monkeypatch.setattr(platform, "platform", broken)
    monkeypatch.setattr(torch.cuda, "device_count", broken)
    env = E.environment()
    assert env["platform"] is None and env["gpus"] is None
    assert env["cpu_count"] == os.cpu_count()
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert isinstance(env["cpu_model"], str) and env["cpu_model"]


def test_without_torch_every_torch_fact_is_null():
    """In a fresh process where ``import torch`` fails."""
    code = (
        "import json, sys\nsys.modules['torch'] = None\n"
        "from results.tables.environment import environment\nprint(json.dumps(environment()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    env = json.loads(out.stdout)
    torch_keys = ("torch_version", "cuda_version", "cudnn_version", "gpus")
    assert all(env[k] is None for k in torch_keys)
    assert env["numpy_version"] == np.__version__ and list(env) == list(E.KEYS)


def test_report_rows_of_the_environment():
    assert E.environment_rows(None) == () and E.environment_rows({}) == ()
    env = dict.fromkeys(E.KEYS) | {"git_dirty": True, "gpus": [], "cpu_count": 16}
    rows = dict(E.environment_rows(env))
    assert list(rows) == list(E.KEYS)
    assert rows["git_dirty"] == "yes" and rows["gpus"] == "none" and rows["cpu_count"] == "16"
    assert rows["torch_version"] == "unknown"
    rows = dict(E.environment_rows(env | {"gpus": ["NVIDIA H200", "NVIDIA H200"]}))
    assert rows["gpus"] == "NVIDIA H200, NVIDIA H200"


def test_trial_environments_count_the_trials_that_reported():
    cols = {
        "trial_id": np.array(["a", "b", "c", "d", "e"], dtype=object),
        "n_epochs": np.array([3.0, 3.0, 2.0, 0.0, 1.0]),
        "device": np.array(["cpu", "cuda:NVIDIA H200", "cpu", None, None], dtype=object),
        "torch_version": np.array(["2.14.1", "2.14.1", "2.14.1", None, None], dtype=object),
        "threads": np.array([2.0, 8.0, 2.0, np.nan, np.nan]),
    }
    assert E.trial_environments(cols) == (
        ("cpu", "2.14.1", "2", 2),
        ("cuda:NVIDIA H200", "2.14.1", "8", 1),
        ("not recorded", "not recorded", "not recorded", 1),  # e; d never reported
    )
    old = {k: cols[k] for k in ("trial_id", "n_epochs")}  # a trials.parquet from before the keys
    assert E.trial_environments(old) == (("not recorded", "not recorded", "not recorded", 4),)


def test_cpu_model_from_cpuinfo_and_null_when_unknown(tmp_path, monkeypatch):
    """The model name two machines of one kind share, and which the CPU kernels depend on."""
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) 8480+\n"
        "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) 8480+\n"
    )
    monkeypatch.setattr(E, "CPUINFO", info)
    assert E.environment()["cpu_model"] == "Intel(R) Xeon(R) 8480+"
    monkeypatch.setattr(E, "CPUINFO", tmp_path / "absent")
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    monkeypatch.setattr(platform, "processor", lambda: "")
    assert E.environment()["cpu_model"] is None

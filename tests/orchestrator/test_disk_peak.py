"""The disk a study needs: ``--dry-run``'s estimate against a real study's sampled peak, and the
dry run's disk line and its warning when the storage has less room than the peak."""

from __future__ import annotations

import json
import os
import threading
from collections import namedtuple
from pathlib import Path

import pytest
from orch_helpers import cli_env, run_cli, tiny_spec

from orchestrator.cli.app import main

# An MLP (1.1 MB checkpoints) for 30 epochs: a trial writes 33 MB of checkpoints in seconds,
# against 1.2 MB it keeps at the end.
MLP = {
    "model": {"name": "mlp", "width": 0},  # 40-256-256-10
    "train": {"epochs": 30, "batch_size": 100, "lr": 0.001},
    "pruning": {
        "method": "schedule",
        "granularity": "weight",
        "score": "magnitude",
        "target": ["random", "largest"],
        "layers": [{"name": "fc1", "final_fraction": 0.5, "start_epoch": 5, "end_epoch": 14}],
    },
}
# The stated tolerance of the estimate: within a factor of 2 of the measured peak either way.
FACTOR = 2.0


def _disk_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:  # deleted meanwhile
                pass
    return total


@pytest.mark.ray
@pytest.mark.timeout(900)
def test_the_estimate_is_within_a_factor_of_two_of_a_real_studys_peak(tmp_path):
    spec = tiny_spec(tmp_path / "s.yaml", "peak", tmp_path / "d", tmp_path / "st", **MLP)
    env = cli_env()
    dry = run_cli(["run", str(spec), "--dry-run", "--json"], env)
    assert dry.returncode == 0, dry.stderr
    estimate = json.loads(dry.stdout)["disk"]
    study, peak, stop = tmp_path / "st" / "peak", [0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            peak[0] = max(peak[0], _disk_bytes(study))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        done = run_cli(["run", str(spec)], env)
    finally:
        stop.set()
        sampler.join()
    assert done.returncode == 0, done.stderr[-3000:]
    final = _disk_bytes(study)
    measured = max(peak[0], final) / 1e6
    assert 1 / FACTOR <= estimate["peak_mb"] / measured <= FACTOR, (estimate, measured)
    assert 1 / FACTOR <= estimate["final_mb"] / (final / 1e6) <= FACTOR, (estimate, final)


Usage = namedtuple("Usage", "total used free")


def test_the_dry_run_states_the_disk_and_warns_when_the_storage_is_too_small(
    tmp_path, capsys, monkeypatch
):
    spec = tiny_spec(tmp_path / "s.yaml", "s", tmp_path / "d", tmp_path / "st", **MLP)
    assert main(["run", str(spec), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (disk,) = [line for line in lines if line.startswith("  disk: ")]
    assert " at the peak " in disk and " at the end" in disk and " free" in disk, disk
    assert not any(line.startswith("  warning: ") for line in lines)

    import orchestrator.cli.disk_estimate as disk_estimate

    monkeypatch.setattr(disk_estimate.shutil, "disk_usage", lambda p: Usage(10**9, 0, 2_000_000))
    assert main(["run", str(spec), "--dry-run"]) == 0
    out = capsys.readouterr().out
    (warning,) = [line for line in out.splitlines() if line.startswith("  warning: ")]
    assert "2 MB free" in warning and "at its peak" in warning, warning
    assert "would start a new study" in out.splitlines()[0]  # a warning, not a refusal
    assert main(["run", str(spec), "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["action"] == "start" and plan["disk"]["free_mb"] == 2.0
    assert plan["disk"]["warning"] == warning.removeprefix("  warning: ")
    assert plan["disk"]["peak_mb"] > plan["disk"]["final_mb"] > 2 * plan["disk"]["checkpoint_mb"]
    assert not (tmp_path / "st").exists()  # nothing written

"""The ``ray`` check of ``gpu_check.py``: a real local Ray study of four trials sharing one GPU."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def check_ray(report, device, sizes, workdir: Path) -> None:
    """Run the study through the CLI in a fresh process (``resources.gpu`` 0.25 on CUDA, 0 on the
    CPU); OK when its 4 trials finish ``ok`` and trials.parquet names the device."""
    import pyarrow.parquet as pq

    from search_spaces.yaml_io import dump_yaml

    gpu = 0.25 if device.type == "cuda" else 0
    spec = {
        "name": "gpu-check",
        "dataset": {"name": "cifar10", "synthetic": True, "max_examples": sizes.ray_examples},
        "model": {"name": "resnet20", "width": sizes.trial_width},
        "train": {"epochs": 2, "batch_size": 128, "eval_batch_size": 256},
        "pruning": {
            "method": "schedule",
            "target": "random",
            "layers": [
                {"name": "layer3.0.conv1", "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 1}
            ],
        },
        "seeds": 2,  # 2 pruned trials + 2 baselines
        "resources": {"cpu": 1, "gpu": gpu},
        "max_concurrent_trials": 4,
        "report_every": 0,
        "storage": str(workdir / "studies"),
    }
    path = workdir / "gpu-check.yaml"
    path.write_text(dump_yaml(spec))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("RAY_ADDRESS", None)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli.app", "run", str(path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    wall = time.perf_counter() - start
    table = workdir / "studies" / "gpu-check" / "trials.parquet"
    if done.returncode != 0 or not table.is_file():
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
        report.add("ray", False, f"exit {done.returncode}: {tail}")
        return
    trials = pq.read_table(table).to_pylist()
    devices = sorted({t["device"] for t in trials})
    busy = sum(t["runtime_s"] or 0 for t in trials)
    want = "cuda:" if device.type == "cuda" else "cpu"
    ok = len(trials) == 4 and all(t["status"] == "ok" for t in trials)
    ok = ok and all(d.startswith(want) for d in devices)
    line = (
        f"{len(trials)} trials at resources.gpu {gpu}: {[t['status'] for t in trials]}, "
        f"device {devices}; {wall:.0f} s wall, trials' run time {busy:.0f} s "
        f"(x{busy / wall:.1f} at once)"
    )
    report.add("ray", ok, line, devices=devices, wall_s=wall, trials_runtime_s=busy)

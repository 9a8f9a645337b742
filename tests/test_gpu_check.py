"""``bench/gpu_check.py``: without a GPU it says so and measures nothing; ``--device cpu`` runs
every check's logic at toy sizes (so the first GPU run does not die of a bug in the script); the
packing arithmetic. The GPU itself is never required: CUDA is hidden from the script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"
sys.path.insert(0, str(ROOT / "bench"))

import gpu_packing  # noqa: E402


def _run(tmp_path: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--json", str(tmp_path / "out.json"), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_without_a_gpu_it_says_so_in_one_line_and_measures_nothing(tmp_path):
    done = _run(tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [done.stdout.strip()]
    assert done.stdout.startswith("gpu_check: no CUDA GPU visible")
    assert done.stdout.strip().endswith("nothing measured")
    assert not (tmp_path / "out.json").exists()


def test_best_fraction_is_the_most_trials_per_hour_that_fits_in_memory():
    gib = 2**30
    per_k = {  # epoch seconds of one trial with k trials at once, memory per trial
        1: {"epoch_s": 10.0, "memory_bytes": 3 * gib},
        2: {"epoch_s": 15.0, "memory_bytes": 3 * gib},
        4: {"epoch_s": 24.0, "memory_bytes": 3 * gib},
    }
    best, rates = gpu_packing.best_fraction(per_k, epochs=100, gpu_bytes=80 * gib)
    assert rates == pytest.approx({1: 3.6, 2: 4.8, 4: 6.0})
    assert best == 4
    best, _ = gpu_packing.best_fraction(per_k, epochs=100, gpu_bytes=10 * gib)  # 4 x 3 > 9
    assert best == 2
    best, _ = gpu_packing.best_fraction(per_k, epochs=100, gpu_bytes=2 * gib)
    assert best is None


def test_full_trial_scales_training_and_evaluation_to_the_dataset_sizes():
    sizes = gpu_packing.PackingSizes(examples=1000, epochs=2, width=0, ks=(1,))
    rows = [  # an epoch of 1,000 training + 1,000 test examples: 3 s, of which evaluation 1 s
        {"model": "m", "epoch_s": 3.0, "eval_s": 1.0, "peak_bytes": 500, "context_bytes": 7,
         "data_bytes": 100},
    ]  # fmt: skip
    facts = {"dataset": "cifar10"}
    out = gpu_packing.full_trial("m", facts, rows, sizes)
    assert out["epoch_s"] == pytest.approx(2.0 * 50 + 1.0 * 10)  # 50,000 train, 10,000 test
    assert out["memory_bytes"] == 500 - 100 + 60_000 * 3 * 32 * 32 * 4 + 7


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(1500)
def test_cpu_dry_run_passes_every_check(tmp_path):
    done = _run(tmp_path, "--device", "cpu", "--budget-s", "100000", timeout=1400)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    result = json.loads((tmp_path / "out.json").read_text())
    names = [c["check"] for c in result["checks"]]
    assert {c["status"] for c in result["checks"]} == {"OK"}, done.stdout
    models = ("openlth_resnet20", "resnet18", "resnet20", "resnet56", "vgg11_bn")
    assert names == [
        "env",
        *(f"zoo {m}" for m in ("cnn1d", "lenet", "mlp", *models, "vgg16")),
        "data",
        "event",
        "noise",
        "ray",
        *(f"throughput {m}" for m in models),
        *(f"packing {m}" for m in models),
        "flatness",
    ]
    lines = done.stdout.splitlines()
    assert len(lines) == len(names) + 1 and lines[-1].startswith("gpu_check: 0 failed")
    ray = result["checks"][names.index("ray")]
    assert ray["devices"] == ["cpu"]

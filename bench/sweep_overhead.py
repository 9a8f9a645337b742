"""Overhead of running trials through prunetune on local Ray against running them back to back.

The same N MNIST-1D trials (``cnn1d``, the model's default pruning schedule, target random, seeds
0..N-1, no baselines) run two ways in this one process:

- ``prunetune``: the study's run path on a local Ray with 2 CPUs and 2 concurrent 1-CPU trials
  (``ray_session`` -> ``run_experiment`` -> export -> report), timed from before Ray starts to
  after the report is written;
- ``sequential``: ``TrialRunner`` on one thread, one trial after another, without Ray. To be fair
  on a shared machine whose load drifts, half of the trials run before the prunetune run and half
  after.

``ratio`` = prunetune wall time / (sequential time / 2): 1.0 means two concurrent trials on two
cores cost nothing beyond the training itself. Goal: <= 1.25 for trials of >= 10 s.
``ratio_fit`` uses only the time inside ``Tuner.fit`` (no Ray start, export or report).

On a machine whose cores other processes also use, two concurrent trials cannot run twice as fast
as one, with or without Ray. So the same trials also run as two plain processes without Ray, each
taking half of them back to back (``parallel``), and ``ratio_vs_parallel`` = prunetune wall time /
parallel wall time isolates what prunetune and Ray add.

Usage: ``python3 bench/sweep_overhead.py --json FILE [--trials 8] [--epochs 60]
[--checkpoint-frequency 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

GOAL = 1.25


def study_spec(
    name: str, trials: int, epochs: int, data_dir: str, storage: str, checkpoint_frequency: int = 1
) -> dict:
    return {
        "name": name,
        "dataset": {"name": "mnist1d", "data_dir": data_dir},
        "model": {"name": "cnn1d"},
        "train": {"epochs": epochs, "batch_size": 100, "lr": 1.0e-3},
        "pruning": {"method": "schedule", "target": "random"},
        "seeds": trials,
        "baselines": False,
        "resources": {"cpu": 1},
        "max_concurrent_trials": 2,
        "checkpoint_frequency": checkpoint_frequency,
        "storage": storage,
    }


def run_sequential(configs) -> list[float]:
    """Seconds per trial, TrialRunner on one thread (construction included, as in a trial)."""
    import torch

    from trainables.loop import TrialRunner

    torch.set_num_threads(1)
    seconds = []
    for cfg in configs:
        start = time.perf_counter()
        for _ in TrialRunner(cfg, device="cpu", num_threads=1).run():
            pass
        seconds.append(time.perf_counter() - start)
    return seconds


def _half(configs) -> list[float]:
    return run_sequential(configs)


def run_parallel(configs) -> tuple[float, list[float]]:
    """Two plain processes (no Ray), each running half of the trials back to back."""
    import multiprocessing

    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        halves = pool.map(_half, [configs[0::2], configs[1::2]])
    return time.perf_counter() - start, [s for half in halves for s in half]


def run_prunetune(spec_file: str) -> dict:
    """Wall times of the prunetune run path (Ray start, Tuner.fit, export + report)."""
    from orchestrator.commands import export_and_report
    from orchestrator.runtime import ray_session
    from orchestrator.study import open_for_run
    from search_spaces.expand import expand
    from search_spaces.spec import load_spec

    spec = load_spec(spec_file)
    plan = expand(spec)
    study, _ = open_for_run(spec, plan)
    start = time.perf_counter()
    with ray_session(None):
        from orchestrator.tuner import run_experiment

        ray_up = time.perf_counter()
        outcome = run_experiment(study, plan, "trials", plan.max_concurrent_trials or 2)
        fit_end = time.perf_counter()
    summary, _report = export_and_report(study)
    end = time.perf_counter()
    assert outcome.counts["done"] == len(plan.trials), outcome.counts
    import pyarrow.parquet as pq

    runtimes = pq.read_table(Path(study.path) / "trials.parquet").column("runtime_s").to_pylist()
    return {
        "wall_s": end - start,
        "ray_start_s": ray_up - start,
        "fit_s": fit_end - ray_up,
        "shutdown_export_report_s": end - fit_end,
        "per_trial_s": statistics.mean(runtimes),
        "n_trials_exported": summary.n_trials,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument(
        "--checkpoint-frequency", type=int, default=1, help="epochs between trial checkpoints"
    )
    args = parser.parse_args(argv)
    if (os.cpu_count() or 0) < 2:
        print("needs at least 2 CPUs", file=sys.stderr)
        return 2

    from search_spaces.expand import expand
    from search_spaces.spec import spec_from_dict

    with tempfile.TemporaryDirectory(prefix="sweep-overhead-") as tmp:
        data_dir, storage = str(Path(tmp, "data")), str(Path(tmp, "studies"))
        spec = study_spec(
            "bench", args.trials, args.epochs, data_dir, storage, args.checkpoint_frequency
        )
        spec_file = Path(tmp, "bench.yaml")
        spec_file.write_text(yaml.safe_dump(spec))
        configs = expand(spec_from_dict(spec)).trials
        from trainables.data import load_data

        load_data(configs[0].dataset, seed=0)  # generate and cache MNIST-1D outside the timings
        load_before = os.getloadavg()
        half = len(configs) // 2
        sequential = run_sequential(configs[:half])
        prunetune = run_prunetune(str(spec_file))
        parallel_s, parallel = run_parallel(configs)
        sequential += run_sequential(configs[half:])
        load_after = os.getloadavg()

    sequential_s = sum(sequential)
    ideal = sequential_s / 2
    result = {
        "ratio": prunetune["wall_s"] / ideal,
        "ratio_fit": prunetune["fit_s"] / ideal,
        "ratio_vs_parallel": prunetune["wall_s"] / parallel_s,
        "goal": GOAL,
        "n_trials": len(configs),
        "epochs": args.epochs,
        "checkpoint_frequency": args.checkpoint_frequency,
        "sequential_s": sequential_s,
        "sequential_per_trial_s": statistics.mean(sequential),
        "parallel_s": parallel_s,
        "parallel_per_trial_s": statistics.mean(parallel),
        "prunetune": prunetune,
        "loadavg_before_after": [load_before[0], load_after[0]],
        "cpus": os.cpu_count(),
    }
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

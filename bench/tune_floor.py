"""Ray Tune's own floor for the sweep-overhead bench (``bench/sweep_overhead.py``), in this process.

- :func:`plain_tune`: the bench's trials as a plain Tune function trainable of the same shape
  (``TrialRunner`` epoch by epoch, 1 CPU each, 2 at once, actors reused), with none of prunetune:
  no checkpoints, no callbacks, Tune's default loggers, storage in a temporary directory. With
  ``report="epoch"`` every epoch is a ``tune.report``; with ``report="end"`` only the last, so
  Tune does the least it can per trial. Timed from before ``ray.init`` to after
  ``ray.shutdown``: what any Tune sweep of these trials pays on this machine.
- :func:`report_round_trip`: seconds per ``tune.report`` inside one trial, without and with a
  checkpoint of ``checkpoint_bytes`` (a prunetune trial's ``state.pt`` is some 60 KB for the
  bench's model): the per-epoch cost of reporting every epoch.

Both start and stop their own local Ray (2 CPUs), so Ray must not be initialised when called.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path


def _ray_init():
    import sys

    import ray
    from ray import cloudpickle

    # Workers import the trainables below by value: this file need not be on their path.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])

    os.environ.setdefault("RAY_AUTH_MODE", "token")
    start = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    return ray, time.perf_counter() - start


def _epoch_trainable(config: dict) -> None:
    from ray import tune

    from trainables.identity import trial_config
    from trainables.loop import TrialRunner

    runner = TrialRunner(trial_config(config), device="cpu", num_threads=1)
    for record in runner.run():
        if config["report"] == "epoch" or runner.finished:
            tune.report({"epoch": record["epoch"], "test_acc": record["test_acc"]})


def plain_tune(configs, report: str = "epoch") -> dict:
    """Wall times of the trials under a plain Tune function trainable (module docstring)."""
    ray, ray_start_s = _ray_init()
    from ray import tune

    with tempfile.TemporaryDirectory(prefix="tune-floor-") as storage:
        start = time.perf_counter()
        tuner = tune.Tuner(
            tune.with_resources(_epoch_trainable, {"cpu": 1}),
            param_space={
                "trial": tune.grid_search([c.to_dict() for c in configs]),
                "report": report,
            },
            tune_config=tune.TuneConfig(max_concurrent_trials=2, reuse_actors=True),
            run_config=tune.RunConfig(storage_path=storage, verbose=0),
        )
        results = tuner.fit()
        fit_s = time.perf_counter() - start
        assert results.num_errors == 0 and len(results) == len(configs)
        per_trial = [r.metrics["time_total_s"] for r in results]
    start = time.perf_counter()
    ray.shutdown()
    shutdown_s = time.perf_counter() - start
    return {
        "report": report,
        "wall_s": ray_start_s + fit_s + shutdown_s,
        "ray_start_s": ray_start_s,
        "fit_s": fit_s,
        "shutdown_s": shutdown_s,
        "per_trial_s": statistics.mean(per_trial),
        "slot_s_outside_trials_per_trial": (2 * fit_s - sum(per_trial)) / len(configs),
    }


def _report_trainable(config: dict) -> None:
    from ray import tune

    n, size = config["n"], config["checkpoint_bytes"]
    payload = os.urandom(size)
    timings = []
    for with_checkpoint in (False, True):
        start = time.perf_counter()
        for i in range(n):
            if with_checkpoint:
                with tempfile.TemporaryDirectory() as directory:
                    Path(directory, "state.pt").write_bytes(payload)
                    tune.report({"i": i}, checkpoint=tune.Checkpoint.from_directory(directory))
            else:
                tune.report({"i": i})
        timings.append((time.perf_counter() - start) / n)
    tune.report({"plain_s": timings[0], "checkpoint_s": timings[1], "done_timing": True})


def report_round_trip(n: int = 100, checkpoint_bytes: int = 60_000) -> dict:
    """Seconds per ``tune.report`` in a lone trial, without and with a checkpoint."""
    ray, _ = _ray_init()
    from ray import tune

    with tempfile.TemporaryDirectory(prefix="tune-report-") as storage:
        tuner = tune.Tuner(
            tune.with_resources(_report_trainable, {"cpu": 1}),
            param_space={"n": n, "checkpoint_bytes": checkpoint_bytes},
            run_config=tune.RunConfig(
                storage_path=storage,
                verbose=0,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            ),
        )
        (result,) = tuner.fit()
    ray.shutdown()
    return {
        "reports": n,
        "checkpoint_bytes": checkpoint_bytes,
        "report_s": result.metrics["plain_s"],
        "report_with_checkpoint_s": result.metrics["checkpoint_s"],
    }

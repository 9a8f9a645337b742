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
cores cost nothing beyond the training itself. Goal: <= 1.25 on the defaults (the quickstart's
trials: 60 MNIST-1D epochs). ``ratio_fit`` uses only the time inside ``Tuner.fit`` (no Ray start,
export or report).

``breakdown`` splits the gap (prunetune wall time - ideal) into measured parts that add up to it
(see :func:`breakdown`): two trials on two cores (the machine), a trial's own time in Tune beyond
a plain process, slot time between trials, Ray's start and shutdown, the export and the report.
Side by side in the same run:

- ``prunetune_report_per_epoch``: the same study with ``report_batch_s: 0`` (a ``tune.report``
  after every epoch, as before batching); ``breakdown.per_epoch_report_s`` is what that cost
  each epoch;
- ``plain_tune_report_per_epoch`` / ``plain_tune_one_report``: the same trials as a plain Tune
  function trainable (``bench/tune_floor.py``), reporting every epoch / once: Ray's own floor,
  ``ratio_plain_tune*`` over the same ideal;
- ``report_round_trip``: seconds per ``tune.report`` without and with a checkpoint;
- ``setup_s``: building a trial (``TrialRunner``) in a fresh process and again in a warm one.

On a machine whose cores other processes also use, two concurrent trials cannot run twice as fast
as one, with or without Ray. So the same trials also run as two plain processes without Ray, each
taking half of them back to back (``parallel``), and ``ratio_vs_parallel`` = prunetune wall time /
parallel wall time isolates what prunetune and Ray add.

The live report (``report_every``): the ``prunetune`` run above has ``report_every: 0`` (tables
and report only at the end); right after it the same trials run twice with ``report_every`` =
``--report-every`` seconds (5 by default), the driver refreshing the tables and report.html
while they train (``orchestrator.study.live``, as ``prunetune run`` does), then once more with 0
(plain, live, live, plain, so that a drifting load cancels out). ``live_report.ratio_*`` = the
live runs' summed wall time, ``Tuner.fit`` time and mean per-trial time (Tune's
``time_total_s``, which includes any wait for the driver) over the plain runs'; 1.0 means the
refreshes cost the trials nothing. ``refreshes`` counts the live reports each live run wrote.
Wall times on a shared machine drift with its load; CPU time does not, so the driver process's
CPU time during the fit is measured too: ``cpu_per_refresh_s`` = the live runs' extra driver CPU
seconds per refresh, and ``cpu_share`` = that extra CPU time over the live runs' fit time x the
machine's cores (the share of the machine's CPU the refreshes used).
``driver_lag``: how late another driver thread (as Tune's controller, which hands each trial its
next step) wakes from a 2 ms sleep while refreshes run back to back, and without them.

Usage: ``python3 bench/sweep_overhead.py --json FILE [--trials 8] [--epochs 60]
[--checkpoint-frequency 1] [--report-every 5] [--no-live]``.
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
from live_overhead import driver_lag, live_comparison
from tune_floor import plain_tune, report_round_trip

GOAL = 1.25


def study_spec(
    name: str,
    trials: int,
    epochs: int,
    data_dir: str,
    storage: str,
    checkpoint_frequency: int = 1,
    report_every: int = 0,
    report_batch_s: float = 0.5,
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
        "report_batch_s": report_batch_s,
        "report_every": report_every,
        "storage": storage,
    }


def run_sequential(configs, setups: list[float] | None = None) -> list[float]:
    """Seconds per trial, TrialRunner on one thread (construction included, as in a trial);
    each construction's seconds are appended to `setups`."""
    import torch

    from trainables.loop import TrialRunner

    torch.set_num_threads(1)
    seconds = []
    for cfg in configs:
        start = time.perf_counter()
        runner = TrialRunner(cfg, device="cpu", num_threads=1)
        if setups is not None:
            setups.append(time.perf_counter() - start)
        for _ in runner.run():
            pass
        seconds.append(time.perf_counter() - start)
    return seconds


def _half(configs) -> tuple[list[float], list[float]]:
    setups: list[float] = []
    return run_sequential(configs, setups), setups


def run_parallel(configs) -> tuple[float, list[float], list[float]]:
    """Two plain processes (no Ray), each running half of the trials back to back: wall time,
    seconds per trial, and each trial's set-up (the first in each process a cold one)."""
    import multiprocessing

    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        halves = pool.map(_half, [configs[0::2], configs[1::2]])
    wall = time.perf_counter() - start
    return wall, [s for h in halves for s in h[0]], [s for h in halves for s in h[1]]


def run_prunetune(spec_file: str) -> dict:
    """Wall times of the prunetune run path (Ray start, Tuner.fit with the spec's live report,
    export + report), as ``orchestrator.cli.run.execute`` runs it."""
    import pyarrow.parquet as pq

    from orchestrator.cluster.runtime import ray_session
    from orchestrator.study.directory import locate, open_for_run
    from orchestrator.study.live import live_report
    from results.api import export_study, write_report
    from search_spaces.expand import expand
    from search_spaces.spec import load_spec

    spec = load_spec(spec_file)
    plan = expand(spec)
    study = open_for_run(locate(spec), spec, plan)
    start = time.perf_counter()
    with ray_session(None):  # the order of orchestrator.cli.run.execute
        from orchestrator.tune.tuner import run_experiment

        ray_up, cpu_start = time.perf_counter(), time.process_time()
        with live_report(study, plan) as live:
            outcome = run_experiment(study, plan, "trials", plan.max_concurrent_trials or 2)
        fit_end, driver_cpu = time.perf_counter(), time.process_time() - cpu_start
        summary = export_study(study.uri)
        exported = time.perf_counter()
        write_report(study.uri)
        reported = time.perf_counter()
    end = time.perf_counter()
    assert outcome.counts["ok"] == len(plan.trials), outcome.counts
    runtimes = pq.read_table(Path(study.path) / "trials.parquet").column("runtime_s").to_pylist()
    epochs = pq.read_table(Path(study.path) / "epochs.parquet", columns=["trial_key", "epoch"])
    reports = pq.read_table(Path(study.path) / "epochs.parquet").group_by("trial_key")
    reports = reports.aggregate([("training_iteration", "max")]).column(1).to_pylist()
    return {
        "wall_s": end - start,
        "ray_start_s": ray_up - start,
        "fit_s": fit_end - ray_up,
        "driver_cpu_s": driver_cpu,  # the driver process's CPU time during the fit, all threads
        "export_s": exported - fit_end,
        "report_s": reported - exported,
        "shutdown_s": end - reported,
        "per_trial_s": statistics.mean(runtimes),
        # slot time not spent inside a trial (between trials, and a slot idle at the end)
        "slot_s_outside_trials_per_trial": (2 * (fit_end - ray_up) - sum(runtimes)) / len(runtimes),
        "report_batch_s": spec.report_batch_s,
        "reports_per_trial": statistics.mean(reports),  # Tune's report counter at the end
        "epoch_rows": epochs.num_rows,
        "n_trials_exported": summary.n_trials,
        "report_every_s": spec.report_every,
        "refreshes": live.refreshes,
        "study_dir": study.uri,
    }


def breakdown(
    run: dict,
    per_epoch: dict,
    ideal: float,
    sequential: list[float],
    parallel: list[float],
    epochs: int,
) -> dict:
    """Where prunetune's wall time goes beyond the ideal (sequential time / 2), in seconds of the
    study, each with its share of the gap; the parts add up to the gap.

    - ``two_trials_per_2_cores``: two plain processes on the 2 cores run each trial slower than
      one alone (``parallel`` vs ``sequential`` per trial): the machine, not Ray or prunetune;
    - ``inside_trials``: a trial's own time in Tune (``time_total_s``: set-up, epochs, reports,
      checkpoints) beyond the same trial in a plain process;
    - ``between_trials``: slot time outside any trial (Tune starting the next trial on a reused
      actor, a slot idle while the last trial runs);
    - ``ray_start``, ``export``, ``report``, ``ray_shutdown``: the study's fixed costs.

    ``per_epoch_report_s``: what a report to Tune after every epoch cost each epoch, from the
    side-by-side run with ``report_batch_s: 0`` (difference of the mean trial times; on a machine
    whose load drifts it is noisy, see ``report_round_trip`` for each report's own cost);
    ``reports_per_trial``: Tune's reports per trial, batched and after every epoch.
    """
    n = len(sequential)
    slots = 2
    parts = {
        "two_trials_per_2_cores": (statistics.mean(parallel) - statistics.mean(sequential))
        * n
        / slots,
        "inside_trials": (run["per_trial_s"] - statistics.mean(parallel)) * n / slots,
        "between_trials": run["slot_s_outside_trials_per_trial"] * n / slots,
        "ray_start": run["ray_start_s"],
        "export": run["export_s"],
        "report": run["report_s"],
        "ray_shutdown": run["shutdown_s"],
    }
    gap = run["wall_s"] - ideal
    return {
        "gap_s": gap,
        "parts_s": parts,
        "shares": {k: v / gap for k, v in parts.items()},
        "unaccounted_s": gap - sum(parts.values()),
        "per_trial": {
            "inside_extra_s": run["per_trial_s"] - statistics.mean(parallel),
            "between_s": run["slot_s_outside_trials_per_trial"],
        },
        "per_epoch_report_s": (per_epoch["per_trial_s"] - run["per_trial_s"]) / epochs,
        "reports_per_trial": [run["reports_per_trial"], per_epoch["reports_per_trial"]],
        "per_study_s": run["ray_start_s"] + run["export_s"] + run["report_s"] + run["shutdown_s"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument(
        "--checkpoint-frequency", type=int, default=1, help="epochs between trial checkpoints"
    )
    parser.add_argument(
        "--report-every",
        type=int,
        default=5,
        help="seconds between live refreshes in the run beside the report_every: 0 one",
    )
    parser.add_argument(
        "--no-live", action="store_true", help="skip the live-report runs (four more studies)"
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

        def twin(name: str, report_every: int, **more) -> str:
            """The same trials as another study (a fresh directory)."""
            path = Path(tmp, f"{name}.yaml")
            twin_spec = {**spec, "name": name, "report_every": report_every, **more}
            path.write_text(yaml.safe_dump(twin_spec))
            return str(path)

        configs = expand(spec_from_dict(spec)).trials
        from trainables.data import load_data

        load_data(configs[0].dataset, seed=0)  # generate and cache MNIST-1D outside the timings
        load_before = os.getloadavg()
        half = len(configs) // 2
        setups: list[float] = []
        sequential = run_sequential(configs[:half], setups)
        prunetune = run_prunetune(str(spec_file))
        per_epoch_reports = run_prunetune(twin("per-epoch", 0, report_batch_s=0))
        floor = plain_tune(configs, report="epoch")
        floor_end = plain_tune(configs, report="end")
        round_trip = report_round_trip()
        live_part = None
        if not args.no_live:
            # plain, live, live, plain: a load that drifts during the four runs cancels out.
            live = [run_prunetune(twin(f"live{i}", args.report_every)) for i in (1, 2)]
            plain = [prunetune, run_prunetune(twin("plain2", 0))]
            lag = driver_lag(live[0]["study_dir"])
            live_part = {**live_comparison(plain, live), "driver_lag": lag}
        parallel_s, parallel, parallel_setups = run_parallel(configs)
        sequential += run_sequential(configs[half:], setups)
        load_after = os.getloadavg()

    sequential_s = sum(sequential)
    ideal = sequential_s / 2
    result = {
        "ratio": prunetune["wall_s"] / ideal,
        "ratio_fit": prunetune["fit_s"] / ideal,
        "ratio_vs_parallel": prunetune["wall_s"] / parallel_s,
        "ratio_plain_tune": floor["wall_s"] / ideal,
        "ratio_plain_tune_one_report": floor_end["wall_s"] / ideal,
        "goal": GOAL,
        "n_trials": len(configs),
        "epochs": args.epochs,
        "checkpoint_frequency": args.checkpoint_frequency,
        "sequential_s": sequential_s,
        "sequential_per_trial_s": statistics.mean(sequential),
        "parallel_s": parallel_s,
        "parallel_per_trial_s": statistics.mean(parallel),
        "breakdown": breakdown(
            prunetune, per_epoch_reports, ideal, sequential, parallel, args.epochs
        ),
        "setup_s": {
            "cold_first_in_process": statistics.mean(parallel_setups[0 :: len(parallel) // 2]),
            "warm_same_process": statistics.mean(setups),
        },
        "report_round_trip": round_trip,
        "prunetune": prunetune,
        "prunetune_report_per_epoch": per_epoch_reports,
        "plain_tune_report_per_epoch": floor,
        "plain_tune_one_report": floor_end,
        "live_report": live_part,
        "loadavg_before_after": [load_before[0], load_after[0]],
        "cpus": os.cpu_count(),
    }
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print("\n".join(summary_lines(result)))
    return 0


def summary_lines(result: dict) -> list[str]:
    """The ratios and the gap's parts, one line each, for a reader."""
    b = result["breakdown"]
    lines = [
        f"ratio {result['ratio']:.2f} (goal {result['goal']}), plain Tune "
        f"{result['ratio_plain_tune']:.2f} (one report a trial: "
        f"{result['ratio_plain_tune_one_report']:.2f}), vs two plain processes "
        f"{result['ratio_vs_parallel']:.2f}",
        f"gap {b['gap_s']:.1f} s over the ideal {result['sequential_s'] / 2:.1f} s:",
    ]
    for part, seconds in b["parts_s"].items():
        lines.append(f"  {part:<24} {seconds:6.2f} s  {100 * b['shares'][part]:5.1f}%")
    rt = result["report_round_trip"]
    batched, every_epoch = b["reports_per_trial"]
    lines.append(
        f"per epoch: {batched:.1f} reports a trial batched, {every_epoch:.1f} after every epoch; "
        f"report after every epoch {1e3 * b['per_epoch_report_s']:.1f} ms more; "
        f"tune.report {1e3 * rt['report_s']:.1f} ms, with a checkpoint "
        f"{1e3 * rt['report_with_checkpoint_s']:.1f} ms"
    )
    lines.append(
        f"per trial: inside Tune +{b['per_trial']['inside_extra_s']:.2f} s, between trials "
        f"{b['per_trial']['between_s']:.2f} s; set-up cold {result['setup_s']['cold_first_in_process']:.2f}"
        f" s, warm {result['setup_s']['warm_same_process']:.3f} s"
    )
    lines.append(f"per study: {b['per_study_s']:.2f} s (Ray start, export, report, Ray shutdown)")
    return lines


if __name__ == "__main__":
    sys.exit(main())

"""Scale benchmark of the results stage: export + aggregation + report of a 10,000-trial study.

    python3 bench/results_scale.py --json results_scale.json [--trials 10000] [--epochs 100]

A child process writes a synthetic study in the exact on-disk form a real one has (not timed):
``study.json``, ``spec.yaml`` and one Tune experiment ``tune/trials/`` with a real ``tuner.pkl``
(written by constructing a ``ray.tune.Tuner``; Ray is not started), an
``experiment_state-*.json`` holding every trial's state as Tune's own ``Trial.get_json_state``
serialises it (only ``runner_data`` is left empty: ``Tuner.restore`` reads it, the export never
does), and per trial a directory with ``result.json`` lines exactly as prunetune writes
them through ``orchestrator.tune.tuner.RecordLogger`` (record + Tune's keys, one ``json.dump`` per
epoch; Tune's config copy is in ``params.json`` only) and ``error.txt``
for failed trials. The study mixes 50 configs x 200 seeds: 2 models x 3 targets x 8 pruning
periods, plus 2 baselines; 1% diverge, 0.5% fail, 0.5% are still running.

The parent then times, on that directory, ``export_study``'s steps (Tune snapshot + result
files -> the trials / epochs / events / layer_events tables; the fits in the "aggregate_fits"
stage; every table written as ``export_study`` writes them in "write_parquet") and
``write_report``. It writes ``seconds`` (total), the per-stage ``stages`` seconds,
``peak_rss_mib`` (the parent's peak resident memory: ``ru_maxrss``) and ``trials``.

``bootstrap_vs_scipy`` then recomputes every fit twice, side by side: with
``results.fits.bootstrap.rank_cis`` and with ``scipy.stats.bootstrap(paired=True)`` (the same
intervals, one scipy call per resample), and reports both times and their ratio (not part of
``seconds``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trainables.config import (  # noqa: E402
    FlatnessConfig,
    LayerSchedule,
    ModelConfig,
    PruningConfig,
    TrainConfig,
    TrialConfig,
)
from trainables.pruning.schedule import schedule_summary  # noqa: E402
from trainables.records import empty_record, layer_units  # noqa: E402

PERIODS = (4, 8, 12, 16, 20, 30, 40, 60)
TARGET_DROP = {"smallest": 0.01, "random": 0.04, "largest": 0.09}
LAYERS = (LayerSchedule("conv2", 0.5, 5, 80), LayerSchedule("conv3", 0.9, 5, 80))
UNITS = {"conv2": 64, "conv3": 128}
# Where every synthetic trial says it ran (trainables.provenance.run_facts), as a GPU worker would.
FACTS = {"device": "cuda:NVIDIA H200", "torch_version": "2.14.1+cu130", "threads": 8}


def train_fn(config: dict) -> None:
    """The experiment's trainable name in tuner.pkl; the benchmark never runs it."""
    raise RuntimeError("benchmark study: not runnable")


def configs(epochs: int) -> list[TrialConfig]:
    train = TrainConfig(epochs=epochs)
    flat = FlatnessConfig(epochs=(epochs - 10,))
    out = []
    for model in ("cnn1d", "mlp"):
        base = TrialConfig(model=ModelConfig(name=model), train=train, flatness=flat)
        out.append(base)
        for target in TARGET_DROP:
            for period in PERIODS:
                pruning = PruningConfig(
                    method="schedule", target=target, period=period, layers=LAYERS
                )
                out.append(
                    TrialConfig(model=base.model, train=train, flatness=flat, pruning=pruning)
                )
    return out


def records(cfg: TrialConfig, rng: np.random.Generator, epochs: int, fate: str) -> list[dict]:
    """Per-epoch records of one synthetic trial (plausible shapes, seeded noise)."""
    events = [] if cfg.is_baseline else list(range(5, 81, cfg.pruning.period))
    summary = schedule_summary(LAYERS, cfg.pruning.period)
    rate, n_events = (0.0, 0) if cfg.is_baseline else (summary["pruning_rate"], len(events))
    drop = (
        0.0 if cfg.is_baseline else TARGET_DROP[cfg.pruning.target] * float(rng.uniform(0.5, 1.5))
    )
    e = np.arange(epochs)
    clean = 0.6 + 0.25 * (1 - np.exp(-e / 15)) + rng.normal(0, 0.004, epochs)
    out, removed, pruned_frac = [], dict.fromkeys(UNITS, 0), 0.0
    for epoch in range(epochs):
        done = sum(1 for ev in events if ev < epoch)
        acc = float(clean[epoch] + 0.4 * drop * done / max(len(events), 1))
        rec = empty_record(epoch)
        rec.update(
            train_loss=1.0 / (epoch + 1),
            train_acc=min(1.0, acc + 0.08 + 0.002 * epoch),
            test_loss=1.2 / (epoch + 1),
            test_acc=acc,
            sparsity=pruned_frac,
            lr=1e-3,
            epoch_time_s=1.5,
            pruning_rate=rate,
            num_events=n_events,
            n_params=1_234_567,
            n_prunable=sum(UNITS.values()),
            **FACTS,
        )
        if epoch in events:
            after = acc * (1 - drop * float(rng.uniform(0.7, 1.3)))
            units = {
                name: max(1, int(n * ls.final_fraction / len(events)))
                for (name, n), ls in zip(UNITS.items(), LAYERS, strict=True)
            }
            for name, k in units.items():
                removed[name] += k
            pruned_frac = sum(removed.values()) / sum(UNITS.values())
            rec.update(
                is_event=True,
                acc_before=acc,
                acc_after=after,
                test_acc=after,
                sparsity=pruned_frac,
                instability=(acc - after) / acc,
                units_removed=layer_units(units),
                units_removed_total=sum(units.values()),
            )
        if epoch in cfg.flatness.epochs:
            rec.update(
                hessian_topk_sum=300 - 1500 * drop + float(rng.normal(0, 5)), flatness_time_s=4.0
            )
        out.append(rec)
        if fate == "diverged" and epoch == epochs // 2:
            rec.update(train_loss=float("nan"), test_acc=0.1, status="diverged")
            return out
        if fate == "error" and epoch == epochs // 3:
            return out
        if fate == "running" and epoch == int(epochs * 0.4):
            return out
    out[-1]["status"] = "done"
    return out


def write_study(root: str, n_trials: int, epochs: int) -> str:
    """Write the synthetic study (module docstring) under `root`; returns the study directory."""
    import copy

    from ray import tune
    from ray.train._internal.storage import StorageContext
    from ray.tune.execution.placement_groups import PlacementGroupFactory
    from ray.tune.experiment import Trial
    from ray.tune.utils.serialization import TuneFunctionEncoder

    study = os.path.join(root, "bench-study")
    tune_dir = os.path.join(study, "tune")
    os.makedirs(tune_dir)
    with open(os.path.join(study, "spec.yaml"), "w") as f:
        f.write("# spec-hash: 0123abcd\nname: bench-study\n")
    with open(os.path.join(study, "study.json"), "w") as f:
        json.dump({"name": "bench-study", "spec_hash": "0123abcd", "prunetune_version": "0.1.0"}, f)
    tune.Tuner(
        train_fn,
        param_space={"trial": {}},
        run_config=tune.RunConfig(name="trials", storage_path=tune_dir),
    )
    storage = StorageContext(storage_path=tune_dir, experiment_dir_name="trials")
    cfgs = configs(epochs)
    rng = np.random.default_rng(0)
    fates = rng.choice(
        ["ok", "diverged", "error", "running"], size=n_trials, p=[0.98, 0.01, 0.005, 0.005]
    )
    states = []
    for i in range(n_trials):
        cfg = cfgs[i % len(cfgs)]
        cfg = dataclasses.replace(cfg, seed=i // len(cfgs))
        tid = f"bench_{i:05d}"
        dirname = f"train_fn_{tid}_{i}_case={i}_2026-11-21_07-24-30"
        config = {"trial": cfg.to_dict(), "checkpoint_frequency": 1}
        st = copy.copy(storage)
        st.trial_dir_name = dirname
        trial = Trial(
            "train_fn",
            config=config,
            trial_id=tid,
            storage=st,
            stub=True,
            experiment_tag=f"{i}_case={i}",
            placement_group_factory=PlacementGroupFactory([{"CPU": 1}]),
        )
        trial.create_placement_group_factory()
        trial.relative_logdir = dirname  # as Trial.init_local_path sets it
        os.makedirs(os.path.join(tune_dir, "trials", dirname))
        recs = records(cfg, rng, epochs, fates[i])
        with open(os.path.join(tune_dir, "trials", dirname, "result.json"), "w") as f:
            for it, rec in enumerate(recs, start=1):
                result = rec | {
                    "timestamp": 1795245872,
                    "checkpoint_dir_name": None,
                    "done": False,
                    "training_iteration": it,
                    "trial_id": tid,
                    "date": "2026-11-21_07-24-32",
                    "time_this_iter_s": 1.5,
                    "time_total_s": 1.5 * it,
                    "pid": 4242,
                    "hostname": "node-a",
                    "node_ip": "10.0.0.2",
                    "config": config,
                    "time_since_restore": 1.5 * it,
                    "iterations_since_restore": it,
                }
                line = {k: v for k, v in result.items() if k != "config"}  # as RecordLogger
                f.write(json.dumps(line) + "\n")
        trial.run_metadata.last_result = result
        trial.run_metadata.num_failures = int(fates[i] == "error")
        trial.status = {
            "ok": "TERMINATED",
            "diverged": "TERMINATED",
            "error": "ERROR",
            "running": "RUNNING",
        }[fates[i]]
        if fates[i] == "error":
            trial.run_metadata.error_filename = "error.txt"
            with open(os.path.join(tune_dir, "trials", dirname, "error.txt"), "w") as f:
                f.write("Traceback (most recent call last):\nRuntimeError: synthetic failure\n")
        states.append(trial.get_json_state())
    state = {"trial_data": states, "runner_data": {}, "stats": {"start_time": 1795245870.0}}
    with open(
        os.path.join(tune_dir, "trials", "experiment_state-2026-11-21_07-24-30.json"), "w"
    ) as f:
        json.dump(state, f, cls=TuneFunctionEncoder)
    return study


def time_study(study: str) -> dict:
    """Time the results stage on `study` in this process (module docstring)."""
    from results import api
    from results.tables import storage
    from results.tables.export import build_tables, fits_table
    from results.tables.history import read_histories
    from results.tables.snapshot import read_study

    stages, cpu_stages = {}, {}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()

    def cpu_now() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    c = cpu_now()
    fs, path = storage.resolve(study)
    meta = storage.read_meta(fs, path, study)
    tune_study = read_study(fs, os.path.join(path, "tune"))
    stages["read_tune_state"] = time.perf_counter() - t0
    cpu_stages["read_tune_state"], c = cpu_now() - c, cpu_now()
    t = time.perf_counter()
    history = read_histories(fs, [tr.result_path for tr in tune_study.trials])
    stages["parse_result_files"] = time.perf_counter() - t
    cpu_stages["parse_result_files"], c = cpu_now() - c, cpu_now()
    t = time.perf_counter()
    tables = build_tables(tune_study.trials, history, meta.spec_hash)
    del history
    stages["build_tables"] = time.perf_counter() - t
    cpu_stages["build_tables"], c = cpu_now() - c, cpu_now()
    t = time.perf_counter()
    fits = fits_table(tables.trials, meta.spec_hash)
    stages["aggregate_fits"] = time.perf_counter() - t
    cpu_stages["aggregate_fits"], c = cpu_now() - c, cpu_now()
    t = time.perf_counter()
    api.write_tables(fs, path, api.named_tables(tables, fits))
    stages["write_parquet"] = time.perf_counter() - t
    cpu_stages["write_parquet"], c = cpu_now() - c, cpu_now()
    n_trials = tables.trials.num_rows
    del tables, fits
    t = time.perf_counter()
    report = api.write_report(study)
    stages["report"] = time.perf_counter() - t
    cpu_stages["report"], c = cpu_now() - c, cpu_now()
    total = time.perf_counter() - t0
    end = resource.getrusage(resource.RUSAGE_SELF)
    cpu = end.ru_utime + end.ru_stime - usage.ru_utime - usage.ru_stime
    return {
        "seconds": round(total, 3),
        "cpu_seconds": round(cpu, 3),  # this process's user + sys time (threads included)
        "stages": {k: round(v, 3) for k, v in stages.items()},
        "cpu_stages": {k: round(v, 3) for k, v in cpu_stages.items()},
        "trials": n_trials,
        "report_mib": round(os.path.getsize(report) / 2**20, 2),
    }


def _generate(root: str, n_trials: int, epochs: int, out: multiprocessing.Queue) -> None:
    out.put(write_study(root, n_trials, epochs))


def _scipy_rank_cis(x, y, n_resamples, random_state=0, confidence=0.95):
    """results.fits.bootstrap.rank_cis done by scipy.stats.bootstrap(paired=True): the same intervals
    (tests/results/test_bootstrap.py), one kendalltau / spearmanr call per resample."""
    from scipy import stats as st

    from results.fits.stats import degenerate

    if degenerate(x, y):
        return (float("nan"),) * 4
    out = []
    for f in (st.kendalltau, st.spearmanr):
        res = st.bootstrap(
            (x, y),
            lambda a, b, f=f: f(a, b).statistic,
            paired=True,
            vectorized=False,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="percentile",
            random_state=np.random.default_rng(random_state),
        )
        out += [float(res.confidence_interval.low), float(res.confidence_interval.high)]
    return tuple(out)


def compare_bootstrap(study: str) -> dict:
    """All fits of the study with results.fits.bootstrap and with scipy.stats.bootstrap, side by side."""
    import pyarrow.parquet as pq

    from results.fits import aggregate, bootstrap
    from results.tables.export import trial_arrays

    arrays = trial_arrays(pq.read_table(os.path.join(study, "trials.parquet")))
    t = time.perf_counter()
    ours = aggregate.fits(arrays)
    ours_s = time.perf_counter() - t
    original = bootstrap.rank_cis
    aggregate.bootstrap.rank_cis = _scipy_rank_cis
    try:
        t = time.perf_counter()
        theirs = aggregate.fits(arrays)
        scipy_s = time.perf_counter() - t
    finally:
        aggregate.bootstrap.rank_cis = original
    keys = ("kendall_ci_low", "kendall_ci_high", "spearman_ci_low", "spearman_ci_high")
    same = all(
        np.allclose([a[k] for k in keys], [b[k] for k in keys], rtol=1e-9, equal_nan=True)
        for a, b in zip(ours, theirs, strict=True)
    )
    return {
        "fits": len(ours),
        "ours_s": round(ours_s, 2),
        "scipy_s": round(scipy_s, 2),
        "ratio_scipy_over_ours": round(scipy_s / ours_s, 2),
        "same_intervals": same,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", required=True, metavar="FILE", help="where to write the numbers")
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--dir", default=None, help="parent of the study dir (default: temp dir)")
    parser.add_argument("--study", default=None, help="time this already generated study instead")
    args = parser.parse_args()
    t = time.perf_counter()
    if args.study:
        study = args.study
    else:
        root = tempfile.mkdtemp(prefix="results_scale_", dir=args.dir)
        spawn = multiprocessing.get_context("spawn")
        queue = spawn.Queue()
        child = spawn.Process(target=_generate, args=(root, args.trials, args.epochs, queue))
        child.start()
        study = queue.get()
        child.join()
    generate_s = time.perf_counter() - t
    numbers = time_study(study)
    numbers["bootstrap_vs_scipy"] = compare_bootstrap(study)
    numbers.update(
        peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        epochs=args.epochs,
        generate_seconds=round(generate_s, 1),
        study_dir=study,
    )
    with open(args.json, "w") as f:
        json.dump(numbers, f, indent=2)
    print(json.dumps(numbers, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

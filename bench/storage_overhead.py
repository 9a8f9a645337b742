"""Overhead of keeping a study in an S3 bucket against keeping it on local disk.

The same study (N MNIST-1D ``cnn1d`` trials, target random, seeds 0..N-1, no baselines, 2
concurrent 1-CPU trials, a checkpoint every ``--checkpoint-frequency`` epochs) runs in this one
invocation as two ``prunetune run`` processes: on local disk, then in a bucket of a local S3 API
server (moto, ``tests/s3/s3_server.py``, on 127.0.0.1; the CLI reaches it through
``AWS_ENDPOINT_URL`` and the credential variables, as a MinIO user would). With ``--rounds 2``
the order is local, s3, s3, local, so that a drifting machine load cancels out.

Printed side by side:

- ``wall_s``: the whole ``prunetune run`` (Ray start, the trials, export, report), and ``ratio``
  = s3 / local (goal: <= 1.3);
- ``per_trial_s``: the trials' mean ``runtime_s`` (what the training thread spent, checkpoint
  uploads included: Tune persists a checkpoint on the trial's own thread);
- ``export_s``: ``prunetune aggregate`` of the finished study (reads every trial's results,
  writes the Parquet tables) and ``report_s``: ``prunetune report``;
- the bucket's traffic during the s3 run, from the server's request log, by what the objects
  are: ``checkpoint`` (``checkpoint_*/``: per epoch and per trial), ``trial_results``
  (result.json, progress.csv, params: Tune's result syncs), ``snapshot`` (experiment_state,
  tuner.pkl, searcher state: the driver's snapshots), ``lease`` (the driver's heartbeat),
  ``optuna_mirror`` (optuna.db), ``exp_listings`` (listings of an experiment directory
  ``tune/<experiment>/``: the Optuna mirror looking for a new snapshot), ``export`` (Parquet tables, report.html: the live report and the
  final export), ``dir_markers`` (the empty ``dir/`` objects pyarrow's ``create_dir`` writes for
  every parent of every upload, and its checks that the bucket exists), ``other``. For each:
  requests, writes, MB, and the seconds the server spent on them (server time only: the
  client's own time per request on loopback comes on top).

Usage: ``python3 bench/storage_overhead.py [--trials 4] [--epochs 20] [--checkpoint-frequency 1]
[--rounds 1] [--report-every 0] [--optuna] [--json FILE]``; ``--optuna`` makes the same number of
trials an Optuna search (seed 1, target random or largest), so the Optuna mirror runs.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "s3"))
GOAL = 1.3
SNAPSHOT_NAMES = ("experiment_state", "tuner.pkl", "trainable.pkl", "searcher-state",
                  "basic-variant-state", "search_gen_state", ".validate_storage_marker")  # fmt: skip


def study_spec(args, data_dir: str) -> dict:
    spec = {
        "name": "bench",
        "dataset": {"name": "mnist1d", "data_dir": data_dir},
        "model": {"name": "cnn1d"},
        "train": {"epochs": args.epochs, "batch_size": 100, "lr": 1.0e-3},
        "pruning": {"method": "schedule", "target": "random"},
        "seeds": args.trials,
        "baselines": False,
        "resources": {"cpu": 1},
        "max_concurrent_trials": 2,
        "checkpoint_frequency": args.checkpoint_frequency,
        "report_every": args.report_every,
        "storage": "unused",
    }
    if args.optuna:  # the same number of trials, suggested by Optuna: the mirror runs too
        spec["pruning"]["target"] = {"choice": ["random", "largest"]}
        spec["seeds"] = 1
        spec["search"] = {
            "algorithm": "optuna",
            "num_samples": args.trials,
            "metric": "test_acc",
            "mode": "max",
        }
    return spec


def category(method: str, path: str, query: str) -> str:
    """What a request is about: the object's key, or for a listing or a batch delete on the
    bucket, the key prefix it names."""
    prefix = urllib.parse.parse_qs(query).get("prefix", [""])[0]
    if prefix:
        path = f"{path}/{prefix}"
    if method == "PUT" and path.endswith("/") or method == "HEAD" and path.count("/") == 1:
        return "dir_markers"
    if method == "GET" and prefix and re.search(r"/tune/[^/]+/$", path):
        return "exp_listings"  # an experiment directory listed (the Optuna mirror's look)
    name = path.rsplit("/", 1)[-1]
    if "/checkpoint_" in path or method == "POST" and query.startswith("delete"):
        return "checkpoint"  # a batch delete: the janitor removing superseded checkpoints
    if ".parquet" in name or "report.html" in name:
        return "export"
    if "optuna.db" in name:
        return "optuna_mirror"
    if "driver-lease" in name:
        return "lease"
    if any(s in name for s in SNAPSHOT_NAMES):
        return "snapshot"
    if "/trial_" in path:
        return "trial_results"
    return "other"


def traffic(log: Path, since: float, until: float) -> dict:
    """The request log's entries between two times, summed by :func:`category`."""
    sums: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in log.read_text().splitlines():
        e = json.loads(line)
        if not since <= e["t"] <= until:
            continue
        c = sums[category(e["method"], e["path"], e["query"])]
        c["requests"] += 1
        c["writes"] += e["method"] in ("PUT", "POST", "DELETE")
        c["mb"] += (e["bytes_in"] + e["bytes_out"]) / 1e6
        c["server_s"] += e["s"]
    return {k: {m: round(v, 3) for m, v in c.items()} for k, c in sorted(sums.items())}


def cli(args: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli.app", *args],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"prunetune {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return elapsed, out


def one_run(spec: Path, storage: str, name: str, env: dict, read_fs, study_path: str) -> dict:
    import pyarrow.parquet as pq

    wall, _ = cli(["run", str(spec), "--storage", storage, "--name", name], env)
    uri = f"{storage}/{name}"
    export, _ = cli(["aggregate", uri], env)
    report, _ = cli(["report", uri], env)
    runtimes = pq.read_table(f"{study_path}/trials.parquet", filesystem=read_fs)
    return {
        "wall_s": wall,
        "per_trial_s": statistics.mean(runtimes.column("runtime_s").to_pylist()),
        "export_s": export,
        "report_s": report,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=20)  # cnn1d prunes until epoch 16
    parser.add_argument("--checkpoint-frequency", type=int, default=1)
    parser.add_argument("--report-every", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1, choices=(1, 2))
    parser.add_argument(
        "--optuna", action="store_true", help="an Optuna search of --trials suggestions, seed 1"
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    from s3_helpers import S3Server

    work = Path(tempfile.mkdtemp(prefix="pt-storage-bench-"))
    server = S3Server(work, request_log=work / "requests.jsonl")
    server.start()
    try:
        bucket = server.bucket("bench")
        spec = work / "spec.yaml"
        spec.write_text(yaml.safe_dump(study_spec(args, str(work / "data"))))
        base = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
        base.pop("RAY_ADDRESS", None)
        s3_env = base | server.env()
        runs: dict[str, list[dict]] = {"local": [], "s3": []}
        windows = []
        order = ["local", "s3"] if args.rounds == 1 else ["local", "s3", "s3", "local"]
        for i, where in enumerate(order):
            name = f"bench{i}"
            if where == "local":
                runs["local"].append(
                    one_run(spec, str(work / "local"), name, base, None, str(work / "local" / name))
                )
            else:
                start = time.time()
                runs["s3"].append(
                    one_run(spec, f"s3://{bucket}", name, s3_env, server.fs(), f"{bucket}/{name}")
                )
                windows.append((start, time.time()))
        log = work / "requests.jsonl"
        breakdown = traffic(log, *windows[0])
        trial_epochs = args.trials * args.epochs
        result = {
            "trials": args.trials,
            "epochs": args.epochs,
            "checkpoint_frequency": args.checkpoint_frequency,
            "report_every": args.report_every,
            "optuna": args.optuna,
            "cpus": os.cpu_count(),
            "local": {k: statistics.mean(r[k] for r in runs["local"]) for k in runs["local"][0]},
            "s3": {k: statistics.mean(r[k] for r in runs["s3"]) for k in runs["s3"][0]},
            "s3_traffic_first_run": breakdown,
            "checkpoint_requests_per_trial_epoch": round(
                breakdown.get("checkpoint", {}).get("requests", 0) / trial_epochs, 2
            ),
        }
        for key in ("wall_s", "per_trial_s", "export_s", "report_s"):
            result[f"ratio_{key}"] = round(result["s3"][key] / result["local"][key], 3)
        result["ratio"] = result["ratio_wall_s"]
        result["goal"] = GOAL
    finally:
        server.stop()
    print(f"{'':14}{'local':>10}{'s3':>10}{'ratio':>8}")
    for key in ("wall_s", "per_trial_s", "export_s", "report_s"):
        local, s3 = result["local"][key], result["s3"][key]
        print(f"{key:14}{local:10.2f}{s3:10.2f}{s3 / local:8.2f}")
    print(f"ratio {result['ratio']:.2f} (goal <= {GOAL})")
    print(f"\nbucket traffic of one s3 run ({args.trials} trials x {args.epochs} epochs):")
    print(f"{'':16}{'requests':>9}{'writes':>8}{'MB':>8}{'server_s':>10}")
    for cat, c in breakdown.items():
        print(
            f"{cat:16}{c.get('requests', 0):9.0f}{c.get('writes', 0):8.0f}"
            f"{c.get('mb', 0):8.2f}{c.get('server_s', 0):10.2f}"
        )
    print(f"checkpoint requests per trial-epoch: {result['checkpoint_requests_per_trial_epoch']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

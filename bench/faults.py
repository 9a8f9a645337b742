"""Inject the four faults of the README's "When things go wrong" into real `prunetune run`s and
print what survived.

Each fault runs the same small MNIST-1D study (6 trials, 12 epochs, 2 at a time) as a separate
`prunetune run` subprocess in its own session, hits it partway, then runs `prunetune resume` and
compares the exported tables with an unfaulted reference run of the same spec:

- ``sigterm``: SIGTERM to the driver only (what `kill PID`, `timeout` and schedulers send);
- ``head-lost``: SIGKILL to the whole session at once: driver, GCS, raylet, workers (a local
  study's head node dies with everything on it);
- ``corrupt``: after ``head-lost``, the checkpoint one unfinished trial would restore from is
  truncated to 0 bytes;
- ``disk-full``: the study lives on a 40 MB tmpfs that is filled once a trial has finished (needs
  root; skipped otherwise), and emptied before the resume.

Prints one row per fault: the faulted run's exit code and last line, the resume's exit code, the
trials finished, and whether every epoch row matches the reference. Usage (from the repository
root, a few minutes on 2 cores): ``python3 bench/faults.py [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.tune.internals import latest_checkpoint_name  # noqa: E402
from results.tables.snapshot import read_snapshot  # noqa: E402
from search_spaces.yaml_io import dump_yaml  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=str(REPO), TUNE_GLOBAL_CHECKPOINT_S="1", OMP_NUM_THREADS="1")
ENV.pop("RAY_ADDRESS", None)
# Columns that differ between two runs of the same study (tests/orchestrator/orch_helpers.py),
# plus Tune's report counter, which runs ahead for a trial restarted before its checkpoint.
VOLATILE = {"trial_id", "epoch_time_s", "flatness_time_s", "time_total_s", "runtime_s",
            "hostname", "node_ip", "num_failures", "tune_status", "error",
            "training_iteration"}  # fmt: skip


def spec_file(root: Path, storage: Path) -> Path:
    spec = {
        "name": "faults",
        "dataset": {"name": "mnist1d", "num_samples": 1000, "data_dir": str(root / "data")},
        "model": {"name": "cnn1d", "width": 8},
        "train": {"epochs": 12, "batch_size": 64, "lr": 0.003},
        "pruning": {
            "method": "schedule",
            "target": ["random", "largest"],
            "layers": [{"name": "conv3", "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 2}],
        },
        "seeds": 2,
        "resources": {"cpu": 1},
        "max_concurrent_trials": 2,
        "storage": str(storage),
    }
    path = root / f"spec-{storage.name}.yaml"
    path.write_text(dump_yaml(spec))
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "orchestrator.cli.app", *args]
    return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True)


def start(spec: Path, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "orchestrator.cli.app", "run", str(spec)]
    out = open(log, "w")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip


def snapshot(exp: Path):
    try:
        return read_snapshot(pafs.LocalFileSystem(), str(exp))
    except Exception:  # being copied right now
        return None


def wait_until(proc: subprocess.Popen, exp: Path, need_ok: bool) -> None:
    while proc.poll() is None:
        snap = snapshot(exp)
        statuses = [t.status for t in snap.trials] if snap else []
        epochs = [t.last_result.get("epoch", -1) + 1 for t in snap.trials] if snap else []
        unfinished = any(s != "ok" for s in statuses)
        if unfinished and ("ok" in statuses if need_ok else max(epochs, default=0) >= 3):
            return
        time.sleep(0.2)
    raise SystemExit(f"the study ended before the fault point (exit {proc.returncode})")


def kill_all(proc: subprocess.Popen) -> None:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == proc.pid:
                    os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass
    proc.wait()
    time.sleep(2)


def fill(path: Path) -> None:
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def rows(study: Path) -> list[dict]:
    table = pq.read_table(study / "epochs.parquet")
    table = table.drop_columns([c for c in table.column_names if c in VOLATILE])
    return sorted(table.to_pylist(), key=lambda r: (r["trial_key"], r["epoch"]))


def fault(name: str, root: Path, reference: list[dict]) -> list[str]:
    storage = root / name
    if name == "disk-full":
        storage.mkdir()
        mount = ["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(storage)]
        if subprocess.run(mount, capture_output=True).returncode != 0:
            return [name, "skipped: needs root for a tmpfs mount", "", "", ""]
    try:
        study = storage / "faults"
        exp = study / "tune" / "trials"
        log = root / f"{name}.log"
        proc = start(spec_file(root, storage), log)
        wait_until(proc, exp, need_ok=name == "disk-full")
        t0 = time.monotonic()
        if name == "sigterm":
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait()
        elif name == "disk-full":
            fill(storage / "filler")
            proc.wait()
        else:
            kill_all(proc)
        stop_s = time.monotonic() - t0
        kill_all(proc)  # whatever of its Ray is left
        if name == "corrupt":
            snap = snapshot(exp)
            victim = next(t for t in snap.trials
                          if t.status != "ok" and latest_checkpoint_name(t.metadata))  # fmt: skip
            (
                exp / victim.logdir / latest_checkpoint_name(victim.metadata) / "state.pt"
            ).write_bytes(b"")
        if name == "disk-full":
            (storage / "filler").unlink()
        said = [ln for ln in log.read_text().splitlines() if ln.startswith("prunetune:")]
        resumed = cli("resume", str(study))
        done = [ln for ln in resumed.stdout.splitlines() if ln.startswith("trials:")]
        noted = [ln for ln in resumed.stderr.splitlines() if "set aside" in ln or "cut short" in ln]
        same = (study / "epochs.parquet").exists() and rows(study) == reference
        code = proc.returncode
        return [
            name,
            f"exit {code} after {stop_s:.0f} s: {said[-1] if said else '(nothing said)'}",
            f"resume exit {resumed.returncode}" + (f"; {noted[0]}" if noted else ""),
            done[0] if done else resumed.stderr[-300:],
            "identical" if same else "DIFFERENT",
        ]
    finally:
        if name == "disk-full":
            subprocess.run(["umount", "-l", str(storage)], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", help="work in this directory and keep it (default: a temp dir)")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="prunetune-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        ref = cli("run", str(spec_file(root, root / "reference")))
        if ref.returncode != 0:
            raise SystemExit(f"the reference run failed:\n{ref.stderr[-3000:]}")
        reference = rows(root / "reference" / "faults")
        print("fault | the faulted run | the resume | trials | epoch rows vs reference")
        for name in ("sigterm", "head-lost", "corrupt", "disk-full"):
            print(" | ".join(fault(name, root, reference)), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The disk a study needs at its peak against its final size, with and without step-wise pruning.

Runs ``prunetune run SPEC [KEY=VALUE ...]`` (default: the quickstart) as a subprocess into a fresh
temporary storage directory and samples the study directory's size every ``--every`` seconds (the
space its files take on disk, as ``du`` counts it: allocated blocks). Printed per arm: the peak,
the final size, peak / final, and ``--dry-run``'s estimate of both (the same spec), side by side:

- ``steps``: today's janitor (:mod:`orchestrator.tune.janitor`): checkpoints superseded and named by
  no snapshot are deleted at every controller step, and the periodic pass goes by the stored
  snapshot's last good copy;
- ``periodic``: the periodic pass alone (what the janitor did before the step-wise pruning): the
  same driver with ``CheckpointJanitor._prune_superseded`` replaced by a no-op.

With ``--rounds 2`` the order is steps, periodic, periodic, steps, so a drifting machine load
cancels out. The study's results are the same in both arms; only the transient disk use differs.

Usage: ``python3 bench/disk_peak.py [SPEC_OR_PRESET] [KEY=VALUE ...] [--arms steps,periodic]
[--rounds 1] [--every 0.5] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PERIODIC_ONLY = (
    "import sys, runpy; from orchestrator.tune.janitor import CheckpointJanitor; "
    "CheckpointJanitor._prune_superseded = lambda self, staging_path: None; "
    "sys.argv[0] = 'prunetune'; runpy.run_module('orchestrator.cli.app', run_name='__main__')"
)


def disk_bytes(path: Path) -> int:
    """Allocated bytes of every file under `path` (as ``du``); files vanishing meanwhile skipped."""
    total, stack = 0, [str(path)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
    return total


def sample_peak(path: Path, every: float, stop: threading.Event, out: dict) -> None:
    while not stop.is_set():
        out["peak"] = max(out.get("peak", 0), disk_bytes(path))
        out["samples"] = out.get("samples", 0) + 1
        stop.wait(every)


def one_run(arm: str, spec: list[str], every: float, env: dict) -> dict:
    storage = Path(tempfile.mkdtemp(prefix="pt-disk-peak-"))
    name = f"peak-{arm}"
    entry = ["-c", PERIODIC_ONLY] if arm == "periodic" else ["-m", "orchestrator.cli.app"]
    args = ["run", *spec, "--storage", str(storage), "--name", name]
    study, seen, stop = storage / name, {}, threading.Event()
    sampler = threading.Thread(target=sample_peak, args=(study, every, stop, seen))
    start = time.monotonic()
    sampler.start()
    proc = subprocess.run([sys.executable, *entry, *args], cwd=REPO, env=env,
                          capture_output=True, text=True)  # fmt: skip
    stop.set()
    sampler.join()
    wall = time.monotonic() - start
    if proc.returncode != 0:
        shutil.rmtree(storage)
        sys.exit(f"{arm}: prunetune run exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    final = disk_bytes(study)
    shutil.rmtree(storage)
    peak = max(seen.get("peak", 0), final)
    return {"arm": arm, "peak_mb": peak / 1e6, "final_mb": final / 1e6,
            "ratio": peak / final, "wall_s": wall, "samples": seen.get("samples", 0)}  # fmt: skip


def estimate(spec: list[str], env: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli.app", "run", *spec, "--dry-run", "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(proc.stdout)["disk"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", nargs="*", default=["quickstart"], help="SPEC [KEY=VALUE ...]")
    parser.add_argument("--arms", default="steps,periodic")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--every", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("RAY_ADDRESS", None)
    arms = args.arms.split(",")
    order = [a for r in range(args.rounds) for a in (arms if r % 2 == 0 else arms[::-1])]
    est = estimate(args.spec, env)
    print(f"spec: {' '.join(args.spec)}; sampling every {args.every} s; CPUs: {os.cpu_count()}")
    print(f"dry-run estimate: peak {est['peak_mb']:.1f} MB, final {est['final_mb']:.1f} MB")
    rows = []
    for arm in order:
        row = one_run(arm, args.spec, args.every, env)
        row["estimate_over_peak"] = est["peak_mb"] / row["peak_mb"]
        rows.append(row)
        print(
            f"{arm:>9}: peak {row['peak_mb']:7.1f} MB  final {row['final_mb']:6.1f} MB  "
            f"peak/final {row['ratio']:5.2f}  estimate/peak {row['estimate_over_peak']:4.2f}  "
            f"wall {row['wall_s']:5.0f} s  ({row['samples']} samples)",
            flush=True,
        )
    by_arm = {a: [r["peak_mb"] for r in rows if r["arm"] == a] for a in arms}
    if {"steps", "periodic"} <= set(by_arm):
        steps, periodic = min(by_arm["steps"]), min(by_arm["periodic"])
        print(f"peak periodic / steps: {periodic / steps:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"estimate": est, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

"""What writing ``optuna.db`` costs as an Optuna search grows (``orchestrator.optuna_mirror.db``).

For each N it writes N synthetic suggestions (two searched fields, two seeds' user attrs) into a
new file, then times, side by side: appending one more trial as the Tune Callback does (with its
memo: nothing read back), the same call without the memo (the whole study read back and
compared, as a refresh does), and a rebuild (one trial changed: the study built in memory and
copied over the file in one transaction). Seconds, median of ``--repeats``.

Usage: ``python3 bench/optuna_mirror.py [--n 100 300] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time

import pyarrow.fs as pafs

from orchestrator.optuna_mirror.db import Memo, MirrorStudy, MirrorTrial, write_mirror

STUDY = MirrorStudy(
    "bench",
    "maximize",
    (("pruning.target", "choice", ("random", "largest")), ("pruning.period", "int", (1, 30))),
    (("metric", "test_acc"),),
)


def _trials(n: int) -> list[MirrorTrial]:
    return [
        MirrorTrial(
            params={"pruning.target": ("random", "largest")[i % 2], "pruning.period": i % 30 + 1},
            value=0.5 + i * 1e-4,
            start_s=1.75e9 + i,
            end_s=1.75e9 + i + 60.5,
            user_attrs={
                "tune_trial_ids": [f"{i:08x}", f"{i + n:08x}"],
                "trial_keys": [f"k{i}a", f"k{i}b"],
                "seeds": [0, 1],
                "statuses": ["ok", "ok"],
                "seed_values": [0.5, 0.5],
            },
        )
        for i in range(n + 1)
    ]


def _append_one(fs: pafs.FileSystem, path: str, trials: list, with_memo: bool) -> float:
    """Seconds to append the last trial to a file holding the others."""
    write_mirror(fs, path, STUDY, trials[:-1])  # (a rebuild when the last one was there)
    memo = Memo() if with_memo else None
    if memo is not None:
        write_mirror(fs, path, STUDY, trials[:-1], memo)  # what the Callback remembers
    start = time.perf_counter()
    write_mirror(fs, path, STUDY, trials, memo)
    return time.perf_counter() - start


def bench(n: int, repeats: int) -> dict[str, float]:
    fs, trials = pafs.LocalFileSystem(), _trials(n)
    changed = [dataclasses.replace(trials[0], value=0.1), *trials[1:n]]
    out = {}
    with tempfile.TemporaryDirectory() as path:
        start = time.perf_counter()
        write_mirror(fs, path, STUDY, trials[:n])
        out["create"] = time.perf_counter() - start
        for name, with_memo in (("append_with_memo", True), ("append_read_back", False)):
            out[name] = statistics.median(
                _append_one(fs, path, trials, with_memo) for _ in range(repeats)
            )
        write_mirror(fs, path, STUDY, trials[:n])
        start = time.perf_counter()
        write_mirror(fs, path, STUDY, changed)
        out["rebuild"] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for n in args.n:
        r = bench(n, args.repeats)
        print(
            f"N={n}: create {r['create']:.2f} s, append one: {r['append_with_memo']:.3f} s with "
            f"the memo vs {r['append_read_back']:.3f} s reading back "
            f"({r['append_read_back'] / r['append_with_memo']:.1f}x), rebuild {r['rebuild']:.2f} s "
            f"({1000 * r['rebuild'] / n:.1f} ms a trial)"
        )


if __name__ == "__main__":
    main()

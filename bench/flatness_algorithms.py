"""The two Hessian top-k algorithms of ``trainables.flatness`` side by side on one trained model.

Trains MNIST-1D ``cnn1d`` (no pruning) for a few epochs with ``TrialRunner``, then, on the fixed
512-example test subset the loop's flatness probe uses, runs ``hessian_topk`` with
``algorithm="official"`` (warm starts, deflation by the estimated ``lambda v v^T``, as the paper's
code) and ``algorithm="projected"`` (fresh starts, found eigenvectors projected out), each at most
``--power-iters`` steps per pair, for every k of ``--ks``. Per algorithm and k it writes the sum of
the k eigenvalues, the seconds (median over ``--repeats``) and the Hessian-vector products used.
A reference, the k eigenvalues of largest magnitude from ARPACK (``scipy.sparse.linalg.eigsh``,
converged, float64), shows how far each truncated sum is from the true one. For the smallest k,
epsilon-flatness (official grid value and bisection, on the full test set) along each algorithm's
top-10 eigenvectors. One CPU thread.

Usage: ``python3 bench/flatness_algorithms.py --json FILE [--ks 10 100] [--train-epochs 10]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.config import FlatnessConfig, TrialConfig
from trainables.flatness import (
    EPS_DIRECTIONS,
    HESSIAN_ALGORITHMS,
    eps_flatness,
    flatness_subset,
    hessian_topk,
)
from trainables.loop import TrialRunner


def trained_runner(epochs: int, data_dir: str) -> TrialRunner:
    """cnn1d on MNIST-1D trained ``epochs`` epochs without pruning (as bench/train_overhead.py)."""
    cfg = TrialConfig.from_dict(
        {
            "dataset": {"name": "mnist1d", "data_dir": data_dir},
            "model": {"name": "cnn1d"},
            "train": {"epochs": epochs, "batch_size": 128, "lr": 1e-3},
            "pruning": {"method": "none"},
        }
    )
    runner = TrialRunner(cfg, device="cpu", num_threads=1)
    for _ in runner.run():
        pass
    return runner


def timed_topk(
    model: nn.Module, x: Tensor, y: Tensor, k: int, iters: int, algorithm: str, repeats: int
) -> tuple[dict, Tensor]:
    """Sum, median seconds and HVP count of ``hessian_topk``; also its eigenvectors [k, P]."""
    calls = [0]

    def counted(out: Tensor, target: Tensor) -> Tensor:  # one call per HVP: x is one chunk
        calls[0] += 1
        return F.cross_entropy(out, target)

    seconds = []
    for _ in range(repeats):
        calls[0] = 0
        start = time.perf_counter()
        vals, vecs = hessian_topk(model, counted, x, y, k, iters, algorithm=algorithm)
        seconds.append(time.perf_counter() - start)
    result = {
        "sum": float(vals.sum()),
        "seconds": statistics.median(seconds),
        "hvps": calls[0],
        "eigenvalues": vals.tolist(),
    }
    return result, vecs


def reference_topk(model: nn.Module, x: Tensor, y: Tensor, k: int) -> dict:
    """The k eigenvalues of largest magnitude by ARPACK on float64 HVPs, descending."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    m = copy.deepcopy(model).double().eval()
    named = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
    shapes = [p.shape for _, p in named]
    w0 = torch.cat([p.detach().reshape(-1) for _, p in named])
    buffers = dict(m.named_buffers())
    xd = x.double()

    def loss_of(w: Tensor) -> Tensor:
        parts = torch.split(w, [s.numel() for s in shapes])
        params = {n: t.view(s) for (n, _), t, s in zip(named, parts, shapes, strict=True)}
        return F.cross_entropy(torch.func.functional_call(m, (params, buffers), (xd,)), y)

    gradient = torch.func.grad(loss_of)

    def matvec(v: np.ndarray) -> np.ndarray:
        tangent = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1))
        return torch.func.jvp(gradient, (w0,), (tangent,))[1].numpy()

    start = time.perf_counter()
    op = LinearOperator((w0.numel(), w0.numel()), matvec=matvec, dtype=np.float64)
    vals = eigsh(op, k=k, which="LM", tol=1e-8, return_eigenvectors=False)
    vals = np.sort(vals)[::-1]
    return {
        "sum": float(vals.sum()),
        "seconds": time.perf_counter() - start,
        "eigenvalues": vals.tolist(),
    }


def measure(
    ks: list[int], iters: int, repeats: int, epochs: int, reference: bool, data_dir: str
) -> dict:
    torch.set_num_threads(1)
    runner = trained_runner(epochs, data_dir)
    model, data = runner.model, runner.data
    idx = flatness_subset(data.y_test.shape[0], FlatnessConfig().subset_size)
    x, y = data.x_test[idx], data.y_test[idx]
    delta = FlatnessConfig().eps_delta
    per_k: dict[str, dict] = {}
    eps: dict[str, dict] = {}
    for k in ks:
        row: dict[str, dict] = {}
        for algorithm in HESSIAN_ALGORITHMS:
            row[algorithm], vecs = timed_topk(model, x, y, k, iters, algorithm, repeats)
            if k == min(ks):
                start = time.perf_counter()
                e = eps_flatness(
                    model, F.cross_entropy, data.x_test, data.y_test, vecs[:EPS_DIRECTIONS], delta
                )
                eps[algorithm] = {
                    "grid": e.grid,
                    "bisect": e.bisect,
                    "seconds": time.perf_counter() - start,
                }
        if reference:
            row["reference"] = reference_topk(model, x, y, k)
            for algorithm in HESSIAN_ALGORITHMS:
                row[algorithm]["rel_error"] = row[algorithm]["sum"] / row["reference"]["sum"] - 1
        per_k[str(k)] = row
    return {
        "model": "cnn1d",
        "dataset": "mnist1d",
        "train_epochs": epochs,
        "test_acc": runner.loop.records[-1]["test_acc"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "subset_size": int(x.shape[0]),
        "eval_size": int(data.x_test.shape[0]),
        "power_iters": iters,
        "repeats": repeats,
        "threads": 1,
        "topk": per_k,
        "eps_flatness": {"k": min(ks), "delta": delta, **eps},
        "torch": torch.__version__,
    }


def table(result: dict) -> list[str]:
    """The side-by-side lines printed after a run."""
    cols = [*HESSIAN_ALGORITHMS, "reference"]
    lines = [
        f"cnn1d / MNIST-1D after {result['train_epochs']} epochs (test acc "
        f"{result['test_acc']:.3f}), P = {result['parameters']}, Hessian on "
        f"{result['subset_size']} test examples, <= {result['power_iters']} steps per pair, 1 thread"
    ]
    lines.append(f"{'':<22}" + "".join(f"{c:>14}" for c in cols))
    for k, row in result["topk"].items():
        for label, key, fmt in (
            ("sum", "sum", "{:.3f}"),
            ("rel. error", "rel_error", "{:+.2e}"),
            ("seconds", "seconds", "{:.2f}"),
            ("HVPs", "hvps", "{}"),
        ):
            cells = [fmt.format(row[c][key]) if c in row and key in row[c] else "-" for c in cols]
            lines.append(f"{f'k={k} {label}':<22}" + "".join(f"{c:>14}" for c in cells))
    e = result["eps_flatness"]
    for key in ("grid", "bisect"):
        cells = [f"{e[a][key]:.4f}" for a in HESSIAN_ALGORITHMS] + ["-"]
        label = f"eps {key} (k={e['k']})"
        lines.append(f"{label:<22}" + "".join(f"{c:>14}" for c in cells))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="write the results here")
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 100], help="top-k values")
    parser.add_argument("--power-iters", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per algorithm and k")
    parser.add_argument("--train-epochs", type=int, default=10)
    parser.add_argument("--no-reference", action="store_true", help="skip the ARPACK reference")
    parser.add_argument("--data-dir", default="", help="MNIST-1D cache (default: prunetune's)")
    args = parser.parse_args(argv)
    result = measure(
        args.ks,
        args.power_iters,
        args.repeats,
        args.train_epochs,
        not args.no_reference,
        args.data_dir,
    )
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print("\n".join(table(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

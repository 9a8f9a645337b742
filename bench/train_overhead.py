"""Overhead of prunetune's training loop against a minimal hand-written PyTorch loop.

Runs the same MNIST-1D ``cnn1d`` training three ways in one process, interleaved, on one thread:

- ``bare``: the loop below: seeded permutation, batches by index, Adam, loss and accuracy summed
  on the device, one test-set evaluation per epoch (what any training script does);
- ``no_pruning``: ``TrialRunner`` with ``pruning.method: none``;
- ``pruning``: ``TrialRunner`` with the model's default schedule (masks re-applied every step,
  an extra test-set evaluation after every event).

Same data tensors, model, optimizer, epochs and batch size. Each repeat times the epochs only
(construction excluded, reported apart). Writes ``ratio_no_pruning`` and ``ratio_pruning``
(median prunetune time / median bare time over repeats), per-epoch times and peak RSS.
Goals: 1.05 and 1.15. Usage: ``python3 bench/train_overhead.py --json FILE [--epochs 20]``.

A separate section (``flatness_cost``) measures what one flatness measurement costs on the same
model, as the loop's flatness probe makes it: the default ``FlatnessConfig`` with ``top_k``
resolved for the model (10 on cnn1d), the official Hessian top-k (20 power steps per pair) and
Tr(C) on the fixed 512-example test subset, epsilon-flatness (official grid and bisection) on the
whole test split, after a few epochs of training; seconds per measurement, its parts, and the
ratio to one training epoch (``flatness.ratio_to_epoch``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from trainables.config import TrialConfig
from trainables.loop import TrialRunner

GOALS = {"ratio_no_pruning": 1.05, "ratio_pruning": 1.15}


def trial_config(method: str, epochs: int, batch_size: int, data_dir: str) -> TrialConfig:
    """cnn1d on MNIST-1D; ``method`` none or schedule (the model's default layer schedule)."""
    return TrialConfig.from_dict(
        {
            "dataset": {"name": "mnist1d", "data_dir": data_dir},
            "model": {"name": "cnn1d"},
            "train": {"epochs": epochs, "batch_size": batch_size, "lr": 1e-3},
            "pruning": {"method": method, "period": 1},
        }
    )


def bare_epochs(runner: TrialRunner, epochs: int) -> list[float]:
    """A minimal loop over the runner's data and a fresh copy of its model; per-epoch seconds."""
    data, device = runner.data, runner.device
    model = runner.model
    optimizer = torch.optim.Adam(model.parameters(), lr=runner.cfg.train.lr)
    generator = torch.Generator().manual_seed(0)
    n, bs = data.y_train.shape[0], runner.cfg.train.batch_size
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for idx in torch.randperm(n, generator=generator).split(bs):
            x, y = data.x_train[idx], data.y_train[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum.add_(loss.detach(), alpha=idx.numel())
            correct.add_((logits.argmax(1) == y).sum())
        model.eval()
        with torch.no_grad():
            test_correct = (model(data.x_test).argmax(1) == data.y_test).sum()
        _ = (loss_sum.item() / n, correct.item() / n, test_correct.item())
        times.append(time.perf_counter() - start)
    return times


def prunetune_epochs(runner: TrialRunner) -> list[float]:
    times = []
    for _ in runner.run():
        times.append(runner.loop.records[-1]["epoch_time_s"])
    return times


def measure(epochs: int, repeats: int, batch_size: int, data_dir: str) -> dict:
    torch.set_num_threads(1)
    configs = {m: trial_config(m, epochs, batch_size, data_dir) for m in ("none", "schedule")}
    per_epoch: dict[str, list[list[float]]] = {"bare": [], "no_pruning": [], "pruning": []}
    build_s: dict[str, list[float]] = {"no_pruning": [], "pruning": []}
    events = 0
    for _ in range(repeats):
        for name, method in (("bare", "none"), ("no_pruning", "none"), ("pruning", "schedule")):
            t0 = time.perf_counter()
            runner = TrialRunner(configs[method], device="cpu", num_threads=1)
            if name != "bare":
                build_s[name].append(time.perf_counter() - t0)
                per_epoch[name].append(prunetune_epochs(runner))
            else:
                per_epoch[name].append(bare_epochs(runner, epochs))
            if name == "pruning":
                events = sum(r["is_event"] for r in runner.loop.records)
    totals = {k: statistics.median(sum(rep) for rep in v) for k, v in per_epoch.items()}
    return {
        "epochs": epochs,
        "repeats": repeats,
        "batch_size": batch_size,
        "threads": 1,
        "pruning_events": events,
        "total_s_median": totals,
        "ratio_no_pruning": totals["no_pruning"] / totals["bare"],
        "ratio_pruning": totals["pruning"] / totals["bare"],
        "goals": GOALS,
        "per_epoch_s": {
            k: [statistics.median(e) for e in zip(*v, strict=True)] for k, v in per_epoch.items()
        },
        "build_s_median": {k: statistics.median(v) for k, v in build_s.items()},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch": torch.__version__,
    }


# --- flatness cost (helper "science") -------------------------------------------------------------


def flatness_cost(repeats: int, train_epochs: int, batch_size: int, data_dir: str) -> dict:
    """Seconds per flatness measurement on cnn1d / MNIST-1D, and its ratio to one training epoch.

    Trains ``train_epochs`` epochs (no pruning; their median time is the epoch unit), then times
    ``repeats`` calls of :func:`trainables.flatness.measure_flatness` and of its three parts on the
    fixed subset the loop's ``FlatnessProbe`` uses.
    """
    from trainables.extensions import FlatnessProbe
    from trainables.flatness import eps_flatness, grad_noise_trace, hessian_topk, measure_flatness

    torch.set_num_threads(1)
    runner = TrialRunner(trial_config("none", train_epochs, batch_size, data_dir), "cpu", 1)
    epoch_s = statistics.median(prunetune_epochs(runner))
    # the probe a trial measuring at epoch 0 would have: its subset, whole split and top_k
    flatness = dataclasses.replace(runner.cfg.flatness, epochs=(0,))
    runner.cfg = dataclasses.replace(runner.cfg, flatness=flatness)
    probe = FlatnessProbe(runner)
    fc, x, y = probe.cfg, probe.x, probe.y
    total, parts = [], {"hessian_topk": [], "grad_noise_trace": [], "eps_flatness": []}
    for _ in range(repeats):
        values = measure_flatness(runner.model, x, y, fc, eval_x=probe.eval_x, eval_y=probe.eval_y)
        total.append(values["flatness_time_s"])
        t0 = time.perf_counter()
        _, vecs = hessian_topk(
            runner.model, F.cross_entropy, x, y, fc.top_k, fc.power_iters, algorithm=fc.hessian
        )
        t1 = time.perf_counter()
        grad_noise_trace(runner.model, F.cross_entropy, x, y)
        t2 = time.perf_counter()
        eps_flatness(runner.model, F.cross_entropy, probe.eval_x, probe.eval_y, vecs, fc.eps_delta)
        parts["hessian_topk"].append(t1 - t0)
        parts["grad_noise_trace"].append(t2 - t1)
        parts["eps_flatness"].append(time.perf_counter() - t2)
    measurement_s = statistics.median(total)
    return {
        "config": {
            "subset_size": fc.subset_size,
            "top_k": fc.top_k,
            "power_iters": fc.power_iters,
            "hessian": fc.hessian,
            "eps_examples": int(probe.eval_y.shape[0]),
        },
        "parameters": sum(p.numel() for p in runner.model.parameters()),
        "train_epoch_s_median": epoch_s,
        "measurement_s_median": measurement_s,
        "parts_s_median": {k: statistics.median(v) for k, v in parts.items()},
        "ratio_to_epoch": measurement_s / epoch_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="write the results here")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--data-dir", default="", help="MNIST-1D cache (default: prunetune's)")
    parser.add_argument(
        "--flatness-repeats", type=int, default=2, help="flatness measurements to time (0: skip)"
    )
    args = parser.parse_args(argv)
    result = measure(args.epochs, args.repeats, args.batch_size, args.data_dir)
    if args.flatness_repeats > 0:
        result["flatness"] = flatness_cost(args.flatness_repeats, 5, args.batch_size, args.data_dir)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    for key, goal in GOALS.items():
        print(f"{key}: {result[key]:.3f} (goal {goal})")
    print(
        f"median totals (s): {json.dumps({k: round(v, 3) for k, v in result['total_s_median'].items()})}"
    )
    print(f"pruning events: {result['pruning_events']}, peak RSS: {result['peak_rss_mb']:.0f} MiB")
    if "flatness" in result:
        f = result["flatness"]
        print(
            f"flatness: {f['measurement_s_median']:.2f} s per measurement = "
            f"{f['ratio_to_epoch']:.1f} training epochs ({f['train_epoch_s_median']:.3f} s each); "
            f"parts (s): {json.dumps({k: round(v, 3) for k, v in f['parts_s_median'].items()})}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

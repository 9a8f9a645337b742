"""Throughput, memory and packing of the paper models on one device (part of ``gpu_check.py``).

The paper models are those of the presets that ask for a GPU, each at its preset's batch size
(``train.batch_size`` / ``eval_batch_size``, read from the presets, not restated here), on
synthetic data of its dataset's shape.

- ``throughput <model>``: images per second of whole epochs (training on N examples plus the
  epoch's test evaluation(s) of N examples), the first epoch (warm-up) left out, of four loops
  run one after another in this process: ``bare`` (``bench/train_overhead.py``'s minimal PyTorch
  loop), prunetune without pruning, prunetune pruning every prunable layer at every epoch, and
  prunetune with ``bf16`` and ``channels_last``. The ratios prunetune / bare are the
  training overhead on this device (``train_overhead.py`` measures it on the CPU).
- ``packing <model>``: k trials at once (k in ``PackingSizes.ks``), each a separate process like
  a Ray trial, started together: their summed images per second, each trial's peak memory (from
  the k = 1 run: PyTorch's peak reserved memory, plus the CUDA context, plus the full dataset on
  the device instead of the N examples), and so the trials per hour at ``resources.gpu`` = 1/k:
  ``k * 3600 / (epochs * epoch seconds of one trial at the full dataset size)``, where the
  epoch's training and evaluation parts scale separately to the dataset's train and test sizes.
  The fraction with the most trials per hour among those whose k trials fit in 90% of the GPU's
  memory is printed next to the presets' fraction. CPUs per trial (the presets ask 2) can bound k
  too: the line says how many the node's CPUs allow.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from trainables import datasets

MEMORY_SHARE = 0.9  # of the GPU's memory that packed trials may use


@dataclass(frozen=True)
class PackingSizes:
    examples: int  # N: training and test examples of each timed trial
    epochs: int  # timed epochs (after one warm-up epoch)
    width: int  # model.width (0: the architecture's)
    ks: tuple[int, ...]  # trials at once


def context_bytes(device: torch.device) -> int:
    """GPU memory in use that PyTorch's allocator does not hold: the CUDA context (and any other
    process on the GPU). 0 on the CPU."""
    if device.type != "cuda":
        return 0
    torch.zeros(1, device=device)
    free, total = torch.cuda.mem_get_info(device)
    return total - free - torch.cuda.memory_reserved(device)


def paper_models() -> dict[str, dict[str, Any]]:
    """Model -> its presets' batch sizes, epochs, dataset and GPU fractions (presets with gpu > 0)."""
    from search_spaces.cross import combos
    from search_spaces.presets import PRESETS, preset_text
    from search_spaces.spec import spec_from_yaml

    paths = ("model.name", "dataset.name", "train.batch_size", "train.eval_batch_size")
    out: dict[str, dict[str, Any]] = {}
    for preset in PRESETS:
        spec = spec_from_yaml(preset_text(preset))
        if spec.resources.gpu <= 0:
            continue
        for combo in combos(spec, *paths, "train.epochs"):
            model, dataset, batch, eval_batch, epochs = (v for _, v in combo)
            entry = out.setdefault(
                model,
                {"dataset": dataset, "batch_size": batch, "eval_batch_size": eval_batch,
                 "epochs": epochs, "gpu": set(), "cpu": set(), "presets": set()},
            )  # fmt: skip
            entry["eval_batch_size"] = max(entry["eval_batch_size"], eval_batch)
            entry["epochs"] = max(entry["epochs"], epochs)
            entry["gpu"].add(spec.resources.gpu)
            entry["cpu"].add(spec.resources.cpu)
            entry["presets"].add(preset)
    return dict(sorted(out.items()))


def trial_config(model: str, facts: dict, sizes: PackingSizes, method: str, **train):
    """``method`` none, or schedule: 30% of every prunable layer's units, an event every epoch."""
    from trainables.config import TrialConfig
    from trainables.models import facts_for

    model_facts, why = facts_for(model, sizes.width, facts["dataset"])
    if model_facts is None:
        raise ValueError(why)
    names = model_facts.layers
    end = sizes.epochs  # the last epoch (one warm-up epoch comes first)
    layers = [{"name": n, "final_fraction": 0.3, "start_epoch": 0, "end_epoch": end} for n in names]
    return TrialConfig.from_dict(
        {
            "dataset": {
                "name": facts["dataset"],
                "synthetic": True,
                "max_examples": sizes.examples,
            },
            "model": {"name": model, "width": sizes.width},
            "train": {
                "epochs": sizes.epochs + 1,
                "batch_size": facts["batch_size"],
                "eval_batch_size": facts["eval_batch_size"],
                **train,
            },
            "pruning": {"method": method, "period": 1, "layers": layers}
            if method != "none"
            else {},
        }
    )


# --- throughput: bare loop against prunetune's, in this process ----------------------------------


def throughput(model: str, facts: dict, sizes: PackingSizes, device) -> dict[str, float]:
    from train_overhead import bare_epochs, prunetune_epochs

    from trainables.loop import TrialRunner

    def ips(times: list[float]) -> float:
        return sizes.examples / statistics.median(times[1:])

    runs = {
        "bare": ("none", {}),
        "prunetune": ("none", {}),
        "pruning": ("schedule", {}),
        "bf16_channels_last": ("none", {"bf16": True, "channels_last": True}),
    }
    out = {}
    for name, (method, train) in runs.items():
        runner = TrialRunner(trial_config(model, facts, sizes, method, **train), device, 2)
        if name == "bare":
            out[name] = ips(bare_epochs(runner, sizes.epochs + 1))
        else:
            out[name] = ips(prunetune_epochs(runner))
        del runner
    return out


# --- packing: k trial processes at once -----------------------------------------------------------


def _worker(rank: int, plan: list, sizes: PackingSizes, device: str, barrier, queue) -> None:
    from trainables.loop import TrialRunner

    dev = torch.device(device)
    context = context_bytes(dev)
    for model, facts in plan:
        runner = TrialRunner(trial_config(model, facts, sizes, "none"), dev, 2)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        runner.run_epoch()  # warm-up
        barrier.wait(timeout=300)
        start = time.perf_counter()
        for _ in range(sizes.epochs):
            runner.run_epoch()
        epochs_s = time.perf_counter() - start
        t0 = time.perf_counter()
        runner._evaluate(runner.data.x_test, runner.data.y_test)  # the evaluation part alone
        eval_s = time.perf_counter() - t0
        peak = torch.cuda.max_memory_reserved(dev) if dev.type == "cuda" else 0
        data = sum(t.numel() * t.element_size() for t in (runner.data.x_train, runner.data.x_test))
        queue.put(
            {"model": model, "rank": rank, "epoch_s": epochs_s / sizes.epochs,
             "eval_s": eval_s, "peak_bytes": peak, "context_bytes": context, "data_bytes": data}
        )  # fmt: skip
        del runner
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        barrier.wait(timeout=300)


def concurrent(k: int, plan: list, sizes: PackingSizes, device: str) -> list[dict]:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(k), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(r, plan, sizes, device, barrier, queue)) for r in range(k)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=600) for _ in range(k * len(plan))]
    for p in procs:
        p.join(timeout=60)
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f"a packing worker of k={k} exited with {[p.exitcode for p in procs]}")
    return results


def full_trial(model: str, facts: dict, results: list[dict], sizes: PackingSizes) -> dict:
    """One trial at k at once, scaled to the dataset's full train / test sizes."""
    rows = [r for r in results if r["model"] == model]
    n_train, n_test = datasets.split_sizes(facts["dataset"], 5000, 0)
    epoch = statistics.mean(
        (r["epoch_s"] - r["eval_s"]) * n_train / sizes.examples
        + r["eval_s"] * n_test / sizes.examples
        for r in rows
    )
    info = datasets.get(facts["dataset"])
    per_example = 4 * torch.Size(info.input_shape).numel()
    full_data = (n_train + n_test) * per_example
    memory = max(r["peak_bytes"] - r["data_bytes"] + full_data + r["context_bytes"] for r in rows)
    return {"epoch_s": epoch, "memory_bytes": memory}


def best_fraction(per_k: dict[int, dict], epochs: int, gpu_bytes: int) -> tuple[int | None, dict]:
    """{k: trials per hour} and the k with the most of them among those that fit in memory."""
    rates = {k: k * 3600 / (epochs * v["epoch_s"]) for k, v in per_k.items()}
    memory = max(v["memory_bytes"] for v in per_k.values())
    fits = [k for k in rates if not gpu_bytes or k * memory <= MEMORY_SHARE * gpu_bytes]
    return (max(fits, key=rates.get) if fits else None), rates


def run(report, device: torch.device, sizes: PackingSizes) -> None:
    plan = list(paper_models().items())
    for model, facts in plan:
        r = throughput(model, facts, sizes, device)
        line = (
            f"batch {facts['batch_size']}: bare {r['bare']:.0f} img/s, prunetune "
            f"{r['prunetune']:.0f} (x{r['bare'] / r['prunetune']:.2f} time), with pruning "
            f"{r['pruning']:.0f} (x{r['bare'] / r['pruning']:.2f}), bf16+channels_last "
            f"{r['bf16_channels_last']:.0f} img/s"
        )
        report.add(f"throughput {model}", True, line, images_per_s=r)
    gpu_bytes = (
        torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else 0
    )
    results = {k: concurrent(k, plan, sizes, str(device)) for k in sizes.ks}
    for model, facts in plan:
        per_k = {k: full_trial(model, facts, res, sizes) for k, res in results.items()}
        best, rates = best_fraction(per_k, facts["epochs"], gpu_bytes)
        memory = per_k[min(per_k)]["memory_bytes"]
        cpus = (os.cpu_count() or 1) // int(max(facts["cpu"]))
        shown = ", ".join(f"{1 / k:g}: {v:.3g}" for k, v in rates.items())
        line = (
            (
                f"trials/hour at resources.gpu {shown}; best {1 / best:g} "
                f"(presets ask {sorted(facts['gpu'])}); {memory / 2**30:.2f} GiB per trial; "
                f"the CPUs allow {cpus} trials at {max(facts['cpu']):g} CPU"
            )
            if best
            else f"no k of {list(rates)} fits in memory ({memory / 2**30:.2f} GiB per trial)"
        )
        report.add(
            f"packing {model}", best is not None, line,
            best_fraction=1 / best if best else None, trials_per_hour=rates, memory_bytes=memory,
            presets=sorted(facts["presets"]),
        )  # fmt: skip

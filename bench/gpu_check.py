"""First-GPU check: every CUDA path of prunetune, measured in at most about 5 minutes on one GPU.

Usage: ``python3 bench/gpu_check.py --json OUT [--device cuda|cpu] [--budget-s 280]``.

Prints one line per check, ``<check>: OK|FAIL|SKIP <what was seen>``, and writes every number to
``OUT``. Synthetic data of each dataset's shape (``dataset.synthetic``), nothing downloaded. Checks,
in order (the README's "First GPU" section says how to read them):

- ``env``: GPU, torch, CUDA, cuDNN, total memory, the CUDA context's own memory;
- ``zoo <model>``: every registered model, forward and backward with half the units of its first
  prunable layer masked, in fp32, bf16 autocast and channels-last (2-d models): finite loss,
  masked units output exactly 0 and get exactly 0 gradient, loss within tolerance of fp32;
- ``data``: a CIFAR-shaped bundle loaded on the device (label noise, validation split) and a
  crop/flip batch equal to the CPU's, exactly;
- ``event``, ``noise``: a trial trained one epoch on the CPU, checkpointed, resumed on the device
  and on the CPU for one more epoch with a pruning event (``event``: the same units removed,
  losses and accuracies within tolerance, pruned units exactly 0 on the device), or a Gaussian
  noise window (``noise``: the same windows);
- ``ray``: a real local Ray study of four trials at ``resources.gpu: 0.25`` (2 epochs): all
  finish, and ``device`` in trials.parquet names the GPU;
- ``throughput <model>`` and ``packing <model>``: :mod:`gpu_packing`;
- ``flatness``: the same hand-off with the flatness probe at the event's epoch; last, because
  its CPU side is the slowest part of the whole check.

Correctness checks run with TF32 off (exact fp32 on the GPU, so the tolerances mean something);
throughput runs with torch's defaults, as trials do. Exit code 0 when no check failed (also on a
machine without a GPU, where nothing is measured), 1 otherwise. ``--device cpu`` runs every check
on the CPU at toy sizes in a couple of minutes: a dry run of this script's own logic, whose
numbers mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)] if str(REPO) not in sys.path else []

import gpu_packing  # noqa: E402  (beside this file)
import gpu_ray  # noqa: E402

from trainables import datasets, models  # noqa: E402

# Tolerances of the device against the CPU (fp32, TF32 off) and of bf16 / channels-last against
# fp32 on the same device and weights.
TOL = {
    "zoo_bf16_loss_rel": 5e-2,
    "zoo_channels_last_loss_rel": 1e-3,
    "trial_loss_rel": 1e-3,  # one epoch of training apart
    "trial_acc_abs": 0.01,  # 1% of the test examples may flip
    "flatness_rel": 2e-2,  # power iteration and vmapped gradients, 5 steps
    "eps_abs": 0.01,  # one step of the epsilon grid
}


@dataclass(frozen=True)
class Sizes:
    """How big each check is: ``gpu`` (the real check) or ``dry`` (``--device cpu``)."""

    zoo_batch: int
    zoo_width: int
    trial_examples: int
    trial_width: int
    flatness_subset: int
    power_iters: int
    ray_examples: int
    packing: gpu_packing.PackingSizes


SIZES = {
    "gpu": Sizes(64, 0, 256, 8, 16, 2, 1024, gpu_packing.PackingSizes(4096, 2, 0, (1, 2, 4, 8))),
    # width 8: at width 4, ResNet-18's channels-last backward crashes on the CPU (torch 2.14)
    "dry": Sizes(4, 8, 64, 4, 8, 1, 64, gpu_packing.PackingSizes(64, 1, 8, (1, 2))),
}


class Report:
    """Collects one dict per check and prints its line as it comes."""

    def __init__(self) -> None:
        self.checks: list[dict] = []

    def add(self, name: str, ok: bool | None, line: str, **values) -> None:
        status = "SKIP" if ok is None else ("OK" if ok else "FAIL")
        print(f"{name}: {status} {line}", flush=True)
        self.checks.append({"check": name, "status": status, "line": line, **values})

    @property
    def failed(self) -> int:
        return sum(c["status"] == "FAIL" for c in self.checks)


@contextlib.contextmanager
def exact_fp32():
    """TF32 off for cuDNN and matmuls (torch keeps cuDNN's TF32 on by default)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), 1e-12)


# --- env and zoo ----------------------------------------------------------------------------------


def check_env(report: Report, device: torch.device) -> None:
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env |= {
            "gpu": props.name,
            "total_memory_gib": props.total_memory / 2**30,
            "cudnn": torch.backends.cudnn.version(),
            "context_gib": gpu_packing.context_bytes(device) / 2**30,
            "bf16_supported": torch.cuda.is_bf16_supported(),
        }
        line = (
            f"{props.name}, {env['total_memory_gib']:.1f} GiB, torch {env['torch']}, CUDA "
            f"{env['cuda']}, cuDNN {env['cudnn']}, context {env['context_gib']:.2f} GiB"
        )
    else:
        line = f"CPU dry run, torch {env['torch']}: sizes are toys, numbers mean nothing"
    report.add("env", True, line, **env)


def dataset_for(model: str) -> str:
    """CIFAR-10 for the papers' models, else the first of MNIST-1D and MNIST that ``model`` takes."""
    for name in ("cifar10",) if models.get(model).paper_scale else ("mnist1d", "mnist"):
        info = datasets.get(name)
        try:
            with torch.device("meta"):
                models.build_model(model, 0, info.input_shape, info.num_classes)
            return name
        except Exception:  # noqa: BLE001 - "does not fit" has several exception types
            continue
    raise AssertionError(f"no dataset fits model {model}")


def _masked_step(model_name: str, dataset: str, mode: str, device, sizes: Sizes):
    """(loss, pruned units' max |output|, their max |grad|) of one masked training step."""
    from trainables.pruning.masks import MaskSet

    info = datasets.get(dataset)
    torch.manual_seed(0)
    model = models.build_model(model_name, sizes.zoo_width, info.input_shape, info.num_classes)
    channels_last = mode == "channels_last"
    model.to(device=device, memory_format=torch.channels_last if channels_last else None)
    masks = MaskSet(model, "filter")
    name, layer = next(iter(model.prunable_layers().items()))
    dead = torch.zeros(layer.weight.shape[0], dtype=torch.bool)
    dead[::2] = True
    masks.remove({name: dead.to(masks.masks[name].device)})
    g = torch.Generator().manual_seed(0)
    x = torch.randn(sizes.zoo_batch, *info.input_shape, generator=g).to(device)
    y = torch.randint(0, info.num_classes, (sizes.zoo_batch,), generator=g).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    outputs = []
    hook = layer.register_forward_hook(lambda m, a, out: outputs.append(out.detach()))
    autocast = torch.autocast(device.type, torch.bfloat16) if mode == "bf16" else None
    model.train()
    with autocast or contextlib.nullcontext():
        loss = F.cross_entropy(model(x).float(), y)
    loss.backward()
    masks.mask_grads_()
    hook.remove()
    dead = dead.to(device)
    out_max = float(outputs[0][:, dead].abs().max())
    grad_max = float(layer.weight.grad[dead].abs().max())
    return float(loss.detach()), out_max, grad_max


def check_zoo(report: Report, device, sizes: Sizes) -> None:
    for name in models.NAMES:
        dataset = dataset_for(name)
        modes = ["fp32", "bf16"] + (["channels_last"] if dataset != "mnist1d" else [])
        values, problems = {}, []
        with exact_fp32():
            for mode in modes:
                loss, out_max, grad_max = _masked_step(name, dataset, mode, device, sizes)
                values[mode] = loss
                if not math.isfinite(loss):
                    problems.append(f"{mode} loss {loss}")
                if out_max != 0 or grad_max != 0:
                    problems.append(f"{mode} masked units output {out_max:g}, grad {grad_max:g}")
        for mode in modes[1:]:
            tol = TOL[f"zoo_{mode}_loss_rel"]
            if rel(values["fp32"], values[mode]) > tol:
                problems.append(f"{mode} loss {values[mode]:.5f} vs fp32 {values['fp32']:.5f}")
        shown = ", ".join(f"{m} {v:.5f}" for m, v in values.items())
        line = f"{dataset}: loss {shown}; masked units 0" if not problems else "; ".join(problems)
        report.add(f"zoo {name}", not problems, line, dataset=dataset, losses=values)


# --- data, event, noise, flatness -----------------------------------------------------------------


def check_data(report: Report, device, sizes: Sizes) -> None:
    from trainables.augment import augment_batch
    from trainables.config import DatasetConfig
    from trainables.data import load_data

    cfg = DatasetConfig(
        name="cifar10",
        synthetic=True,
        max_examples=sizes.trial_examples,
        label_noise_fraction=0.2,
        validation_fraction=0.1,
    )
    cpu, dev = load_data(cfg, seed=3), load_data(cfg, seed=3, device=device)
    fields = ("x_train", "y_train", "y_train_clean", "noisy_mask", "x_val", "y_val", "x_test")
    differ = [f for f in fields if not torch.equal(getattr(cpu, f), getattr(dev, f).cpu())]
    a = augment_batch(cpu.x_train[:256], torch.Generator().manual_seed(0), cpu.pixel_zero)
    b = augment_batch(dev.x_train[:256], torch.Generator().manual_seed(0), dev.pixel_zero)
    if not torch.equal(a, b.cpu()):
        differ.append("augment_batch")
    on_device = dev.x_train.device.type == device.type
    line = f"{len(fields)} tensors and a crop/flip batch equal to the CPU's, exactly"
    report.add("data", not differ and on_device, line if not differ else f"differ: {differ}")


def trial_cfg(sizes: Sizes, perturbation: dict | None = None, flatness: bool = False):
    from trainables.config import TrialConfig

    layers = [
        {"name": n, "final_fraction": 0.5, "start_epoch": 1, "end_epoch": 1}
        for n in ("layer2.0.conv1", "layer3.0.conv2")
    ]
    pruning = {"method": "schedule", "layers": layers}
    if perturbation:
        pruning["perturbation"] = perturbation
    data = {"name": "cifar10", "synthetic": True, "max_examples": sizes.trial_examples}
    return TrialConfig.from_dict(
        {
            "dataset": data,
            "model": {"name": "resnet20", "width": sizes.trial_width},
            "train": {"epochs": 2, "batch_size": 128, "eval_batch_size": 256, "lr": 1e-3},
            "pruning": pruning,
            "flatness": {
                "epochs": [1],
                "subset_size": sizes.flatness_subset,
                "top_k": 2,
                "power_iters": sizes.power_iters,
            }
            if flatness
            else {},
            "seed": 5,
        }
    )


def handoff(cfg, device) -> tuple[dict, dict, object, object]:
    """Epoch 0 on the CPU, checkpointed; epoch 1 on the CPU and, resumed, on the device."""
    from trainables.loop import TrialRunner
    from trainables.state import save_state

    cpu = TrialRunner(cfg, device="cpu")
    cpu.run_epoch()
    with tempfile.TemporaryDirectory() as tmp:
        save_state(cpu, tmp)
        dev = TrialRunner.from_checkpoint(tmp, device=device)
    return cpu.run_epoch(), dev.run_epoch(), cpu, dev


def _compare(a: dict, b: dict) -> list[str]:
    problems = []
    for key in ("train_loss", "test_loss"):
        if rel(a[key], b[key]) > TOL["trial_loss_rel"]:
            problems.append(f"{key} {b[key]:.6f} vs CPU {a[key]:.6f}")
    for key in ("train_acc", "acc_before", "acc_after", "test_acc"):
        if abs(a[key] - b[key]) > TOL["trial_acc_abs"]:
            problems.append(f"{key} {b[key]:.4f} vs CPU {a[key]:.4f}")
    return problems


def check_trials(report: Report, device, sizes: Sizes) -> None:
    with exact_fp32():
        a, b, cpu, dev = handoff(trial_cfg(sizes), device)
    problems = _compare(a, b)
    if a["units_removed"] != b["units_removed"] or not a["units_removed_total"]:
        problems.append(f"units removed {b['units_removed']} vs CPU {a['units_removed']}")
    for name, mask in dev.masks.masks.items():
        weight = dev.model.prunable_layers()[name].weight
        if (weight[~mask] != 0).any():
            problems.append(f"{name}: a pruned unit is not 0 on the device")
    line = (
        f"instability {b['instability']:.4f} (CPU {a['instability']:.4f}), "
        f"{b['units_removed_total']} units removed as on the CPU, pruned units 0"
    )
    report.add("event", not problems, "; ".join(problems) or line, device=b, cpu=a)
    window = {"mode": "gaussian", "steps": 3, "variant": "iter"}
    with exact_fp32():
        a, b, _, _ = handoff(trial_cfg(sizes, perturbation=window), device)
    problems = _compare(a, b)
    if a["windows_closed"] != b["windows_closed"] or a["sparsity"] != 0 or b["sparsity"] != 0:
        problems.append(f"windows {b['windows_closed']} vs CPU {a['windows_closed']}")
    line = f"acc_after {b['acc_after']:.4f} (CPU {a['acc_after']:.4f}), windows as on the CPU"
    report.add("noise", not problems, "; ".join(problems) or line)


def check_flatness(report: Report, device, sizes: Sizes) -> None:
    """The flatness probe at the event's epoch, on the device and on the CPU (the slow side)."""
    with exact_fp32():
        a, b, _, _ = handoff(trial_cfg(sizes, flatness=True), device)
    flat = ("hessian_topk_sum", "grad_noise_trace")
    fp = [
        f"{k} {b[k]:.4g} vs CPU {a[k]:.4g}" for k in flat if rel(a[k], b[k]) > TOL["flatness_rel"]
    ]
    if not abs(a["eps_flatness"] - b["eps_flatness"]) <= TOL["eps_abs"]:
        fp.append(f"eps_flatness {b['eps_flatness']} vs CPU {a['eps_flatness']}")
    line = ", ".join(f"{k} {b[k]:.4g} (CPU {a[k]:.4g})" for k in (*flat, "eps_flatness"))
    line += f"; {b['flatness_time_s']:.2f} s (CPU {a['flatness_time_s']:.2f} s)"
    report.add("flatness", not fp, "; ".join(fp) or line)


# --- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="write every check's numbers here")
    parser.add_argument(
        "--device", default="cuda", choices=("cuda", "cpu"), help="cpu: a dry run at toy sizes"
    )
    parser.add_argument(
        "--budget-s", type=float, default=280, help="checks not started by then are skipped"
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated steps to run (env always runs): zoo, data, trials, ray, packing, "
        "flatness; default all",
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA GPU visible (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda}); nothing measured"
        )
        return 0
    device = torch.device(args.device)
    sizes = SIZES["gpu" if device.type == "cuda" else "dry"]
    report, start = Report(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        steps = [
            ("env", lambda: check_env(report, device)),
            ("zoo", lambda: check_zoo(report, device, sizes)),
            ("data", lambda: check_data(report, device, sizes)),
            ("trials", lambda: check_trials(report, device, sizes)),
            ("ray", lambda: gpu_ray.check_ray(report, device, sizes, Path(tmp))),
            ("packing", lambda: gpu_packing.run(report, device, sizes.packing)),
            ("flatness", lambda: check_flatness(report, device, sizes)),
        ]
        only = {"env", *args.only.split(",")} if args.only else None
        for name, step in steps:
            if only is not None and name not in only:
                continue
            if time.perf_counter() - start > args.budget_s:
                report.add(name, None, f"not started: past --budget-s {args.budget_s:g}")
                continue
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
                report.add(name, False, f"raised {type(exc).__name__}: {exc}")
    total = time.perf_counter() - start
    print(f"gpu_check: {report.failed} failed of {len(report.checks)} checks in {total:.0f} s")
    result = {"tolerances": TOL, "seconds": total, "checks": report.checks}
    Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())

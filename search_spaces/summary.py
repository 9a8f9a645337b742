"""What a plan will cost: trial counts, epochs and a rough compute estimate (``--dry-run``).

Cost model (seconds per epoch: one training pass plus about one evaluation pass), scaled
linearly with the training-set size:

- GPU, on one A100 (``GPU_EPOCH_S``): ResNet-18 on CIFAR-10 takes about 2.1 s per epoch
  (performance-notes.md: 200 epochs in about 7 minutes); VGG11-BN costs about 0.27x its FLOPs
  (0.6 s); OpenLTH's VGG-16 about 0.56x (1.2 s). The small CIFAR ResNets are bounded by kernel
  latency rather than FLOPs (ResNet-20 0.5 s, ResNet-56 1.0 s, assumed); MNIST models are tiny.
- CPU, on one thread (``CPU_EPOCH_S``), only where it is practical: the MNIST-1D models, measured
  with ``trainables.loop.TrialRunner`` on this project's 2-core machine (MLP 40-256-256-10, batch
  100, 4,000 training examples: 0.07 s per unpruned epoch and 0.1 s per epoch with weight masks,
  CPU time under load; 0.08 used).
- IMP trials run ``train.epochs x (imp.rounds + 1)`` epochs with learning-rate rewinding (see
  :func:`trial_epochs` for the other variants). A flatness measurement costs about
  ``2 x top_k x power_iters x subset_size / train_size`` epochs (Hessian-vector products).

Numbers are order-of-magnitude guides for planning, not promises.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trainables.config import TrialConfig, flatness_top_k

if TYPE_CHECKING:  # expand re-exports plan_summary, so no runtime import back
    from search_spaces.expand import StudyPlan

# model -> (seconds per epoch, training-set size that time refers to)
GPU_EPOCH_S: dict[str, tuple[float, int]] = {
    "resnet18": (2.1, 50_000),
    "vgg11_bn": (0.6, 50_000),
    "vgg16": (1.2, 50_000),
    "resnet20": (0.5, 50_000),
    "resnet56": (1.0, 50_000),
    "lenet": (0.3, 60_000),
    "mlp": (0.05, 4_000),
    "cnn1d": (0.05, 4_000),
}
CPU_EPOCH_S: dict[str, tuple[float, int]] = {
    "mlp": (0.08, 4_000),
    "cnn1d": (0.1, 4_000),
}
TRAIN_SIZES: dict[str, int] = {"mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000}


def trial_epochs(trial: TrialConfig) -> int:
    """Training epochs a trial runs (trainables.pruning.imp: round 0 of T epochs, then per round
    T (learning-rate rewinding) or T - rewind_epoch (weight rewinding), plus T for the
    sparse_from_start control's final phase)."""
    t, p = trial.train.epochs, trial.pruning
    if p.method != "imp":
        return t
    per_round = t - p.imp.rewind_epoch if p.imp.rewind == "weight" else t
    return t + p.imp.rounds * per_round + (t if p.imp.control == "sparse_from_start" else 0)


def train_size(trial: TrialConfig) -> int:
    d = trial.dataset
    full = round(d.num_samples * 0.8) if d.name == "mnist1d" else TRAIN_SIZES[d.name]
    return max(1, round(full * (1 - d.validation_fraction)))


def trial_seconds(trial: TrialConfig, table: dict[str, tuple[float, int]]) -> float | None:
    """Estimated run time of one trial under a cost table (None: model not in the table)."""
    if trial.model.name not in table:
        return None
    seconds, size = table[trial.model.name]
    n = train_size(trial)
    f = trial.flatness
    flatness_epochs = len(f.epochs) * 2 * flatness_top_k(trial) * f.power_iters * f.subset_size / n
    return (trial_epochs(trial) + flatness_epochs) * seconds * n / size


def plan_summary(plan: StudyPlan) -> dict[str, Any]:
    """Counts, epochs, resources and a compute estimate; plain JSON data.

    Keys: ``trials`` {pruned, baselines, optuna, total}; ``epochs`` (all trials; Optuna trials
    counted with the plan's base configuration); ``resources_per_trial`` {cpu, gpu};
    ``max_concurrent_trials``; ``estimate`` {gpu_hours (one A100), cpu_hours (one thread per
    trial; None where a model has no CPU cost), wall_hours (None without max_concurrent_trials),
    basis}.
    """
    trials = list(plan.trials)
    optuna_n = plan.optuna.num_trials if plan.optuna else 0
    if plan.optuna:
        trials += [TrialConfig.from_dict(plan.optuna.base)] * optuna_n
    gpu = [trial_seconds(t, GPU_EPOCH_S) for t in trials]
    cpu = [trial_seconds(t, CPU_EPOCH_S) for t in trials]
    gpu_hours = sum(s or 0.0 for s in gpu) / 3600
    cpu_hours = None if None in cpu else sum(cpu) / 3600
    res = plan.resources
    wall = None
    if plan.max_concurrent_trials:
        if res.gpu > 0:
            wall = gpu_hours / (plan.max_concurrent_trials * min(res.gpu, 1.0))
        elif cpu_hours is not None:
            wall = cpu_hours / plan.max_concurrent_trials
    return {
        "trials": {
            "pruned": len(plan.pruned),
            "baselines": len(plan.baselines),
            "optuna": optuna_n,
            "total": len(plan.trials) + optuna_n,
        },
        "epochs": sum(trial_epochs(t) for t in trials),
        "resources_per_trial": {"cpu": res.cpu, "gpu": res.gpu},
        "max_concurrent_trials": plan.max_concurrent_trials,
        "estimate": {
            "gpu_hours": round(gpu_hours, 3),
            "cpu_hours": None if cpu_hours is None else round(cpu_hours, 3),
            "wall_hours": None if wall is None else round(wall, 3),
            "basis": "A100 / one CPU thread per trial; see search_spaces.summary",
        },
    }

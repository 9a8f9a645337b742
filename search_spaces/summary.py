"""What a plan will cost: trial counts, epochs and a rough compute estimate (``--dry-run``).

Cost model: each model's registry entry (``trainables.models.ModelInfo``) gives seconds per
epoch on one A100 and, where practical, on one CPU thread, for a reference training-set size;
a trial's time scales linearly with its training-set size (``trainables.datasets.train_size``
minus the validation split) and with its epochs (``trainables.pruning.rounds.total_epochs``: IMP
trials run every round). A flatness measurement costs about ``2 x top_k x power_iters x
subset_size / train_size`` epochs (Hessian-vector products). A model whose entry has no estimate
makes the estimate unknown (None), never 0. Numbers are order-of-magnitude guides, not promises.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trainables import datasets, models
from trainables.config import TrialConfig
from trainables.pruning.rounds import total_epochs

if TYPE_CHECKING:
    from search_spaces.expand import StudyPlan


def train_size(trial: TrialConfig) -> int:
    d = trial.dataset
    full = datasets.train_size(d.name, d.num_samples)
    return max(1, round(full * (1 - d.validation_fraction)))


def trial_seconds(trial: TrialConfig, device: str) -> float | None:
    """Estimated run time of one trial on ``gpu`` (one A100) or ``cpu`` (one thread); None when
    the model's entry has no estimate for that device."""
    info = models.get(trial.model.name)
    seconds = info.gpu_epoch_s if device == "gpu" else info.cpu_epoch_s
    if seconds is None:
        return None
    n = train_size(trial)
    f = trial.flatness
    top_k = models.flatness_top_k(trial.model.name, f.top_k)
    flatness_epochs = len(f.epochs) * 2 * top_k * f.power_iters * f.subset_size / n
    return (total_epochs(trial) + flatness_epochs) * seconds * n / info.reference_train_size


def _hours(seconds: list[float | None]) -> float | None:
    return None if None in seconds else sum(seconds) / 3600  # type: ignore[arg-type]


def plan_summary(plan: StudyPlan) -> dict[str, Any]:
    """Counts, epochs, resources and a compute estimate; plain JSON data.

    Keys: ``trials`` {pruned, baselines, optuna, total}; ``epochs`` (all trials; Optuna trials
    counted with the plan's base configuration); ``resources_per_trial`` {cpu, gpu};
    ``max_concurrent_trials``; ``estimate`` {gpu_hours (one A100), cpu_hours (one thread per
    trial), wall_hours (None without max_concurrent_trials); None where some model has no
    estimate; basis}.
    """
    trials = list(plan.trials)
    optuna_n = plan.optuna.num_trials if plan.optuna else 0
    if plan.optuna:
        trials += [TrialConfig.from_dict(plan.optuna.base)] * optuna_n
    gpu_hours = _hours([trial_seconds(t, "gpu") for t in trials])
    cpu_hours = _hours([trial_seconds(t, "cpu") for t in trials])
    res = plan.resources
    wall = None
    if plan.max_concurrent_trials:
        if res.gpu > 0 and gpu_hours is not None:
            wall = gpu_hours / (plan.max_concurrent_trials * min(res.gpu, 1.0))
        elif res.gpu == 0 and cpu_hours is not None:
            wall = cpu_hours / plan.max_concurrent_trials
    return {
        "trials": {
            "pruned": len(plan.pruned),
            "baselines": len(plan.baselines),
            "optuna": optuna_n,
            "total": len(plan.trials) + optuna_n,
        },
        "epochs": sum(total_epochs(t) for t in trials),
        "resources_per_trial": {"cpu": res.cpu, "gpu": res.gpu},
        "max_concurrent_trials": plan.max_concurrent_trials,
        "estimate": {
            "gpu_hours": None if gpu_hours is None else round(gpu_hours, 3),
            "cpu_hours": None if cpu_hours is None else round(cpu_hours, 3),
            "wall_hours": None if wall is None else round(wall, 3),
            "basis": "A100 / one CPU thread per trial; see search_spaces.summary",
        },
    }

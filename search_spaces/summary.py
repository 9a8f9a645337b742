"""What a plan will cost: trial counts, epochs and a rough compute estimate (``--dry-run``).

Cost model: each model's registry entry (``trainables.models.ModelInfo``) gives seconds per
epoch on one A100 and, where practical, on one CPU thread, for a reference training-set size;
a trial's time scales linearly with its training-set size (``trainables.datasets.train_size``
minus the validation split) and with its epochs (``trainables.pruning.rounds.total_epochs``: IMP
trials run every round). A flatness measurement costs about ``2 x top_k x power_iters x
subset_size / train_size`` epochs (Hessian-vector products). A model whose entry has no estimate
makes the estimate unknown (None), never 0. Numbers are order-of-magnitude guides, not promises.

Wall time (:func:`wall_estimate`) adds what running through Ray costs beyond training, measured
with ``bench/sweep_overhead.py`` on a 2-core machine: starting Ray (:data:`RAY_START_S`), each
trial's worker start, checkpoints and reporting (:data:`TRIAL_OVERHEAD_S`), and the export and
report at the end (:data:`EXPORT_S` plus :data:`EXPORT_PER_TRIAL_S` per trial). Trials are
placed in plan order on the first free slot, as Tune does. A trial with a fraction of a GPU
shares it and is assumed GPU-bound (it takes ``1 / gpu`` times as long): pessimistic for small
models that leave the GPU idle.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from trainables import datasets, models
from trainables.config import TrialConfig
from trainables.pruning.rounds import total_epochs

if TYPE_CHECKING:
    from search_spaces.expand import StudyPlan


def train_size(trial: TrialConfig) -> int:
    d = trial.dataset
    full = datasets.split_sizes(d.name, d.num_samples, d.max_examples)[0]
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


RAY_START_S = 5.0
TRIAL_OVERHEAD_S = 1.5
EXPORT_S = 2.0
EXPORT_PER_TRIAL_S = 0.005


def all_trials(plan: StudyPlan) -> list[TrialConfig]:
    """The plan's trials, Optuna's counted with the plan's base configuration."""
    trials = list(plan.trials)
    if plan.optuna:
        trials += [TrialConfig.from_dict(plan.optuna.base)] * plan.optuna.num_trials
    return trials


def wall_estimate(plan: StudyPlan, concurrency: int) -> dict[str, Any]:
    """Seconds from `prunetune run` to the report with `concurrency` trials at once (one A100
    per GPU trial, one CPU thread per CPU trial); ``seconds`` is None where a model has no
    estimate for the device."""
    device = "gpu" if plan.resources.gpu > 0 else "cpu"
    trials = all_trials(plan)
    share = 1 / min(plan.resources.gpu, 1.0) if device == "gpu" else 1.0
    per_trial = [trial_seconds(t, device) for t in trials]
    out = {"device": device, "concurrency": concurrency, "seconds": None}
    if None in per_trial:
        return out
    free = [0.0] * max(1, concurrency)  # when each slot is free again (a min-heap)
    for seconds in per_trial:
        heapq.heapreplace(free, free[0] + seconds * share + TRIAL_OVERHEAD_S)  # type: ignore[operator]
    export = EXPORT_S + EXPORT_PER_TRIAL_S * len(trials)
    out["seconds"] = round(RAY_START_S + max(free) + export, 1)
    return out


def _hours(seconds: list[float | None]) -> float | None:
    return None if None in seconds else sum(seconds) / 3600  # type: ignore[arg-type]


def plan_summary(plan: StudyPlan) -> dict[str, Any]:
    """Counts, epochs, resources and a compute estimate; plain JSON data.

    Keys: ``trials`` {pruned, baselines, optuna, total}; ``epochs`` (all trials; Optuna trials
    counted with the plan's base configuration); ``resources_per_trial`` {cpu, gpu};
    ``max_concurrent_trials``; ``estimate`` {gpu_hours (one A100), cpu_hours (one thread per
    trial); None where some model has no estimate; basis}. Wall time: :func:`wall_estimate`.
    """
    trials = all_trials(plan)
    optuna_n = plan.optuna.num_trials if plan.optuna else 0
    gpu_hours = _hours([trial_seconds(t, "gpu") for t in trials])
    cpu_hours = _hours([trial_seconds(t, "cpu") for t in trials])
    res = plan.resources
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
            "basis": "A100 / one CPU thread per trial; see search_spaces.summary",
        },
    }

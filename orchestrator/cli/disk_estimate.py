"""The disk a study needs, at its peak and at its end, from its plan alone (``--dry-run``).

A study directory holds, per trial, its final checkpoint, its ``result.json`` (one line per epoch)
and Tune's few small files; then the Parquet tables and ``report.html``. While it runs, the
checkpoint janitor (:mod:`orchestrator.tune.janitor`) deletes each superseded checkpoint at the
next controller step unless a snapshot names it, so a running trial holds at most
:data:`PEAK_CHECKPOINTS_PER_RUNNING_TRIAL` checkpoints. The peak is therefore the end size plus
that many checkpoints (less the final one already counted) for each of the trials running at
once.

A checkpoint's ``state.pt`` (:mod:`trainables.state`) is sized from the model built on the
``meta`` device (no memory, no initialisation): the model's ``state_dict`` (parameters and
buffers), the optimizer's state (Adam: two tensors per parameter; SGD with momentum: one), the
masks (one bool per weight of the weight-prunable layers, or per unit), IMP's saved model copies
(the rewind point, the initialisation), the per-example losses (float16, kept in the state and
written beside it), one pickled record per epoch, and a fixed part (RNG states, the config,
torch's archive). Every file takes whole 4 KiB blocks. The constants below were measured on the
quickstart (``bench/disk_peak.py`` compares this estimate with a sampled run). Estimates are
guides within a factor of about 1.5, not promises.
"""

from __future__ import annotations

import functools
import os
import shutil
from typing import TYPE_CHECKING, Any

from trainables import datasets, models
from trainables.config import TrialConfig
from trainables.pruning.rounds import total_epochs

if TYPE_CHECKING:
    from search_spaces.expand import StudyPlan

# The most checkpoints a running trial holds at once: its newest, the one being written, and the
# ones the stored snapshot and its good copy name (orchestrator.tune.janitor).
PEAK_CHECKPOINTS_PER_RUNNING_TRIAL = 4
BLOCK = 4096  # files take whole blocks of this size (ext4, xfs)
STATE_FIXED_BYTES = 50_000  # RNG and generator states, the config, torch's archive headers
RECORD_STATE_BYTES = 250  # one epoch's record pickled inside state.pt
RESULT_BYTES_PER_EPOCH = 1_300  # one line of result.json
TRIAL_FILES_BYTES = 4 * BLOCK  # the trial's and its checkpoint's directories, params.json and .pkl
TABLE_BYTES_PER_EPOCH = 200  # the Parquet tables, per (trial, epoch)
SNAPSHOT_BYTES_PER_TRIAL = 100_000  # Tune's snapshot and its good copy, per trial
FIXED_BYTES = 5_200_000  # report.html (plotly inlined), spec.yaml, study.json, tuner.pkl


def _blocks(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


@functools.cache
def _model_bytes(model: str, width: int, dataset: str) -> tuple[int, int, int, int]:
    """(state_dict bytes, parameter bytes, weight-mask elements, unit-mask elements) of `model`
    built for `dataset` on the meta device."""
    import torch

    info = datasets.get(dataset)
    with torch.device("meta"):
        net = models.build_model(model, width, info.input_shape, info.num_classes)
    state = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    params = sum(p.numel() * p.element_size() for p in net.parameters())
    weights = sum(m.weight.numel() for m in net.weight_prunable_layers().values())
    units = sum(m.weight.shape[0] for m in net.prunable_layers().values())
    return state, params, weights, units


def checkpoint_bytes(trial: TrialConfig) -> int:
    """Disk taken by the files of the trial's final (largest) checkpoint: ``state.pt``, its
    checksum file and the per-example loss files."""
    state, params, weights, units = _model_bytes(
        trial.model.name, trial.model.width, trial.dataset.name
    )
    t, p = trial.train, trial.pruning
    optimizer = 2 * params if t.optimizer == "adam" else (params if t.momentum > 0 else 0)
    masks = weights if p.granularity == "weight" or p.method == "imp" else units
    copies = 0
    if p.method == "imp":
        copies = (p.imp.rewind == "weight") + (p.imp.control == "sparse_from_start")
    epochs = total_epochs(trial)
    losses, loss_files = 0, 0
    if trial.per_example_loss:
        train_n = datasets.split_sizes(
            trial.dataset.name, trial.dataset.num_samples, trial.dataset.max_examples
        )[0]
        loss_files = (p.imp.rounds + 1) if p.method == "imp" else len(trial.flatness.epochs) + 1
        losses = 2 * train_n * loss_files
    body = state * (1 + copies) + optimizer + masks + losses + STATE_FIXED_BYTES
    body += RECORD_STATE_BYTES * epochs
    return _blocks(body) + BLOCK + loss_files * _blocks(losses // max(1, loss_files) + 128)


def trial_bytes(trial: TrialConfig) -> int:
    """Disk a finished trial keeps: its final checkpoint, its results and Tune's files."""
    results = _blocks(RESULT_BYTES_PER_EPOCH * total_epochs(trial))
    return checkpoint_bytes(trial) + results + TRIAL_FILES_BYTES


def disk_estimate(plan: StudyPlan, concurrency: int) -> dict[str, Any]:
    """``{"checkpoint_mb", "final_mb", "peak_mb", "running_trials"}``: the largest checkpoint, the
    study directory at the end and at its peak with `concurrency` trials running at once."""
    from search_spaces.summary import all_trials

    trials = all_trials(plan)
    largest = max((checkpoint_bytes(t) for t in trials), default=0)
    epochs = sum(total_epochs(t) for t in trials)
    final = sum(trial_bytes(t) for t in trials) + TABLE_BYTES_PER_EPOCH * epochs + FIXED_BYTES
    final += SNAPSHOT_BYTES_PER_TRIAL * len(trials)
    running = min(max(1, concurrency), len(trials))
    peak = final + running * (PEAK_CHECKPOINTS_PER_RUNNING_TRIAL - 1) * largest
    return {
        "checkpoint_mb": round(largest / 1e6, 2),
        "final_mb": round(final / 1e6, 1),
        "peak_mb": round(peak / 1e6, 1),
        "running_trials": running,
    }


def free_bytes(study_uri: str) -> int | None:
    """Free space on the local filesystem the study directory is (or would be) on; None for an
    object store or a path none of whose parents exists."""
    if "://" in study_uri and not study_uri.startswith("file://"):
        return None
    path = os.path.abspath(study_uri.removeprefix("file://"))
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent
    return shutil.disk_usage(path).free

"""The Ray Tune function trainable: a thin shim around :class:`trainables.loop.TrialRunner`.

The only module of ``trainables`` that imports Ray. Contract:

- Tune ``config`` = ``{"trial": TrialConfig.to_dict(), "checkpoint_frequency": int}``, optionally
  with ``"seeds": [..]`` and Tune's ``"__trial_index__"`` (set by ``Repeater``), in which case the
  trial's seed is ``seeds[__trial_index__]``.
- Each epoch: ``tune.report(record, checkpoint=...)`` with exactly the keys of
  ``trainables.records.RECORD`` (identity comes from the config: ``trainables.identity``).
  A checkpoint goes with every ``checkpoint_frequency``-th epoch and always with the last record.
- A retried trial restores from ``tune.get_checkpoint()`` and continues exactly. Epochs after its
  last checkpoint are run and reported again, with the same numbers on CPU; readers keep the last
  row per (trial, epoch).
- Threads = the CPUs Ray assigned; CUDA when Ray assigned a GPU.

Fault injection for tests and cluster drills: when ``$PRUNETUNE_FAULT_DIR`` is set and a file
``<dir>/<trial_key>.epoch<k>`` exists, the first worker that finishes epoch k of that trial claims
the file (an atomic rename) and SIGKILLs its own process before reporting: a real process death.
"""

from __future__ import annotations

import os
import signal
import tempfile
from typing import Any

import ray
import torch
from ray import tune

from trainables.identity import trial_config, trial_key
from trainables.loop import TrialRunner
from trainables.state import save_state

FAULT_DIR_ENV = "PRUNETUNE_FAULT_DIR"


def assigned_resources() -> tuple[str, int]:
    """(device, threads) from the resources Ray assigned to this trial."""
    resources = ray.get_runtime_context().get_assigned_resources()
    threads = max(1, int(resources.get("CPU", 1)))
    device = "cuda" if resources.get("GPU", 0) > 0 and torch.cuda.is_available() else "cpu"
    return device, threads


def train_fn(config: dict[str, Any]) -> None:
    """Ray Tune function trainable (see module docstring)."""
    cfg = trial_config(config)
    frequency = int(config.get("checkpoint_frequency", 1))
    if frequency < 1:
        raise ValueError(f"checkpoint_frequency: must be >= 1, got {frequency}")
    key = trial_key(cfg)
    device, threads = assigned_resources()
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        runner = TrialRunner(cfg, device=device, num_threads=threads)
    else:
        with checkpoint.as_directory() as directory:
            runner = TrialRunner.from_checkpoint(directory, device=device, num_threads=threads)
    for record in runner.run():
        _maybe_inject_fault(key, record["epoch"])
        if runner.finished or (record["epoch"] + 1) % frequency == 0:
            with tempfile.TemporaryDirectory(prefix="prunetune-ckpt-") as directory:
                save_state(runner, directory)
                tune.report(record, checkpoint=tune.Checkpoint.from_directory(directory))
        else:
            tune.report(record)


def _maybe_inject_fault(trial_key: str, epoch: int) -> None:
    fault_dir = os.environ.get(FAULT_DIR_ENV)
    if not fault_dir:
        return
    armed = os.path.join(fault_dir, f"{trial_key}.epoch{epoch}")
    try:
        os.rename(armed, armed + f".fired-{os.getpid()}")  # atomic: exactly one worker claims it
    except OSError:
        return
    os.kill(os.getpid(), signal.SIGKILL)

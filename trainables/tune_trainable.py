"""The Ray Tune function trainable: a thin shim around :class:`trainables.loop.TrialRunner`.

The only module of ``trainables`` that imports Ray. Contract:

- Tune ``config`` = ``{"trial": TrialConfig.to_dict(), "checkpoint_frequency": int}``, optionally
  with ``"seeds": [..]`` and Tune's ``"__trial_index__"`` (set by ``Repeater``), in which case the
  trial's seed is ``seeds[__trial_index__]``.
- Records are gathered and reported in batches: ``tune.report(result, checkpoint=...)`` once the
  config's ``report_batch_s`` seconds have passed since the trial's last report (0 or absent: after
  every epoch), and always with the last record. ``result`` is the newest epoch's record, exactly
  the keys of ``trainables.records.RECORD`` (identity comes from the config:
  ``trainables.identity``), plus, when the batch holds more than one epoch, the earlier epochs'
  records in order under ``trainables.records.BATCH_KEY`` (``orchestrator.tune.tuner.RecordLogger``
  writes each of them as its own line of ``result.json``, so every epoch still has its row).
- A checkpoint goes with a report that completes a ``checkpoint_frequency``-th epoch not yet
  checkpointed (so with ``report_batch_s`` 0, with every ``checkpoint_frequency``-th epoch), and
  always with the last record. A report is one Tune round trip (a few ms on a CPU worker): for
  short epochs, batching them is most of what a sweep's overhead per epoch can lose.
- A retried trial restores from ``tune.get_checkpoint()`` and continues exactly. Epochs after its
  last checkpoint (reported or still gathered when it died) are run and reported again, with the
  same numbers on CPU; readers keep the last row per (trial, epoch).
- A checkpoint that fails its checksum (``trainables.state.CorruptCheckpoint``), or whose
  ``state.pt`` was set aside or deleted, is skipped: its ``state.pt`` is renamed
  ``state.pt.corrupt`` on storage, one line goes to the worker's stderr, and the trial restores
  from its newest good older checkpoint in the same trial directory, else from the start (the
  same numbers either way: the trial is deterministic and readers keep the last row).
- Threads = the CPUs Ray assigned; CUDA when Ray assigned a GPU.

Fault injection for tests and cluster drills: when ``$PRUNETUNE_FAULT_DIR`` is set and a file
``<dir>/<trial_key>.epoch<k>`` exists, the first worker that finishes epoch k of that trial claims
the file (an atomic rename) and SIGKILLs its own process before reporting: a real process death.
"""

from __future__ import annotations

import os
import posixpath
import re
import signal
import sys
import tempfile
import time
from typing import Any

import ray
import torch
from ray import tune

from trainables.identity import trial_config, trial_key
from trainables.loop import TrialRunner
from trainables.records import BATCH_KEY
from trainables.state import SET_ASIDE_SUFFIX, STATE_FILE, CorruptCheckpoint, save_state

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
    batch_s = float(config.get("report_batch_s", 0.0))
    if not batch_s >= 0:
        raise ValueError(f"report_batch_s: must be >= 0, got {batch_s}")
    key = trial_key(cfg)
    device, threads = assigned_resources()
    runner = None
    for checkpoint in _newest_first(tune.get_checkpoint()):
        with checkpoint.as_directory() as directory:
            try:
                runner = TrialRunner.from_checkpoint(directory, device=device, num_threads=threads)
                break
            except CorruptCheckpoint as bad:
                _set_aside(key, checkpoint, bad)
    if runner is None:
        runner = TrialRunner(cfg, device=device, num_threads=threads)
    batch: list[dict[str, Any]] = []
    checkpointed = None  # checkpoint_frequency-th epochs completed at the last checkpoint
    last_report = time.monotonic()
    for record in runner.run():
        _maybe_inject_fault(key, record["epoch"])
        if checkpointed is None:  # the trial's first epoch here: `epoch` epochs came before it
            checkpointed = record["epoch"] // frequency
        batch.append(record)
        if not runner.finished and time.monotonic() - last_report < batch_s:
            continue
        result = {**record, BATCH_KEY: batch[:-1]} if len(batch) > 1 else record
        due = (record["epoch"] + 1) // frequency
        if runner.finished or due > checkpointed:
            with tempfile.TemporaryDirectory(prefix="prunetune-ckpt-") as directory:
                save_state(runner, directory)
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(directory))
            checkpointed = due
        else:
            tune.report(result)
        batch, last_report = [], time.monotonic()


_CHECKPOINT_DIR = re.compile(r"^checkpoint_(\d+)$")


def _newest_first(latest: tune.Checkpoint | None) -> list[tune.Checkpoint]:
    """`latest` (Tune's restore point), then the older checkpoints beside it, newest first."""
    if latest is None:
        return []
    import pyarrow.fs as pafs

    fs, parent = latest.filesystem, posixpath.dirname(latest.path.rstrip("/"))
    latest_name = posixpath.basename(latest.path.rstrip("/"))
    try:
        infos = fs.get_file_info(pafs.FileSelector(parent))
    except OSError:
        return [latest]
    older = sorted(
        (int(m.group(1)), info.path)
        for info in infos
        if (m := _CHECKPOINT_DIR.match(info.base_name)) and info.base_name < latest_name
    )
    return [latest] + [tune.Checkpoint(p, filesystem=fs) for _, p in reversed(older)]


def _set_aside(key: str, checkpoint: tune.Checkpoint, bad: CorruptCheckpoint) -> None:
    """Rename the bad ``state.pt`` on storage, so that it is never read again; say so."""
    stored = posixpath.join(checkpoint.path, STATE_FILE)
    try:
        checkpoint.filesystem.move(stored, stored + SET_ASIDE_SUFFIX)
    except OSError:  # missing (set aside already, or deleted): nothing to rename
        pass
    epoch = "?" if bad.epoch is None else bad.epoch
    print(
        f"prunetune: trial {key}: checkpoint of epoch {epoch} is unusable ({bad.reason}), set "
        f"aside: {stored}; restoring from an older checkpoint or the start",
        file=sys.stderr,
        flush=True,
    )


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

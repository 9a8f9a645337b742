"""The checkpoint: everything a trial needs to continue exactly where it stopped.

A checkpoint is one ``state.pt`` file (``torch.save`` of plain containers of tensors, numbers and
strings, loadable with ``weights_only=True``) holding:

- ``trial``: the resolved ``TrialConfig.to_dict()`` (the runner is rebuilt from it);
- ``loop``: :class:`LoopState`: the next epoch, the status, the records and events so far, and the
  loop's own generators (data order, random targets, augmentation);
- ``model`` / ``optimizer`` / ``scheduler`` / ``masks`` / ``method`` / ``extensions``: their
  ``state_dict()`` (the model's includes BN statistics and the ResNet shortcut masks);
- ``rng``: the global RNG states: torch CPU, every CUDA device when CUDA is initialised, Python's
  ``random`` and NumPy's legacy global generator.

On CPU, restoring from the checkpoint written after epoch k and running on gives records
bit-identical to the uninterrupted run (``epoch_time_s`` aside); tests/trainables/test_resume.py.

Every checkpoint is verifiable: ``state.sha256.json`` beside ``state.pt`` holds the file's SHA-256,
its size and the epoch it was written after. :func:`load_state` checks it before torch reads a
byte, and a file that fails (truncated, overwritten, missing, or unreadable by torch) raises
:class:`CorruptCheckpoint` naming the file and the epoch; :func:`set_aside` renames it to
``state.pt.corrupt`` so that it is never read again. Torch always loads with
``weights_only=True``. A checkpoint without the checksum file (written before it existed) is
trusted only if torch reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 1
STATE_FILE = "state.pt"
CHECKSUM_FILE = "state.sha256.json"  # {"sha256": hex, "bytes": int, "epoch": int}
SET_ASIDE_SUFFIX = ".corrupt"
GENERATORS = ("data_order", "targets", "augment")  # the loop's CPU generators, by purpose


@dataclass
class LoopState:
    """The loop's own mutable state (everything that is not a module's ``state_dict``).

    - ``epoch``: the next epoch to run (0-based; equals ``len(records)``).
    - ``status``: ``running`` | ``done`` | ``diverged``.
    - ``records``: every record yielded so far (``trainables.records`` keys).
    - ``events``: one dict per pruning event: epoch, acc_before, acc_after, instability,
      units_removed {layer: n}.
    - ``generators``: CPU ``torch.Generator`` per purpose in :data:`GENERATORS`.
    """

    generators: dict[str, torch.Generator]
    epoch: int = 0
    status: str = "running"
    records: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status != "running"

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "status": self.status,
            "records": [dict(r) for r in self.records],
            "events": [dict(e) for e in self.events],
            "generators": {k: g.get_state() for k, g in self.generators.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.status = str(state["status"])
        self.records = [dict(r) for r in state["records"]]
        self.events = [dict(e) for e in state["events"]]
        if set(state["generators"]) != set(self.generators):
            raise ValueError(f"checkpoint generators {sorted(state['generators'])} do not match")
        for name, gen_state in state["generators"].items():
            self.generators[name].set_state(gen_state)


def capture_rng() -> dict[str, Any]:
    """Global RNG states: torch CPU, CUDA (if initialised), Python ``random``, NumPy legacy."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng` (CUDA states only when CUDA is available)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))


def _as_tuple(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


def capture_state(runner: Any) -> dict[str, Any]:
    """The full checkpoint payload of a ``trainables.loop.TrialRunner`` (see module docstring)."""
    return {
        "version": FORMAT_VERSION,
        "trial": runner.cfg.to_dict(),
        "loop": runner.loop.state_dict(),
        "model": runner.model.state_dict(),
        "optimizer": runner.optimizer.state_dict(),
        "scheduler": runner.scheduler.state_dict(),
        "masks": runner.masks.state_dict(),
        "method": runner.method.state_dict(),
        "extensions": {name: ext.state_dict() for name, ext in runner.extensions.items()},
        "rng": capture_rng(),
    }


def restore_state(runner: Any, payload: dict[str, Any]) -> None:
    """Load `payload` into a freshly built runner of the same trial config (in place)."""
    if payload.get("version") != FORMAT_VERSION:
        raise ValueError(f"checkpoint format {payload.get('version')!r}, expected {FORMAT_VERSION}")
    if payload["trial"] != runner.cfg.to_dict():
        raise ValueError("checkpoint belongs to a different trial config")
    runner.model.load_state_dict(payload["model"])
    runner.optimizer.load_state_dict(payload["optimizer"])
    runner.scheduler.load_state_dict(payload["scheduler"])
    runner.masks.load_state_dict(payload["masks"])
    runner.method.load_state_dict(payload["method"])
    saved = payload["extensions"]
    if set(saved) != set(runner.extensions):
        raise ValueError(f"checkpoint extensions {sorted(saved)} != {sorted(runner.extensions)}")
    for name, ext in runner.extensions.items():
        ext.load_state_dict(saved[name])
    runner.loop.load_state_dict(payload["loop"])
    restore_rng(payload["rng"])


class CorruptCheckpoint(Exception):
    """A checkpoint that fails its checksum or that torch cannot read (see the module docstring).

    ``path``: the ``state.pt`` file; ``epoch``: the epoch it was written after (None when even
    the checksum file is unreadable); ``reason``: what is wrong, in a few words.
    """

    def __init__(self, path: Path, epoch: int | None, reason: str):
        self.path, self.epoch, self.reason = path, epoch, reason
        super().__init__(f"{path}: {reason}")


def save_state(runner: Any, directory: str | os.PathLike) -> Path:
    """Write ``<directory>/state.pt`` and its checksum file atomically (a crash never leaves a
    torn file); the path of ``state.pt``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STATE_FILE
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".state-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(capture_state(runner), f)
        checksum = {**file_digest(tmp), "epoch": runner.loop.epoch - 1}
        _write_atomic(directory / CHECKSUM_FILE, json.dumps(checksum).encode())
        os.replace(tmp, path)
        for ext in runner.extensions.values():  # side files, e.g. per-example losses (.npy)
            ext.write_files(directory)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def file_digest(path: str | os.PathLike) -> dict[str, Any]:
    """``{"sha256": hex digest, "bytes": size}`` of a file, read in 1 MiB pieces."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return {"sha256": digest.hexdigest(), "bytes": size}


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def checkpoint_epoch(directory: str | os.PathLike) -> int | None:
    """The epoch the checkpoint in `directory` was written after, from its checksum file (None
    when that file is missing or unreadable)."""
    try:
        return int(json.loads((Path(directory) / CHECKSUM_FILE).read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_state(directory: str | os.PathLike) -> None:
    """Raise :class:`CorruptCheckpoint` unless ``state.pt`` in `directory` matches its checksum
    file (a checkpoint without one passes here; :func:`load_state` then tries torch)."""
    directory = Path(directory)
    path, epoch = directory / STATE_FILE, checkpoint_epoch(directory)
    if not path.is_file():
        raise CorruptCheckpoint(path, epoch, "the file is missing")
    try:
        expected = json.loads((directory / CHECKSUM_FILE).read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        raise CorruptCheckpoint(path, epoch, f"its checksum file is unreadable ({exc})") from None
    actual = file_digest(path)
    if not isinstance(expected, dict) or actual != {k: expected.get(k) for k in actual}:
        sizes = f"{actual['bytes']} bytes, {expected.get('bytes')} written"
        raise CorruptCheckpoint(path, epoch, f"checksum mismatch ({sizes})")


def load_state(directory: str | os.PathLike) -> dict[str, Any]:
    """Read the payload written by :func:`save_state` after :func:`check_state`
    (``weights_only=True``, tensors on CPU). Raises :class:`CorruptCheckpoint`."""
    check_state(directory)
    path = Path(directory) / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # bytes that are no checkpoint fail in many ways (IndexError too)
        reason = " ".join(str(exc).split()[:12]) or type(exc).__name__
        epoch = checkpoint_epoch(directory)
        raise CorruptCheckpoint(path, epoch, f"torch cannot read it: {reason}") from None


def set_aside(path: str | os.PathLike) -> Path:
    """Rename a bad ``state.pt`` to ``state.pt.corrupt`` (``.corrupt.1``, ... if taken)."""
    path = Path(path)
    target, n = path.with_name(path.name + SET_ASIDE_SUFFIX), 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{SET_ASIDE_SUFFIX}.{n}")
    os.replace(path, target)
    return target

"""Per-example training loss, stored compactly for Jin et al.'s "top-improved examples" analysis.

``per_example_loss`` evaluates the model (eval mode, no grad) on every training example against the
labels it trains on (the noisy ones when ``dataset.label_noise_fraction > 0``; the relabelled subset
is ``DataBundle.noisy_mask``) and returns float16 cross-entropies in nats, in training-set order.
The accuracies on the relabelled and clean subsets (``train_acc_noisy`` / ``train_acc_clean``) are
recorded by the loop itself at every evaluation (``trainables.loop``), not here.

Storage: one ``.npy`` (float16 ``[N_train]``) per measurement, named by round and epoch
(:func:`loss_file_name`), inside every checkpoint directory written after it was measured (the
loop extension ``trainables.extensions.PerExampleLossProbe`` keeps the arrays in its checkpointed
state, so the latest checkpoint always holds every file of the trial). The record's ``per_example_loss_file`` is the path relative to the checkpoint
directory, e.g. ``per_example_loss/r03_e00079.npy``. Size: 2 bytes per training example per
measurement (100 kB for CIFAR-10).

When it is measured (``per_example_loss: true``): in IMP trials at the last epoch of every round
(the trained model, before that round's pruning event, as OpenLTH's end of a level); in other
trials at every flatness epoch and at the final epoch. Always in eval mode right after
``acc_before``, before the epoch's event.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.models.base import eval_mode

__all__ = ["per_example_loss", "loss_file_name", "save_loss_file", "LOSS_DIR"]

LOSS_DIR = "per_example_loss"


@torch.no_grad()
def per_example_loss(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> np.ndarray:
    """Eval-mode cross-entropy of each example: x [N, ...], y [N] -> float16 numpy [N] (nats).

    The model's training flags are restored; nothing else is touched.
    """
    with eval_mode(model):
        parts = [
            F.cross_entropy(model(xb).float(), yb, reduction="none")
            for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True)
        ]
    return torch.cat(parts).to(torch.float16).cpu().numpy()


def loss_file_name(epoch: int, imp_round: int | None = None) -> str:
    """Relative path of a measurement's file: ``per_example_loss/[rRR_]eEEEEE.npy``."""
    prefix = "" if imp_round is None else f"r{imp_round:02d}_"
    return f"{LOSS_DIR}/{prefix}e{epoch:05d}.npy"


def save_loss_file(directory: str | os.PathLike, name: str, losses: np.ndarray) -> Path:
    """Write ``losses`` (float16 [N]) to ``directory / name`` atomically; returns the path."""
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".loss-", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.asarray(losses, dtype=np.float16))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path

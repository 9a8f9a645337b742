"""Where a trial really ran and what it trained: the per-trial facts of its records.

The study's driver records its own environment once (``results.tables.environment``); a trial may run on
another node, with another torch or another GPU, so each trial states its own facts on every
record (``trainables.records``: the ``per_trial`` keys ``device`` ... ``n_prunable``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainables.pruning.masks import MaskSet


def device_label(device: torch.device) -> str:
    """``"cpu"``, ``"cuda:<GPU name>"`` (e.g. ``cuda:NVIDIA H200``), or the device type (``mps``).

    The GPU's name rather than its index: the index says nothing once the trial has ended.
    """
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def run_facts(model: nn.Module, masks: MaskSet, device: torch.device) -> dict[str, Any]:
    """The per-trial record keys: ``device``, ``torch_version``, ``threads`` (torch's intra-op
    threads now), ``n_params`` (every parameter of `model`, masked ones included: the size built)
    and ``n_prunable`` (the units `masks` covers: output channels / rows at filter granularity,
    weights at weight granularity and for IMP; the count the ``sparsity`` of weight pruning is a
    fraction of)."""
    return {
        "device": device_label(device),
        "torch_version": str(torch.__version__),  # a plain str: checkpoints load weights-only
        "threads": torch.get_num_threads(),
        "n_params": sum(p.numel() for p in model.parameters()),
        "n_prunable": sum(masks.n_units.values()),
    }

"""On-device augmentation and per-purpose random streams for the training loop.

Both are pure functions of their inputs and a ``torch.Generator``, whose state the loop checkpoints,
so a resumed trial draws exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import hashlib

import torch

AUGMENT_PADDING = 4  # pixels of padding for the random crop (RandomCrop(32, padding=4))


def augment_batch(
    x: torch.Tensor, generator: torch.Generator, fill: torch.Tensor | None = None
) -> torch.Tensor:
    """Random crop with 4-pixel padding, then a random horizontal flip, per example.

    ``x``: ``[B, C, H, W]`` on any device; returns a new tensor of the same shape, dtype and
    device. ``generator`` may live on any device (its draws are moved to ``x.device``); it makes
    three draws per call (row offsets, column offsets, flips, each ``[B]``), so the result is a
    function of ``x`` and the generator state. ``fill``: ``[C]`` value of the padded pixels
    (default 0; pass ``DataBundle.pixel_zero`` to pad with black as the papers' pipelines do).
    """
    if x.dim() != 4:
        raise ValueError(f"augment_batch: expects [B, C, H, W] images, got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    p = AUGMENT_PADDING
    dy = torch.randint(0, 2 * p + 1, (b,), generator=generator, device=generator.device)
    dx = torch.randint(0, 2 * p + 1, (b,), generator=generator, device=generator.device)
    flip = torch.randint(0, 2, (b,), generator=generator, device=generator.device).bool()
    dy, dx, flip = dy.to(x.device), dx.to(x.device), flip.to(x.device)

    padded = x.new_zeros(b, c, h + 2 * p, w + 2 * p)
    if fill is not None:
        padded += fill.to(device=x.device, dtype=x.dtype).view(1, c, 1, 1)
    padded[:, :, p : p + h, p : p + w] = x
    j = torch.arange(w, device=x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # [B, H]
    cols = dx[:, None] + torch.where(flip[:, None], w - 1 - j, j)  # [B, W]: flip the crop
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


def derived_generator(seed: int, purpose: str) -> torch.Generator:
    """A CPU generator seeded from ``(seed, purpose)``: independent streams per purpose."""
    digest = hashlib.sha256(f"prunetune:{purpose}:{seed}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))

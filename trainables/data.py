"""Datasets as tensors on the trial's device.

Every dataset fits in memory: :func:`load_data` returns a :class:`DataBundle` of normalised tensors
that the training loop batches by index (no DataLoader, no worker processes). Everything random
(the validation split, the label noise) comes from generators derived from the trial seed, never
from global RNG state, so a bundle is a pure function of ``(cfg, seed)``. Which datasets exist,
their shapes, files and normalisation statistics: :mod:`trainables.datasets`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trainables import datasets
from trainables.augment import derived_generator
from trainables.config import DatasetConfig, TrialConfig, validate
from trainables.errors import UserError
from trainables.fields import count_of


@dataclass(frozen=True, eq=False)
class DataBundle:
    """A loaded dataset. All tensors live on the requested device.

    - ``x_train``: float32 ``[N_train, *input_shape]``, normalised.
    - ``y_train``: int64 ``[N_train]``, labels after label noise (what the loop trains on).
    - ``y_train_clean``: int64 ``[N_train]``, the original labels.
    - ``noisy_mask``: bool ``[N_train]``, True for the ``ceil(N_train * f)`` relabelled examples
      (including the ~1/C whose drawn label equals the original one).
    - ``x_val``, ``y_val``: float32 ``[N_val, *input_shape]`` / int64 ``[N_val]`` clean labels,
      held out of the training set; None when ``validation_fraction`` is 0.
    - ``x_test``, ``y_test``: float32 ``[N_test, *input_shape]`` / int64 ``[N_test]``.
    - ``num_classes``: C; ``input_shape``: per-example shape, e.g. ``(1, 40)`` or ``(3, 32, 32)``.
    - ``pixel_zero``: float32 ``[C_in]``, the normalised value of a raw 0 (black) pixel, for image
      datasets (None for MNIST-1D). Passing it as ``fill`` to :func:`augment_batch` pads exactly as
      torchvision's ``RandomCrop(padding=4)`` applied before ``Normalize`` does.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    y_train_clean: torch.Tensor
    noisy_mask: torch.Tensor
    x_val: torch.Tensor | None
    y_val: torch.Tensor | None
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    pixel_zero: torch.Tensor | None = None


def data_dir(cfg: DatasetConfig):
    """``cfg.data_dir``, else ``$PRUNETUNE_DATA``, else ``~/.cache/prunetune/data``."""
    return datasets.data_dir(cfg.data_dir)


def load_data(cfg: DatasetConfig, seed: int, device: torch.device | str = "cpu") -> DataBundle:
    """Load ``cfg.name``, hold out the validation split, then apply label noise; deterministic.

    Order: the validation split (``ceil(N * validation_fraction)`` examples chosen by a seeded
    permutation) is removed from the training set first; label noise then relabels
    ``ceil(N_train * label_noise_fraction)`` of the remaining training examples (OpenLTH's
    ``randomize_labels``: a seeded permutation chooses them, new labels are uniform over all C
    classes). Validation and test labels stay clean. Fractions count as the decimal the user
    wrote (``0.07 * 100`` is 7, not 8).
    """
    validate(TrialConfig(dataset=cfg), prefix="dataset.")
    device = torch.device(device)
    info = datasets.get(cfg.name)
    raw = info.load(info, data_dir(cfg), cfg.download, cfg.num_samples)
    x_train, x_test, pixel_zero = _inputs(info, raw.x_train, raw.x_test, device)
    y_clean = _labels(raw.y_train, device)

    n = y_clean.shape[0]
    n_val = count_of(n, cfg.validation_fraction)
    if n_val >= n:
        raise UserError(
            f"dataset.validation_fraction: leaves no training examples ({n_val} of {n} held out), "
            f"got {cfg.validation_fraction}"
        )
    x_val = y_val = None
    if n_val:
        perm = torch.randperm(n, generator=derived_generator(seed, "validation_split"))
        val_idx = perm[:n_val].sort().values.to(device)
        train_idx = perm[n_val:].sort().values.to(device)
        x_val, y_val = x_train[val_idx], y_clean[val_idx]
        x_train, y_clean = x_train[train_idx], y_clean[train_idx]

    y_train, noisy_mask = randomize_labels(
        y_clean, cfg.label_noise_fraction, info.num_classes, derived_generator(seed, "label_noise")
    )
    return DataBundle(
        x_train=x_train,
        y_train=y_train,
        y_train_clean=y_clean,
        noisy_mask=noisy_mask,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=_labels(raw.y_test, device),
        num_classes=info.num_classes,
        input_shape=tuple(x_train.shape[1:]),
        pixel_zero=pixel_zero,
    )


def _inputs(info: datasets.DatasetInfo, train, test, device: torch.device):
    """(x_train, x_test, pixel_zero): float32 tensors; images normalised, channels first."""
    if not info.is_image:  # MNIST-1D: [N, L] standardised floats -> [N, 1, L]
        return (
            torch.from_numpy(np.asarray(train)).to(device=device, dtype=torch.float32).unsqueeze(1),
            torch.from_numpy(np.asarray(test)).to(device=device, dtype=torch.float32).unsqueeze(1),
            None,
        )
    mean_values, std_values = info.normalization["paper"]
    mean = torch.tensor(mean_values, device=device).view(-1, 1, 1)
    std = torch.tensor(std_values, device=device).view(-1, 1, 1)

    def images(data) -> torch.Tensor:  # uint8 [N, H, W] or [N, H, W, C] -> float32 [N, C, H, W]
        x = torch.as_tensor(np.asarray(data)).to(device)
        x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2).contiguous()
        return (x.float() / 255 - mean) / std  # ToTensor then Normalize

    pixel_zero = ((torch.zeros_like(mean) / 255 - mean) / std).flatten()
    return images(train), images(test), pixel_zero


def _labels(values, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values), dtype=torch.int64).to(device)


def randomize_labels(
    labels: torch.Tensor, fraction: float, num_classes: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenLTH's label noise: relabel exactly ``ceil(N * fraction)`` of ``labels [N]`` (int64).

    A permutation drawn from ``generator`` (a CPU generator) picks the examples; their new labels
    are uniform over ``range(num_classes)``, so about 1/C keep their label. Returns the new labels
    ``[N]`` (a copy) and the bool mask ``[N]`` of the relabelled examples, on ``labels.device``.
    """
    n = labels.shape[0]
    k = count_of(n, fraction)
    noisy = labels.clone()
    mask = torch.zeros(n, dtype=torch.bool, device=labels.device)
    if k:
        idx = torch.randperm(n, generator=generator)[:k]
        new = torch.randint(0, num_classes, (k,), generator=generator)
        idx = idx.to(labels.device)
        noisy[idx] = new.to(labels.device)
        mask[idx] = True
    return noisy, mask

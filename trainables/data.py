"""Datasets as tensors on the trial's device.

Every dataset fits in memory: :func:`load_data` returns a :class:`DataBundle` of normalised tensors
that the training loop batches by index (no DataLoader, no worker processes). Everything random
(the validation split, the label noise) comes from generators seeded by the trial seed (or, for
the label noise, by ``dataset.label_noise_seed``), never from global RNG state, so a bundle is a
pure function of ``(cfg, seed)``. Which datasets exist, their shapes, files and normalisation
statistics: :mod:`trainables.datasets`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trainables import datasets
from trainables.augment import derived_generator
from trainables.config import TRIAL_SEED, DatasetConfig, TrialConfig
from trainables.cross_rules import validate
from trainables.errors import UserError
from trainables.value_rules import count_of


@dataclass(frozen=True, eq=False)
class DataBundle:
    """A loaded dataset. All tensors live on the requested device.

    - ``x_train``: float32 ``[N_train, *input_shape]``, normalised.
    - ``y_train``: int64 ``[N_train]``, labels after label noise (what the loop trains on).
    - ``y_train_clean``: int64 ``[N_train]``, the original labels.
    - ``noisy_mask``: bool ``[N_train]``, True for the relabelled examples (including the ~1/C
      whose drawn label equals the original one): ``ceil(N_train * f)`` of them when the noise
      follows the trial's seed; with a fixed ``label_noise_seed`` the ones of the
      ``ceil(N * f)`` drawn over the whole training set that the validation split left in.
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


def load_data(cfg: DatasetConfig, seed: int, device: torch.device | str = "cpu") -> DataBundle:
    """Load ``cfg.name`` (:func:`trainables.datasets.load_arrays`: its files or synthetic data,
    cut to ``max_examples``), hold out the validation split, then apply label noise;
    deterministic.

    The validation split is ``ceil(N * validation_fraction)`` examples chosen by a permutation
    seeded by the trial seed. Label noise relabels a ``label_noise_fraction`` of the training
    examples with labels uniform over all C classes (OpenLTH's ``randomize_labels``):

    - ``label_noise_seed`` -1 (default): ``ceil(N_train * f)`` of the examples left after the
      split, drawn from the trial's seed (:func:`randomize_labels`);
    - ``label_noise_seed`` s >= 0: OpenLTH's draw with ``transformation_seed`` s over the whole
      training set in the dataset's order, before the split (:func:`randomize_labels_openlth`),
      so every trial seed shares the same relabelled examples and labels; the split then holds
      out some of them, with their clean labels.

    Validation and test labels stay clean. Fractions count as the decimal the user wrote
    (``0.07 * 100`` is 7, not 8).
    """
    validate(TrialConfig(dataset=cfg), prefix="dataset.")
    device = torch.device(device)
    info = datasets.get(cfg.name)
    raw = datasets.load_arrays(cfg)
    x_train, x_test, pixel_zero = _inputs(info, cfg.normalization, raw.x_train, raw.x_test, device)
    y_clean = _labels(raw.y_train, device)
    noise = None  # (labels, mask) when drawn before the split
    if cfg.label_noise_seed != TRIAL_SEED:
        noise = randomize_labels_openlth(
            y_clean, cfg.label_noise_fraction, info.num_classes, cfg.label_noise_seed
        )

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
        if noise is not None:
            noise = (noise[0][train_idx], noise[1][train_idx])

    if noise is None:
        generator = derived_generator(seed, "label_noise")
        noise = randomize_labels(y_clean, cfg.label_noise_fraction, info.num_classes, generator)
    y_train, noisy_mask = noise
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


def _inputs(
    info: datasets.DatasetInfo, normalization: str, train, test, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(x_train, x_test, pixel_zero): float32 tensors; images normalised with the statistics of
    choice ``normalization`` (validated: the entry lists it), channels first."""
    stats = info.normalization[normalization]
    if not info.is_image:  # MNIST-1D: [N, L] standardised floats -> [N, 1, L]
        assert stats is None, f"{info.title}: only images are normalised"
        return (
            torch.from_numpy(np.asarray(train)).to(device=device, dtype=torch.float32).unsqueeze(1),
            torch.from_numpy(np.asarray(test)).to(device=device, dtype=torch.float32).unsqueeze(1),
            None,
        )
    mean_values, std_values = stats
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
    idx = new = torch.zeros(0, dtype=torch.int64)
    if k:  # (no draw at all without noise)
        idx = torch.randperm(n, generator=generator)[:k]
        new = torch.randint(0, num_classes, (k,), generator=generator)
    return _relabel(labels, idx, new)


def randomize_labels_openlth(
    labels: torch.Tensor, fraction: float, num_classes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenLTH's label noise with ``transformation_seed`` ``seed``, drawn over ``labels [N]``.

    The i-th of ``k = ceil(N * fraction)`` new labels ``RandomState(seed).randint(C, size=k)``
    goes to the i-th example of ``RandomState(seed + 1).permutation(N)[:k]`` (OpenLTH
    ``datasets/base.py::Dataset.randomize_labels``, seeded by ``datasets/registry.py::get``).
    Same returns as :func:`randomize_labels`; k counts the decimal ``fraction``
    (:func:`~trainables.value_rules.count_of`), as every count here does.
    """
    n = labels.shape[0]
    k = count_of(n, fraction)
    new = np.random.RandomState(seed).randint(num_classes, size=k)
    idx = np.random.RandomState(seed + 1).permutation(n)[:k]
    return _relabel(labels, torch.from_numpy(idx), torch.from_numpy(new))


def _relabel(
    labels: torch.Tensor, idx: torch.Tensor, new: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A copy of ``labels [N]`` with ``new [k]`` at ``idx [k]``, and the bool mask [N] of
    ``idx``; both on ``labels.device``."""
    noisy = labels.clone()
    mask = torch.zeros(labels.shape[0], dtype=torch.bool, device=labels.device)
    at = idx.to(device=labels.device, dtype=torch.int64)
    noisy[at] = new.to(device=labels.device, dtype=torch.int64)
    mask[at] = True
    return noisy, mask

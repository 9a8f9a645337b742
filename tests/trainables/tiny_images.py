"""A stand-in for CIFAR-10 in tests of image models on the CPU, where the real files are absent."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest

from trainables import datasets


@contextlib.contextmanager
def tiny_cifar10(n_train: int = 192, n_test: int = 64, size: int = 8) -> Iterator[None]:
    """While open, ``dataset.name: cifar10`` loads random uint8 images ``[N, size, size, 3]``
    (seeded, the same on every load) with random labels, through the real normalisation."""

    def load(info, root, download, num_samples) -> datasets.Arrays:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (n_train + n_test, size, size, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, n_train + n_test)
        return datasets.Arrays(
            images[:n_train], labels[:n_train], images[n_train:], labels[n_train:]
        )

    fake = dataclasses.replace(datasets.DATASETS["cifar10"], load=load)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(datasets.DATASETS, "cifar10", fake)
        yield

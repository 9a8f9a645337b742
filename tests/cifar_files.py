"""CIFAR files written by hand in torchvision's python-version layout, for tests without a
download: the loader reads them as it reads the real archive."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np

CIFAR10_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def pickle_to(path, obj) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar10(root, per_batch: int, n_test: int, rng) -> dict[str, np.ndarray]:
    """Random images in the python-version layout under ``root/cifar-10-batches-py``: 5 training
    batches of ``per_batch``, test_batch of ``n_test``, batches.meta; rows are
    [R(1024) G(1024) B(1024)] of 32x32 row-major planes. Returns {"data" [N, 3072] uint8,
    "labels" [N]}, training rows first."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    data = rng.integers(0, 256, (5 * per_batch + n_test, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, 5 * per_batch + n_test)
    for i in range(5):
        s = slice(i * per_batch, (i + 1) * per_batch)
        batch = {"batch_label": f"training batch {i + 1} of 5", "data": data[s]}
        pickle_to(folder / f"data_batch_{i + 1}", batch | {"labels": labels[s].tolist()})
    test = {"batch_label": "testing batch 1 of 1", "data": data[5 * per_batch :]}
    pickle_to(folder / "test_batch", test | {"labels": labels[5 * per_batch :].tolist()})
    pickle_to(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_vis": 3072})
    return {"data": data, "labels": labels}


def accept_written_md5s(monkeypatch, cls, folder) -> None:
    """torchvision checks each file against the md5 of the official archive's file; point its
    lists at the md5s of the files the test wrote (the check itself still runs)."""
    monkeypatch.setattr(cls, "train_list", [[f, md5(folder / f)] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[f, md5(folder / f)] for f, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", cls.meta | {"md5": md5(folder / cls.meta["filename"])})

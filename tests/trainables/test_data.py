"""Datasets: MNIST-1D generation and cache, torchvision formats written by hand, split, noise,
augmentation."""

from __future__ import annotations

import dataclasses
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import mnist1d.data
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cifar_files import accept_written_md5s, pickle_to, write_cifar10

from trainables.augment import augment_batch
from trainables.config import DatasetConfig
from trainables.data import load_data
from trainables.datasets import DATASETS
from trainables.errors import UserError

REPO = Path(__file__).resolve().parents[2]

torch.set_num_threads(1)


def _cfg(data_dir: str, **kw) -> DatasetConfig:
    return DatasetConfig(name="mnist1d", data_dir=data_dir, **kw)


def _rows(x: torch.Tensor) -> list[bytes]:
    return [r.numpy().tobytes() for r in x.flatten(1)]


# --- MNIST-1D ------------------------------------------------------------------------------------


def test_mnist1d_default_shapes_and_types(data_dir):
    d = load_data(_cfg(data_dir), seed=0)
    assert d.x_train.shape == (4000, 1, 40) and d.x_test.shape == (1000, 1, 40)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert d.input_shape == (1, 40) and d.num_classes == 10
    assert set(d.y_train.tolist()) == set(range(10))
    assert d.x_val is None and d.y_val is None and d.pixel_zero is None
    assert not d.noisy_mask.any() and torch.equal(d.y_train, d.y_train_clean)


def test_mnist1d_is_the_packages_standard_dataset(tmp_path):
    state = np.random.get_state()
    d = load_data(_cfg(str(tmp_path), num_samples=500), seed=0)
    # load_data leaves the global numpy RNG as it found it
    after = np.random.get_state()
    assert np.array_equal(state[1], after[1]) and state[2] == after[2]
    args = mnist1d.data.get_dataset_args()
    args.num_samples = 500
    ref = mnist1d.data.make_dataset(args)
    assert d.x_train.shape == (400, 1, 40) and d.x_test.shape == (100, 1, 40)
    assert torch.equal(d.x_train[:, 0], torch.from_numpy(ref["x"]).float())
    assert torch.equal(d.y_test, torch.from_numpy(ref["y_test"]))


def test_mnist1d_deterministic(data_dir):
    a = load_data(_cfg(data_dir, validation_fraction=0.1, label_noise_fraction=0.2), seed=3)
    b = load_data(_cfg(data_dir, validation_fraction=0.1, label_noise_fraction=0.2), seed=3)
    for f in dataclasses.fields(a):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        assert torch.equal(va, vb) if isinstance(va, torch.Tensor) else va == vb, f.name


def test_mnist1d_cache_is_reused(tmp_path, monkeypatch):
    cfg = _cfg(str(tmp_path), num_samples=300)
    first = load_data(cfg, seed=0)
    files = os.listdir(tmp_path / "mnist1d")
    assert len(files) == 1 and files[0].endswith(".npz")  # no temporary file left behind
    mtime = os.stat(tmp_path / "mnist1d" / files[0]).st_mtime_ns

    def no_regeneration(*args, **kwargs):
        raise AssertionError("make_dataset called although the cache exists")

    monkeypatch.setattr(mnist1d.data, "make_dataset", no_regeneration)
    second = load_data(cfg, seed=0)
    assert torch.equal(first.x_train, second.x_train) and torch.equal(first.y_test, second.y_test)
    assert os.stat(tmp_path / "mnist1d" / files[0]).st_mtime_ns == mtime
    # another num_samples is another file: generating it hits the patched function
    with pytest.raises(AssertionError, match="make_dataset called"):
        load_data(_cfg(str(tmp_path), num_samples=200), seed=0)


def test_a_cached_mnist1d_loads_without_importing_the_package(tmp_path):
    """The package imports matplotlib and scipy (about a second): a fresh Ray worker's first
    trial must not pay that when the dataset is cached already."""
    load_data(_cfg(str(tmp_path), num_samples=300), seed=0)  # writes the cache
    code = (
        "import sys\n"
        "from trainables.config import DatasetConfig\n"
        "from trainables.data import load_data\n"
        f"d = load_data(DatasetConfig(name='mnist1d', data_dir={str(tmp_path)!r}, "
        "num_samples=300), seed=0)\n"
        "assert d.x_train.shape == (240, 1, 40)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('mnist1d', 'matplotlib', 'scipy')))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_validation_split(data_dir):
    full = load_data(_cfg(data_dir), seed=0)
    d = load_data(_cfg(data_dir, validation_fraction=0.1), seed=0)
    assert d.x_val.shape == (400, 1, 40) and d.x_train.shape == (3600, 1, 40)
    # the split partitions the training set: same examples, no overlap, labels follow their rows
    label_of = dict(zip(_rows(full.x_train), full.y_train.tolist(), strict=True))
    train_rows, val_rows = _rows(d.x_train), _rows(d.x_val)
    assert sorted(train_rows + val_rows) == sorted(label_of)
    assert [label_of[r] for r in val_rows] == d.y_val.tolist()
    assert [label_of[r] for r in train_rows] == d.y_train.tolist()
    assert torch.equal(d.x_test, full.x_test)
    other = load_data(_cfg(data_dir, validation_fraction=0.1), seed=1)
    assert set(_rows(other.x_val)) != set(val_rows)


def test_label_noise_counts_and_semantics(data_dir):
    cfg = _cfg(data_dir, validation_fraction=0.1, label_noise_fraction=0.25)
    d = load_data(cfg, seed=0)
    assert int(d.noisy_mask.sum()) == math.ceil(3600 * 0.25) == 900
    clean = ~d.noisy_mask
    assert torch.equal(d.y_train[clean], d.y_train_clean[clean])
    # uniform over all 10 classes: about 1/10 of the relabelled keep their label
    changed = (d.y_train[d.noisy_mask] != d.y_train_clean[d.noisy_mask]).float().mean()
    assert 0.85 < float(changed) < 0.95
    assert set(d.y_train[d.noisy_mask].tolist()) == set(range(10))
    # validation keeps clean labels: identical to the noise-free load with the same split seed
    no_noise = load_data(dataclasses.replace(cfg, label_noise_fraction=0.0), seed=0)
    assert torch.equal(d.y_val, no_noise.y_val) and torch.equal(d.y_train_clean, no_noise.y_train)
    again = load_data(cfg, seed=0)
    assert torch.equal(again.noisy_mask, d.noisy_mask) and torch.equal(again.y_train, d.y_train)
    other = load_data(cfg, seed=1)
    assert not torch.equal(other.noisy_mask, d.noisy_mask)


def test_label_noise_count_is_exact_for_decimal_fractions(data_dir):
    # 3600 * 0.07 is 252.00000000000003 in floating point; the count is ceil of the decimal, 252
    cfg = _cfg(data_dir, validation_fraction=0.1, label_noise_fraction=0.07)
    assert int(load_data(cfg, seed=0).noisy_mask.sum()) == 252
    full = load_data(_cfg(data_dir, label_noise_fraction=1.0), seed=0)
    assert bool(full.noisy_mask.all())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"label_noise_fraction": 1.5}, "dataset.label_noise_fraction: must be in [0, 1], got 1.5"),
        ({"validation_fraction": 1.0}, "dataset.validation_fraction: must be in [0, 1), got 1.0"),
        ({"num_samples": 5}, "dataset.num_samples: must be >= 10"),
        (
            {"augment": True},
            "dataset.augment: true needs dataset.name cifar10, cifar100 or mnist, got mnist1d",
        ),
        (
            {"name": "svhn"},
            "dataset.name: unknown dataset 'svhn'; choose one of: cifar10, cifar100",
        ),
    ],
)
def test_bad_dataset_config_is_a_user_error(tmp_path, overrides, message):
    with pytest.raises(UserError) as err:
        load_data(dataclasses.replace(_cfg(str(tmp_path)), **overrides), seed=0)
    assert str(err.value).startswith(message)
    assert not (tmp_path / "mnist1d").exists()  # validated before any work


def test_all_problems_reported_at_once(tmp_path):
    cfg = _cfg(str(tmp_path), label_noise_fraction=-0.1, validation_fraction=2.0)
    with pytest.raises(UserError) as err:
        load_data(cfg, seed=0)
    lines = str(err.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "dataset.label_noise_fraction",
        "dataset.validation_fraction",
    ]


def test_registry_lists_every_dataset():
    assert sorted(DATASETS) == ["cifar10", "cifar100", "mnist", "mnist1d"]


# --- torchvision formats, written by hand ----------------------------------------------------------

CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))


def test_cifar10_loader_reads_the_python_batches(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    raw = write_cifar10(tmp_path, per_batch=4, n_test=6, rng=np.random.default_rng(0))
    accept_written_md5s(monkeypatch, CIFAR10, tmp_path / "cifar-10-batches-py")
    d = load_data(DatasetConfig(name="cifar10", data_dir=str(tmp_path)), seed=0)
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_test.shape == (6, 3, 32, 32)
    assert d.num_classes == 10 and d.input_shape == (3, 32, 32)
    assert d.y_train.tolist() == raw["labels"][:20].tolist()
    assert d.y_test.tolist() == raw["labels"][20:].tolist()
    mean, std = (torch.tensor(s).view(3, 1, 1) for s in CIFAR10_STATS)
    pixels = torch.from_numpy(raw["data"]).view(-1, 3, 32, 32).float()
    assert torch.allclose(d.x_train, (pixels[:20] / 255 - mean) / std, atol=1e-6)
    assert torch.allclose(d.x_test, (pixels[20:] / 255 - mean) / std, atol=1e-6)
    assert torch.allclose(d.pixel_zero, -mean.flatten() / std.flatten(), atol=1e-6)


def test_cifar10_corrupted_file_is_one_line_user_error(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    write_cifar10(tmp_path, per_batch=2, n_test=2, rng=np.random.default_rng(1))
    folder = tmp_path / "cifar-10-batches-py"
    accept_written_md5s(monkeypatch, CIFAR10, folder)
    (folder / "data_batch_3").write_bytes(b"truncated")
    with pytest.raises(UserError) as err:
        load_data(DatasetConfig(name="cifar10", data_dir=str(tmp_path)), seed=0)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(
        f"dataset.data_dir: could not load CIFAR-10 from {folder}"
    )


@pytest.mark.parametrize(
    ("name", "folder", "title"),
    [
        ("cifar10", "cifar-10-batches-py", "CIFAR-10"),
        ("cifar100", "cifar-100-python", "CIFAR-100"),
        ("mnist", "MNIST/raw", "MNIST"),
    ],
)
def test_missing_dataset_offline_is_one_line_user_error(tmp_path, name, folder, title):
    with pytest.raises(UserError) as err:
        load_data(DatasetConfig(name=name, data_dir=str(tmp_path)), seed=0)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"dataset.data_dir: {title} not found in {tmp_path / folder}")
    assert "dataset.download: true" in msg


def test_cifar100_loader_reads_train_test_meta(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR100

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(2)
    data = rng.integers(0, 256, (12, 3072), dtype=np.uint8)
    fine, coarse = rng.integers(0, 100, 12), rng.integers(0, 20, 12)
    for fname, s in (("train", slice(0, 8)), ("test", slice(8, 12))):
        entry = {
            "data": data[s],
            "fine_labels": fine[s].tolist(),
            "coarse_labels": coarse[s].tolist(),
        }
        pickle_to(
            folder / fname, entry | {"filenames": [f"{i}.png" for i in range(s.start, s.stop)]}
        )
    pickle_to(
        folder / "meta",
        {"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": []},
    )
    accept_written_md5s(monkeypatch, CIFAR100, folder)
    d = load_data(DatasetConfig(name="cifar100", data_dir=str(tmp_path)), seed=0)
    assert d.num_classes == 100 and d.x_train.shape == (8, 3, 32, 32)
    assert d.y_train.tolist() == fine[:8].tolist() and d.y_test.tolist() == fine[8:].tolist()
    mean = torch.tensor((0.5071, 0.4867, 0.4408)).view(3, 1, 1)
    std = torch.tensor((0.2675, 0.2565, 0.2761)).view(3, 1, 1)
    pixels = torch.from_numpy(data[:8]).view(-1, 3, 32, 32).float()
    assert torch.allclose(d.x_train, (pixels / 255 - mean) / std, atol=1e-6)


def _write_idx(path, array: np.ndarray) -> None:
    """The idx format: magic (0, 0, type 0x08 = ubyte, ndim), big-endian int32 dims, data."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_loader_reads_raw_idx_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (15, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 15, dtype=np.uint8)
    _write_idx(raw / "train-images-idx3-ubyte", images[:10])
    _write_idx(raw / "train-labels-idx1-ubyte", labels[:10])
    _write_idx(raw / "t10k-images-idx3-ubyte", images[10:])
    _write_idx(raw / "t10k-labels-idx1-ubyte", labels[10:])
    cfg = DatasetConfig(name="mnist", data_dir=str(tmp_path), label_noise_fraction=0.5)
    d = load_data(cfg, seed=0)
    assert d.x_train.shape == (10, 1, 28, 28) and d.x_test.shape == (5, 1, 28, 28)
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert d.y_train_clean.tolist() == labels[:10].tolist()
    assert int(d.noisy_mask.sum()) == 5
    expected = (torch.from_numpy(images[10:]).float().unsqueeze(1) / 255 - 0.1307) / 0.3081
    assert torch.allclose(d.x_test, expected, atol=1e-6)


def test_data_dir_defaults_to_env_then_home(tmp_path, monkeypatch):
    from trainables.datasets import data_dir

    monkeypatch.setenv("PRUNETUNE_DATA", str(tmp_path / "env"))
    assert data_dir(DatasetConfig().data_dir) == tmp_path / "env"
    assert data_dir(DatasetConfig(data_dir=str(tmp_path / "cfg")).data_dir) == tmp_path / "cfg"
    monkeypatch.delenv("PRUNETUNE_DATA")
    assert str(data_dir(DatasetConfig().data_dir)) == os.path.expanduser("~/.cache/prunetune/data")


# --- augmentation -----------------------------------------------------------------------------------


def _reference_augment(x, dy, dx, flip, fill):
    """One example at a time: pad with `fill`, crop at (dy, dx), flip the crop."""
    out = []
    for i in range(x.shape[0]):
        c, h, w = x[i].shape
        padded = fill.view(-1, 1, 1).expand(c, h + 8, w + 8).clone()
        padded[:, 4 : 4 + h, 4 : 4 + w] = x[i]
        assert fill.abs().sum() > 0 or torch.equal(padded, F.pad(x[i], (4, 4, 4, 4)))
        crop = padded[:, dy[i] : dy[i] + x.shape[2], dx[i] : dx[i] + x.shape[3]]
        out.append(crop.flip(-1) if flip[i] else crop)
    return torch.stack(out)


@pytest.mark.parametrize("with_fill", [False, True])
def test_augment_batch_matches_per_example_crop_and_flip(with_fill):
    x = torch.randn(64, 3, 8, 10)
    fill = torch.tensor([-1.5, 0.25, 2.0]) if with_fill else torch.zeros(3)
    g = torch.Generator().manual_seed(7)
    state = g.get_state()
    out = augment_batch(x, g, fill if with_fill else None)
    g.set_state(state)
    dy, dx = torch.randint(0, 9, (64,), generator=g), torch.randint(0, 9, (64,), generator=g)
    flip = torch.randint(0, 2, (64,), generator=g).bool()
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, _reference_augment(x, dy, dx, flip, fill))
    # it really crops and flips: both flip states occur, and shifted crops bring in padding
    assert 0 < int(flip.sum()) < 64 and bool(((dy != 4) | (dx != 4)).any())
    assert not torch.equal(out, x)


def test_augment_batch_deterministic_given_generator_state():
    x = torch.randn(16, 3, 32, 32)
    a = augment_batch(x, torch.Generator().manual_seed(1))
    b = augment_batch(x, torch.Generator().manual_seed(1))
    c = augment_batch(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match=r"expects \[B, C, H, W\]"):
        augment_batch(torch.randn(4, 1, 40), torch.Generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bundle_and_augmentation_match_cpu(data_dir):
    cfg = _cfg(data_dir, validation_fraction=0.1, label_noise_fraction=0.2)
    cpu, gpu = load_data(cfg, seed=0), load_data(cfg, seed=0, device="cuda")
    assert gpu.x_train.is_cuda and gpu.noisy_mask.is_cuda
    assert torch.equal(cpu.x_train, gpu.x_train.cpu()) and torch.equal(
        cpu.y_train, gpu.y_train.cpu()
    )
    x = torch.randn(32, 3, 32, 32)
    a = augment_batch(x, torch.Generator().manual_seed(0))
    b = augment_batch(x.cuda(), torch.Generator().manual_seed(0))
    assert torch.equal(a, b.cpu())

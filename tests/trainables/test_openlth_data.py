"""OpenLTH's CIFAR-10 pipeline (Jin et al. 2022): ImageNet normalisation, the fixed-seed label
noise, and the augmentation's distribution, each against the official rule written out here."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from cifar_files import accept_written_md5s, write_cifar10

from trainables.augment import AUGMENT_PADDING, augment_batch
from trainables.config import DatasetConfig, TrialConfig
from trainables.cross_rules import validate
from trainables.data import load_data
from trainables.errors import UserError
from trainables.identity import trial_key
from trainables.value_rules import count_of

torch.set_num_threads(1)


# --- the official rules ---------------------------------------------------------------------------

# facebookresearch/open_lth, datasets/cifar10.py::Dataset.__init__: Normalize(mean, std).
OPENLTH_CIFAR10_MEAN = (0.485, 0.456, 0.406)
OPENLTH_CIFAR10_STD = (0.229, 0.224, 0.225)


def _openlth_noisy_labels(labels: np.ndarray, seed: int, fraction: float, num_classes: int):
    """facebookresearch/open_lth, datasets/base.py::Dataset.randomize_labels (seed as
    datasets/registry.py::get passes it): ceil(N * fraction) labels drawn by
    RandomState(seed).randint(num_classes), given in order to the first examples of
    RandomState(seed + 1).permutation(N). Returns (labels, indices of the relabelled)."""
    n = len(labels)
    k = int(np.ceil(n * fraction))
    new_labels = np.random.RandomState(seed=seed).randint(num_classes, size=k)
    chosen = np.random.RandomState(seed=seed + 1).permutation(n)[:k]
    out = labels.copy()
    out[chosen] = new_labels
    return out, chosen


def _openlth_augment(image: torch.Tensor, flip: bool, top: int, left: int, fill: torch.Tensor):
    """facebookresearch/open_lth, datasets/cifar10.py::Dataset.get_train_set: torchvision's
    RandomHorizontalFlip() then RandomCrop(32, 4) on the image: flip the whole image, pad 4
    pixels of `fill` on every side, crop at (top, left), each offset uniform in 0..8
    (RandomCrop.get_params: randint(0, padded - 32 + 1))."""
    c, h, w = image.shape
    p = AUGMENT_PADDING
    flipped = image.flip(-1) if flip else image
    padded = fill.view(c, 1, 1).expand(c, h + 2 * p, w + 2 * p).clone()
    padded[:, p : p + h, p : p + w] = flipped
    return padded[:, top : top + h, left : left + w]


# --- normalisation --------------------------------------------------------------------------------


def test_imagenet_normalization_is_openlths(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    raw = write_cifar10(tmp_path, per_batch=2, n_test=3, rng=np.random.default_rng(4))
    accept_written_md5s(monkeypatch, CIFAR10, tmp_path / "cifar-10-batches-py")
    cfg = DatasetConfig(name="cifar10", data_dir=str(tmp_path), normalization="imagenet")
    d = load_data(cfg, seed=0)
    mean = torch.tensor(OPENLTH_CIFAR10_MEAN).view(3, 1, 1)
    std = torch.tensor(OPENLTH_CIFAR10_STD).view(3, 1, 1)
    pixels = torch.from_numpy(raw["data"]).view(-1, 3, 32, 32).float() / 255  # ToTensor
    assert torch.allclose(d.x_train, (pixels[:10] - mean) / std, atol=1e-6)
    assert torch.allclose(d.x_test, (pixels[10:] - mean) / std, atol=1e-6)
    assert torch.allclose(d.pixel_zero, -mean.flatten() / std.flatten(), atol=1e-6)  # pad black
    paper = load_data(dataclasses.replace(cfg, normalization="paper"), seed=0)
    assert not torch.allclose(paper.x_train, d.x_train, atol=1e-3)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("mnist", "dataset.normalization: imagenet needs dataset.name cifar10 or cifar100, got mnist"),
        ("mnist1d", "dataset.normalization: imagenet needs dataset.name cifar10 or cifar100, got mnist1d"),
    ],
)  # fmt: skip
def test_a_normalization_the_dataset_lacks_is_one_line(tmp_path, name, message):
    cfg = DatasetConfig(name=name, data_dir=str(tmp_path), normalization="imagenet")
    with pytest.raises(UserError) as err:
        load_data(cfg, seed=0)
    assert str(err.value) == message
    with pytest.raises(UserError) as err:  # an unknown name is reported once, by its own rule
        validate(TrialConfig(dataset=dataclasses.replace(cfg, name="svhn")))
    assert str(err.value).splitlines() == [
        "dataset.name: unknown dataset 'svhn'; choose one of: cifar10, cifar100, mnist, mnist1d"
    ]


# --- label noise ----------------------------------------------------------------------------------


def test_new_dataset_fields_keep_existing_trial_keys():
    plain = TrialConfig.from_dict({"dataset": {"label_noise_fraction": 0.2}})
    same = TrialConfig.from_dict(
        {"dataset": {"label_noise_fraction": 0.2, "label_noise_seed": -1, "normalization": "paper"}}
    )
    assert trial_key(same) == trial_key(plain)
    fixed = dataclasses.replace(
        plain, dataset=dataclasses.replace(plain.dataset, label_noise_seed=0)
    )
    assert trial_key(fixed) != trial_key(plain)


@pytest.mark.parametrize("seed", [-2, 2**32 - 1])
def test_label_noise_seed_range(seed):
    with pytest.raises(UserError) as err:
        validate(
            TrialConfig(dataset=DatasetConfig(label_noise_fraction=0.1, label_noise_seed=seed))
        )
    assert str(err.value) == (
        f"dataset.label_noise_seed: must be -1 (the trial's seed) or in [0, 4294967294], got {seed}"
    )


def test_fixed_noise_seed_is_openlths_draw_shared_by_every_seed(data_dir):
    cfg = DatasetConfig(data_dir=data_dir, label_noise_fraction=0.3, label_noise_seed=5)
    clean = load_data(
        dataclasses.replace(cfg, label_noise_fraction=0.0, label_noise_seed=-1), seed=0
    ).y_train.numpy()
    expected, chosen = _openlth_noisy_labels(clean, 5, 0.3, 10)
    for trial_seed in (0, 3):
        d = load_data(cfg, seed=trial_seed)
        assert d.y_train.tolist() == expected.tolist()
        assert sorted(np.flatnonzero(d.noisy_mask.numpy()).tolist()) == sorted(chosen.tolist())
    other = load_data(dataclasses.replace(cfg, label_noise_seed=6), seed=0)
    assert other.y_train.tolist() != expected.tolist()


def test_fixed_noise_seed_draws_over_the_whole_set_before_the_split(data_dir):
    """With a validation split the relabelled examples are still OpenLTH's (by identity); the
    split holds some of them out, with their clean labels."""
    cfg = DatasetConfig(data_dir=data_dir, label_noise_fraction=0.3, label_noise_seed=0)
    full = load_data(
        dataclasses.replace(cfg, label_noise_fraction=0.0, label_noise_seed=-1), seed=0
    )
    expected, chosen = _openlth_noisy_labels(full.y_train.numpy(), 0, 0.3, 10)
    row_of = {r.numpy().tobytes(): i for i, r in enumerate(full.x_train)}
    relabelled = set(chosen.tolist())
    for trial_seed in (0, 1):
        d = load_data(dataclasses.replace(cfg, validation_fraction=0.2), seed=trial_seed)
        train = [row_of[r.numpy().tobytes()] for r in d.x_train]
        val = [row_of[r.numpy().tobytes()] for r in d.x_val]
        assert d.y_train.tolist() == expected[train].tolist()
        assert d.noisy_mask.tolist() == [i in relabelled for i in train]
        assert d.y_val.tolist() == full.y_train[val].tolist()  # clean
        assert 0 < len(relabelled & set(val)) < len(relabelled)


def test_decimal_count_equals_openlths_float_count_for_the_preset():
    """k = ceil(N * f): OpenLTH's float product and our decimal agree on CIFAR-10's 50,000 at
    the noise levels of jin2022-imp (they differ only where N * f is an integer in decimal but
    lands above it in binary, e.g. 0.07 x 3,600)."""
    for f in (0.1, 0.2, 0.4):
        assert count_of(50_000, f) == int(np.ceil(50_000 * f))
    assert count_of(3_600, 0.07) == 252 != int(np.ceil(3_600 * 0.07))


# --- augmentation ---------------------------------------------------------------------------------


def test_crop_then_flip_has_openlths_flip_then_crop_distribution():
    """Ours crops at (dy, dx) then flips the crop; OpenLTH flips then crops at (top, left). With
    offsets uniform on 0..2p and a fair flip, the map (flip, dy, dx) -> (flip, dy, 2p - dx if flip
    else dx) is a bijection of the outcomes that gives identical images, so the two augmentations
    have the same distribution. Checked on every draw of a batch, and the bijection over all 162
    outcomes."""
    p = AUGMENT_PADDING
    x = torch.randn(256, 3, 32, 32)
    fill = torch.tensor([-2.0, 0.5, 1.0])
    g = torch.Generator().manual_seed(11)
    state = g.get_state()
    out = augment_batch(x, g, fill)
    g.set_state(state)  # replay augment_batch's draws: row offsets, column offsets, flips
    dy, dx = (torch.randint(0, 2 * p + 1, (256,), generator=g) for _ in range(2))
    flip = torch.randint(0, 2, (256,), generator=g).bool()
    for i in range(256):
        left = 2 * p - int(dx[i]) if flip[i] else int(dx[i])
        assert torch.equal(out[i], _openlth_augment(x[i], bool(flip[i]), int(dy[i]), left, fill))
    outcomes = {(f, t, (2 * p - s) if f else s) for f in (0, 1) for t in range(9) for s in range(9)}
    assert len(outcomes) == 2 * (2 * p + 1) ** 2
    assert bool(flip.any()) and not bool(flip.all()) and bool((dx != p).any())

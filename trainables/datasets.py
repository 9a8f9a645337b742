"""The dataset registry: one :class:`DatasetInfo` entry per dataset, with its loader.

Importing this module is cheap (stdlib only): a loader imports numpy, mnist1d or torchvision
when it is called. A loader reads the raw data into numpy arrays; ``trainables.data`` normalises
them, holds out the validation split and applies the label noise. Adding a dataset touches its
entry here (and a loader, when none fits), nothing else.

Normalisation choices (``dataset.normalization``): ``paper`` is each dataset's statistics as the
papers' pipelines use them (CIFAR-10/100: Bartoldson et al.'s official ``utils.py``; MNIST:
OpenLTH ``datasets/mnist.py``); ``imagenet`` is the ImageNet statistics OpenLTH normalises CIFAR-10
with (``datasets/cifar10.py``), which Jin et al. inherit. MNIST-1D comes standardised by its
generator: its only choice, ``paper``, leaves it as generated. A choice a dataset's entry does not
list is refused when the config is validated.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import random
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.errors import UserError

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
Stats = tuple[tuple[float, ...], tuple[float, ...]]


@dataclass(frozen=True)
class Arrays:
    """A loader's output: ``x`` uint8 ``[N, H, W]`` / ``[N, H, W, C]`` (images) or float
    ``[N, L]`` (MNIST-1D), ``y`` int ``[N]``, for the training and test sets."""

    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any


Loader = Callable[["DatasetInfo", Path, bool, int], Arrays]


@dataclass(frozen=True)
class DatasetInfo:
    """One registered dataset: facts for validation and planning, and how to load it."""

    title: str  # as users know it, for messages
    input_shape: tuple[int, ...]  # per example, channels first
    num_classes: int
    train_size: int  # training examples before the validation split (MNIST-1D: per 5,000)
    load: Loader
    normalization: dict[str, Stats | None]  # choice -> (mean, std) per channel; None = as loaded
    folder: str = ""  # torchvision: where it looks, relative to the data directory
    files: tuple[str, ...] = ()  # torchvision: what must be in `folder`
    provide: str = ""  # torchvision: how to provide the files by hand
    reader: Callable[[], type] | None = None  # torchvision: its dataset class, imported on call

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3


def _load_mnist1d(info: DatasetInfo, root: Path, download: bool, num_samples: int) -> Arrays:
    """The mnist1d package's standard dataset (``get_dataset_args()`` with ``num_samples``; its
    80/20 split) from ``make_dataset``, which generates locally (``get_dataset`` would download).
    Cached in ``root/mnist1d/`` under a name hashing the arguments and package version; written
    atomically so concurrent trials never read a partial file."""
    import mnist1d.data
    import numpy as np

    args = mnist1d.data.get_dataset_args()
    args.num_samples = num_samples
    key = {k: v for k, v in vars(args).items() if k != "url"}
    key["version"] = importlib.metadata.version("mnist1d")
    digest = hashlib.sha256(repr(sorted(key.items())).encode()).hexdigest()[:12]
    path = root / "mnist1d" / f"mnist1d_n{num_samples}_{digest}.npz"
    names = ("x", "y", "x_test", "y_test")
    if path.exists():
        try:
            with np.load(path) as f:
                return Arrays(*(f[k] for k in names))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # unreadable (e.g. truncated by hand): regenerate and replace it
    # make_dataset seeds and draws from the global numpy/random RNGs: leave them as they were.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        dataset = mnist1d.data.make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    arrays = {k: np.ascontiguousarray(dataset[k]) for k in names}
    _atomic_savez(path, arrays)
    return Arrays(*(arrays[k] for k in names))


def _atomic_savez(path: Path, arrays: dict[str, Any]) -> None:
    import numpy as np

    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=".tmp-", suffix=".npz", delete=False
        ) as f:
            tmp = f.name
            np.savez(f, **arrays)
        os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
    except OSError as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise UserError(f"dataset.data_dir: cannot write the MNIST-1D cache {path}: {e}") from None


def _load_torchvision(info: DatasetInfo, root: Path, download: bool, num_samples: int) -> Arrays:
    """torchvision's dataset class for ``info``, both splits, as uint8 arrays."""
    dataset_cls = info.reader()
    try:
        train = dataset_cls(str(root), train=True, download=download)
        test = dataset_cls(str(root), train=False, download=download)
    except (RuntimeError, OSError) as e:
        raise UserError(missing_message(info, root, download, e)) from None
    return Arrays(
        _array(train.data), _array(train.targets), _array(test.data), _array(test.targets)
    )


def _mnist_class() -> type:
    from torchvision.datasets import MNIST

    return MNIST


def _cifar10_class() -> type:
    from torchvision.datasets import CIFAR10

    return CIFAR10


def _cifar100_class() -> type:
    from torchvision.datasets import CIFAR100

    return CIFAR100


def _array(values: Any) -> Any:
    import numpy as np

    return values.numpy() if hasattr(values, "numpy") else np.asarray(values)


def missing_message(info: DatasetInfo, root: Path, download: bool, error: Exception | None) -> str:
    """The one line that says why ``info`` could not be loaded from ``root``."""
    where = root / info.folder
    missing = [f for f in info.files if not (where / f).is_file()]
    if missing and not download:
        problem = f"{info.title} not found in {where} (missing {missing[0]})"
    else:
        detail = " ".join(str(error).split()) if error else "unreadable"
        problem = f"could not load {info.title} from {where} ({type(error).__name__}: {detail})"
    return (
        f"dataset.data_dir: {problem}; download it there (set dataset.download: true on a "
        f"machine with internet) or {info.provide}"
    )


_CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
_MNIST_FILES = tuple(
    f"{s}-{k}-idx{d}-ubyte" for s in ("train", "t10k") for k, d in (("images", 3), ("labels", 1))
)
_ARCHIVE = "copy the extracted folder of the python-version archive ({}) there"

DATASETS: dict[str, DatasetInfo] = {
    "mnist1d": DatasetInfo("MNIST-1D", (1, 40), 10, 4_000, _load_mnist1d, {"paper": None}),
    "mnist": DatasetInfo(
        "MNIST",
        (1, 28, 28),
        10,
        60_000,
        _load_torchvision,
        {"paper": ((0.1307,), (0.3081,))},
        "MNIST/raw",
        _MNIST_FILES,
        "copy the four uncompressed idx files (train-images-idx3-ubyte, ...) there",
        _mnist_class,
    ),
    "cifar10": DatasetInfo(
        "CIFAR-10",
        (3, 32, 32),
        10,
        50_000,
        _load_torchvision,
        {"paper": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)), "imagenet": IMAGENET},
        "cifar-10-batches-py",
        _CIFAR_FILES,
        _ARCHIVE.format("cifar-10-python.tar.gz"),
        _cifar10_class,
    ),
    "cifar100": DatasetInfo(
        "CIFAR-100",
        (3, 32, 32),
        100,
        50_000,
        _load_torchvision,
        {"paper": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)), "imagenet": IMAGENET},
        "cifar-100-python",
        ("train", "test", "meta"),
        _ARCHIVE.format("cifar-100-python.tar.gz"),
        _cifar100_class,
    ),
}
NAMES: tuple[str, ...] = tuple(sorted(DATASETS))
IMAGE_DATASETS: tuple[str, ...] = tuple(n for n in NAMES if DATASETS[n].is_image)


def get(name: str) -> DatasetInfo:
    """The entry registered as ``name``; UserError listing the valid names on a miss."""
    try:
        return DATASETS[name]
    except KeyError:
        valid = ", ".join(NAMES)
        raise UserError(f"dataset.name: unknown dataset {name!r}; choose one of: {valid}") from None


def with_normalization(choice: str) -> tuple[str, ...]:
    """The datasets whose entry lists normalisation ``choice`` (``paper``, ``imagenet``)."""
    return tuple(n for n in NAMES if choice in DATASETS[n].normalization)


def train_size(name: str, num_samples: int) -> int:
    """Training examples before the validation split (MNIST-1D: 80% of ``num_samples``)."""
    if name == "mnist1d":
        return round(num_samples * 0.8)
    return get(name).train_size


def data_dir(configured: str) -> Path:
    """``dataset.data_dir``, else ``$PRUNETUNE_DATA``, else ``~/.cache/prunetune/data``."""
    path = configured or os.environ.get("PRUNETUNE_DATA") or "~/.cache/prunetune/data"
    return Path(path).expanduser()

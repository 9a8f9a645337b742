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

import importlib.metadata
import os
import random
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainables.errors import UserError

if TYPE_CHECKING:
    from trainables.config import DatasetConfig

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
    test_size: int = 10_000  # test examples (MNIST-1D: per 5,000)

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3


def _load_mnist1d(info: DatasetInfo, root: Path, download: bool, num_samples: int) -> Arrays:
    """The mnist1d package's standard dataset (``get_dataset_args()`` with ``num_samples``; its
    80/20 split) from ``make_dataset``, which generates locally (``get_dataset`` would download).
    Cached in ``root/mnist1d/`` under a name holding ``num_samples`` and the package's version
    (its default arguments are fixed per version); written atomically so concurrent trials never
    read a partial file. A cached dataset loads without importing the package, which imports
    matplotlib and scipy: about 1.2 s of each fresh Ray worker's first trial."""
    import numpy as np

    version = importlib.metadata.version("mnist1d")
    path = root / "mnist1d" / f"mnist1d_n{num_samples}_v{version}.npz"
    names = ("x", "y", "x_test", "y_test")
    if path.exists():
        try:
            with np.load(path) as f:
                return Arrays(*(f[k] for k in names))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # unreadable (e.g. truncated by hand): regenerate and replace it
    import mnist1d.data

    args = mnist1d.data.get_dataset_args()
    args.num_samples = num_samples
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


def missing_files(info: DatasetInfo, root: Path) -> list[str]:
    """The files of ``info`` that are not in ``root/info.folder`` (none for MNIST-1D)."""
    where = root / info.folder
    return [f for f in info.files if not (where / f).is_file()]


def missing_message(info: DatasetInfo, root: Path, download: bool, error: Exception | None) -> str:
    """The one line that says why ``info`` could not be loaded from ``root``."""
    where = root / info.folder
    missing = missing_files(info, root)
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
    "mnist1d": DatasetInfo(
        "MNIST-1D", (1, 40), 10, 4_000, _load_mnist1d, {"paper": None}, test_size=1_000
    ),
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
    """Training examples before the validation split. MNIST-1D: mnist1d's ``make_dataset``
    draws ``num_samples // 10`` examples per class and trains on the first 80% of them."""
    if name == "mnist1d":
        return int(num_samples // 10 * 10 * 0.8)
    return get(name).train_size


def split_sizes(name: str, num_samples: int, max_examples: int) -> tuple[int, int]:
    """(training examples before the validation split, test examples) of dataset ``name``, each
    cut to ``max_examples`` when that is > 0 (``dataset.max_examples``)."""
    n_train = train_size(name, num_samples)
    n_test = num_samples // 10 * 10 - n_train if name == "mnist1d" else get(name).test_size
    if max_examples:
        return min(n_train, max_examples), min(n_test, max_examples)
    return n_train, n_test


# The fields split_rule relates, in its arguments' order (a rule of trainables.cross_rules).
SPLIT_PATHS = tuple(
    f"dataset.{name}" for name in ("validation_fraction", "name", "num_samples", "max_examples")
)


def split_rule(
    fraction_: float, name: str, num_samples: int, max_examples: int
) -> list[tuple[str, str]]:
    """The rule of ``dataset.validation_fraction`` against the training set's size: the split
    must leave at least one training example (the held-out count is ``ceil(N * fraction)``,
    :func:`~trainables.value_rules.count_of`). An unknown name, or a fraction outside [0, 1), is
    reported by that field's own rule."""
    from trainables.problems import show
    from trainables.value_rules import count_of

    if name not in DATASETS or not 0 <= fraction_ < 1:
        return []
    n = split_sizes(name, num_samples, max_examples)[0]
    n_val = count_of(n, fraction_)
    if n_val < n:
        return []
    rule = f"leaves no training examples ({n_val} of the {n} of {get(name).title} held out)"
    return [("", f"{rule}, got {show(fraction_)}")]


def data_dir(configured: str) -> Path:
    """``dataset.data_dir``, else ``$PRUNETUNE_DATA``, else ``~/.cache/prunetune/data``."""
    path = configured or os.environ.get("PRUNETUNE_DATA") or "~/.cache/prunetune/data"
    return Path(path).expanduser()


# --- what a trial loads, and whether it can --------------------------------------------------------

SYNTHETIC_SEED = 0  # every synthetic dataset is the same draw, whatever the trial's seed


def synthetic(info: DatasetInfo, n_train: int, n_test: int) -> Arrays:
    """Stand-in data of ``info``'s shape and classes, the same on every call (``dataset.synthetic``).

    Like torchvision's ``FakeData``, but learnable, so that training moves the accuracy: labels
    are uniform over the classes, and each input is its class's fixed random pattern plus noise.
    Images are uint8 ``[N, H, W]`` (one channel) or ``[N, H, W, C]``; MNIST-1D is float32
    ``[N, L]``, as the real loaders return them.
    """
    import numpy as np

    rng = np.random.default_rng(SYNTHETIC_SEED)
    n = n_train + n_test
    y = rng.integers(0, info.num_classes, n)
    channels, *size = info.input_shape
    shape = (*size, channels) if info.is_image and channels > 1 else tuple(size)
    if info.is_image:
        patterns = rng.integers(0, 128, (info.num_classes, *shape))
        x = np.clip(patterns[y] + 64 + rng.normal(0, 32, (n, *shape)), 0, 255).astype(np.uint8)
    else:
        patterns = rng.normal(0, 1, (info.num_classes, *shape))
        x = (patterns[y] + rng.normal(0, 1, (n, *shape))).astype(np.float32)
    return Arrays(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def load_arrays(cfg: DatasetConfig) -> Arrays:
    """The raw arrays a trial with dataset section ``cfg`` trains and tests on: the dataset's
    loader (or :func:`synthetic` data), then the first ``cfg.max_examples`` of each split."""
    info = get(cfg.name)
    n_train, n_test = split_sizes(cfg.name, cfg.num_samples, cfg.max_examples)
    if cfg.synthetic:
        return synthetic(info, n_train, n_test)
    raw = info.load(info, data_dir(cfg.data_dir), cfg.download, cfg.num_samples)
    if not cfg.max_examples:
        return raw
    return Arrays(
        raw.x_train[:n_train], raw.y_train[:n_train], raw.x_test[:n_test], raw.y_test[:n_test]
    )


PROBE_TIMEOUT_S = 5.0


def check_available(cfg: DatasetConfig, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why a trial with dataset section ``cfg`` could not load its data (one line), or None.

    Cheap, so that a run checks it before anything starts: synthetic data and MNIST-1D (generated
    here) always load; a torchvision dataset needs its files in the data directory, or
    ``dataset.download`` and a download server that answers within ``timeout_s`` seconds.
    """
    info = get(cfg.name)
    root = data_dir(cfg.data_dir)
    missing = [] if cfg.synthetic else missing_files(info, root)
    if not missing:
        return None
    where = f"{info.title} (dataset.name {cfg.name}) is not in {root / info.folder}"
    fix = f"{info.provide}, or add --smoke (synthetic data; its numbers say nothing of the paper)"
    if not cfg.download:
        return (
            f"dataset.data_dir: {where} (missing {missing[0]}); set dataset.download: true "
            f"(needs the internet), {fix}"
        )
    unreachable = _unreachable(download_urls(info), timeout_s)
    if unreachable is None:
        return None
    return f"dataset.download: {where} and {unreachable} from this machine; {fix}"


def download_urls(info: DatasetInfo) -> tuple[str, ...]:
    """Where torchvision downloads ``info`` from (a dataset of several mirrors: each, in order)."""
    reader = info.reader()
    return (reader.url,) if hasattr(reader, "url") else tuple(reader.mirrors)


def _unreachable(urls: tuple[str, ...], timeout_s: float) -> str | None:
    """None when one of ``urls`` answers (any HTTP status: the server is there), else why not.
    urllib, as torchvision's download, so that proxy settings count the same."""
    import urllib.error
    import urllib.request

    reason = "no download address is known"
    for url in urls:
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, method="HEAD"), timeout=timeout_s
            ):
                return None
        except urllib.error.HTTPError:
            return None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            why = getattr(exc, "reason", None) or exc
            reason = f"its download server {url} cannot be reached ({' '.join(str(why).split())})"
    return reason

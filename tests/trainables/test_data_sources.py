"""Where a trial's data comes from: synthetic data, the first-N subset, the split rule, and the
cheap availability check that a run makes before anything starts."""

from __future__ import annotations

import http.server
import threading

import numpy as np
import pytest
import torch
from cifar_files import accept_written_md5s, write_cifar10

from trainables import datasets
from trainables.config import DatasetConfig, ModelConfig, TrialConfig
from trainables.cross_rules import validate
from trainables.data import load_data
from trainables.errors import UserError

torch.set_num_threads(1)


@pytest.mark.parametrize("name", ["mnist1d", "mnist", "cifar10", "cifar100"])
def test_synthetic_data_has_the_datasets_shape_classes_and_is_fixed(tmp_path, name):
    cfg = DatasetConfig(name=name, data_dir=str(tmp_path), synthetic=True, max_examples=300)
    d = load_data(cfg, seed=0)
    again = load_data(cfg, seed=1)  # the data do not follow the trial's seed
    info = datasets.get(name)
    assert d.x_train.shape == (300, *info.input_shape) and d.x_test.shape == (
        300,
        *info.input_shape,
    )
    assert d.num_classes == info.num_classes and d.y_train.max() < info.num_classes
    assert len(set(d.y_train.tolist())) > info.num_classes // 2
    assert torch.equal(d.x_train, again.x_train) and torch.equal(d.y_test, again.y_test)
    assert not any(tmp_path.iterdir())  # nothing read, generated or downloaded


def test_synthetic_data_is_learnable_by_its_class_patterns():
    """Each input is its class's pattern plus noise: the nearest class mean of the training set
    labels the test set far above chance (a model can learn it; random labels could not be)."""
    raw = datasets.synthetic(datasets.get("cifar10"), 500, 200)
    x = raw.x_train.reshape(500, -1).astype(float)
    means = np.stack([x[raw.y_train == c].mean(0) for c in range(10)])
    test = raw.x_test.reshape(200, -1).astype(float)
    guess = ((test[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (guess == raw.y_test).mean() > 0.9


def test_max_examples_keeps_the_first_examples_of_each_split(data_dir):
    full = load_data(DatasetConfig(data_dir=data_dir), seed=0)
    cut = load_data(DatasetConfig(data_dir=data_dir, max_examples=50), seed=0)
    assert torch.equal(cut.x_train, full.x_train[:50]) and torch.equal(cut.y_test, full.y_test[:50])


def test_split_sizes_match_what_mnist1d_generates(tmp_path):
    """mnist1d makes num_samples // 10 per class and trains on the first 80% (23 -> 20 -> 16)."""
    d = load_data(DatasetConfig(data_dir=str(tmp_path), num_samples=23), seed=0)
    assert datasets.split_sizes("mnist1d", 23, 0) == (d.y_train.shape[0], d.y_test.shape[0])
    assert datasets.split_sizes("mnist1d", 23, 0) == (16, 4)
    assert datasets.split_sizes("cifar10", 5000, 128) == (128, 128)


@pytest.mark.parametrize(
    ("fields", "held_out"),
    [
        ({"num_samples": 10, "validation_fraction": 0.9}, "8 of the 8 of MNIST-1D"),
        (
            {"name": "cifar10", "max_examples": 1, "validation_fraction": 0.5},
            "1 of the 1 of CIFAR-10",
        ),
        ({"name": "cifar10", "validation_fraction": 0.99999}, "50000 of the 50000 of CIFAR-10"),
    ],
)
def test_a_split_that_leaves_no_training_example_is_refused_by_validation(fields, held_out):
    cfg = TrialConfig(dataset=DatasetConfig(**fields), model=ModelConfig(name="mlp"))  # any input
    with pytest.raises(UserError) as err:
        validate(cfg)
    assert str(err.value) == (
        f"dataset.validation_fraction: leaves no training examples ({held_out} held out), "
        f"got {fields['validation_fraction']}"
    )


def test_a_split_that_leaves_one_training_example_is_valid():
    validate(TrialConfig(dataset=DatasetConfig(num_samples=10, validation_fraction=0.875)))


# --- check_available ------------------------------------------------------------------------------


def test_generated_and_synthetic_data_are_always_available(tmp_path):
    assert datasets.check_available(DatasetConfig(data_dir=str(tmp_path))) is None
    cfg = DatasetConfig(name="cifar10", data_dir=str(tmp_path), synthetic=True)
    assert datasets.check_available(cfg) is None


def test_dataset_files_on_disk_are_available(tmp_path, monkeypatch):
    write_cifar10(tmp_path, per_batch=2, n_test=2, rng=np.random.default_rng(0))
    cfg = DatasetConfig(name="cifar10", data_dir=str(tmp_path))
    assert datasets.check_available(cfg) is None
    from torchvision.datasets import CIFAR10

    accept_written_md5s(monkeypatch, CIFAR10, tmp_path / "cifar-10-batches-py")
    assert load_data(cfg, seed=0).x_train.shape[0] == 10  # what the check passed, loads


@pytest.mark.parametrize(
    ("name", "folder", "first"),
    [
        ("cifar10", "cifar-10-batches-py", "data_batch_1"),
        ("cifar100", "cifar-100-python", "train"),
        ("mnist", "MNIST/raw", "train-images-idx3-ubyte"),
    ],
)
def test_absent_files_without_download_are_one_line(tmp_path, name, folder, first):
    (tmp_path / folder).mkdir(parents=True)
    problem = datasets.check_available(DatasetConfig(name=name, data_dir=str(tmp_path)))
    title = datasets.get(name).title
    assert problem.startswith(
        f"dataset.data_dir: {title} (dataset.name {name}) is not in {tmp_path / folder} "
        f"(missing {first}); set dataset.download: true (needs the internet), "
    )
    assert problem.endswith("or add --smoke (synthetic data; its numbers say nothing of the paper)")
    assert "\n" not in problem


@pytest.fixture
def answering_server():
    """A local HTTP server that answers every request 404: a download server that is there."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 (the stdlib's name)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/cifar-10-python.tar.gz"
    server.shutdown()


def _closed_port_url() -> str:
    import socket

    with socket.socket() as s:  # a port nobody listens on once this socket closes
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"


def test_download_needs_a_server_that_answers(tmp_path, monkeypatch, answering_server):
    cfg = DatasetConfig(name="cifar10", data_dir=str(tmp_path), download=True)
    closed = _closed_port_url()
    monkeypatch.setattr(datasets, "download_urls", lambda info: (closed,))
    problem = datasets.check_available(cfg, timeout_s=2)
    assert problem.startswith(
        f"dataset.download: CIFAR-10 (dataset.name cifar10) is not in "
        f"{tmp_path / 'cifar-10-batches-py'} and its download server {closed} cannot be reached ("
    )
    assert "from this machine; copy the extracted folder" in problem and "\n" not in problem
    # Any answer (here 404) means the server is there: the trial's download will say the rest.
    monkeypatch.setattr(datasets, "download_urls", lambda info: (closed, answering_server))
    assert datasets.check_available(cfg, timeout_s=2) is None


def test_download_urls_are_torchvisions():
    assert datasets.download_urls(datasets.get("cifar10")) == (
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    )
    assert len(datasets.download_urls(datasets.get("mnist"))) >= 1

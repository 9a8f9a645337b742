"""Per-example training loss (float16 files) and the label-noise memorisation records."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import FlatnessConfig, TrialConfig
from trainables.loop import TrialRunner
from trainables.per_example import loss_file_name, per_example_loss, save_loss_file
from trainables.state import save_state

torch.set_num_threads(1)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3)
    )


def test_per_example_loss_is_eval_mode_cross_entropy_in_float16():
    model = _model()
    x, y = torch.randn(37, 5), torch.randint(0, 3, (37,))
    model.train()
    losses = per_example_loss(model, x, y, batch_size=10)
    assert losses.dtype == np.float16 and losses.shape == (37,)
    assert model.training  # flags restored
    model.eval()
    with torch.no_grad():
        expected = F.cross_entropy(model(x), y, reduction="none").numpy()
    np.testing.assert_allclose(losses.astype(np.float32), expected, rtol=1e-3, atol=1e-3)
    # deterministic (dropout off, BN running stats): the same call gives the same bytes
    assert per_example_loss(model, x, y).tobytes() == losses.tobytes()


def test_loss_files_round_trip(tmp_path):
    values = np.array([0.5, 2.25, 7.0], dtype=np.float16)
    name = loss_file_name(79, imp_round=3)
    assert name == "per_example_loss/r03_e00079.npy"
    assert loss_file_name(5) == "per_example_loss/e00005.npy"
    path = save_loss_file(tmp_path, name, values)
    assert path == tmp_path / name
    loaded = np.load(path)
    assert loaded.dtype == np.float16 and np.array_equal(loaded, values)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left


# --- in the training loop -------------------------------------------------------------------------


def _noisy_trial(data_dir: str, **pruning) -> TrialConfig:
    return TrialConfig.from_dict(
        {
            "dataset": {"data_dir": data_dir, "num_samples": 1000, "label_noise_fraction": 0.2},
            "model": {"name": "cnn1d", "width": 8},
            "train": {"epochs": 3, "batch_size": 64, "lr": 3e-3},
            "pruning": pruning,
            "flatness": {"epochs": [0], "subset_size": 32, "top_k": 1, "power_iters": 2},
            "per_example_loss": True,
        }
    )


def test_per_example_losses_are_stored_beside_the_checkpoint(tmp_path):
    runner = TrialRunner(_noisy_trial(str(tmp_path / "data")), device="cpu", num_threads=1)
    records = list(runner.run())
    files = [r["per_example_loss_file"] for r in records]
    assert files == ["per_example_loss/e00000.npy", None, "per_example_loss/e00002.npy"]
    # memorisation records: accuracy on the relabelled and on the clean subset, every epoch
    assert all(0 <= r["train_acc_noisy"] <= 1 and 0 <= r["train_acc_clean"] <= 1 for r in records)
    checkpoint = tmp_path / "checkpoint"
    save_state(runner, checkpoint)
    last = np.load(checkpoint / files[-1])
    expected = per_example_loss(runner.model, runner.data.x_train, runner.data.y_train)
    assert last.dtype == np.float16 and np.array_equal(last, expected)  # the final model's losses
    first = np.load(checkpoint / files[0])
    assert first.shape == last.shape == (runner.data.y_train.shape[0],)
    noisy = runner.data.noisy_mask.numpy()
    # trained labels: relabelled examples cost more than clean ones
    assert last[noisy].astype(np.float32).mean() > last[~noisy].astype(np.float32).mean()


def test_imp_stores_one_loss_file_per_round(tmp_path):
    cfg = _noisy_trial(str(tmp_path / "data"), method="imp", imp={"rounds": 1})
    cfg = dataclasses.replace(cfg, flatness=FlatnessConfig())  # no measurement, no settings
    records = list(TrialRunner(cfg, device="cpu", num_threads=1).run())
    files = [r["per_example_loss_file"] for r in records]
    assert files == [None, None, "per_example_loss/r00_e00002.npy"] + [None] * 2 + [
        "per_example_loss/r01_e00005.npy"
    ]

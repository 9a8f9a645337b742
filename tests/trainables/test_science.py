"""The science still works: each mechanism the papers' findings rest on has an effect on a tiny
real run (MNIST-1D, a few epochs, seconds), not merely a record saying it ran.

docs/replications.md tests the findings at small scale (minutes); these tests catch a mechanism
that silently stops working while the plumbing keeps going: a pruning event that removes nothing,
a noise window that perturbs nothing, targeted units that never re-enter, a flatness of 0 or
one that never moves, IMP rounds that prune nothing, a label-noise fraction that flips nothing.
"""

from __future__ import annotations

import math

import pytest
import torch

from trainables.config import TrialConfig
from trainables.data import load_data
from trainables.loop import TrialRunner

torch.set_num_threads(1)


def _cfg(data_dir: str, name: str = "mlp", **sections) -> TrialConfig:
    d = {
        "dataset": {"data_dir": data_dir, "num_samples": 1000},
        "model": {"name": name, "width": 16},
        "train": {"epochs": 4, "batch_size": 64, "lr": 3e-3},
        "seed": 1,
    }
    for section, values in sections.items():
        d.setdefault(section, {}).update(values)
    return TrialConfig.from_dict(d)


def _learner(data_dir: str, **sections) -> TrialConfig:
    """An MLP that learns in 6 epochs (train accuracy about 0.57 on clean labels)."""
    return _cfg(data_dir, model={"width": 64}, train={"epochs": 6, "lr": 1e-2}, **sections)


def _run(cfg: TrialConfig) -> tuple[TrialRunner, list[dict]]:
    runner = TrialRunner(cfg, device="cpu", num_threads=1)
    return runner, list(runner.run())


def _schedule(target: str, layer: str, fraction: float, **extra) -> dict:
    return {
        "method": "schedule",
        "target": target,
        "layers": [{"name": layer, "final_fraction": fraction, "start_epoch": 2, "end_epoch": 2}],
        **extra,
    }


def test_pruning_removes_weights_and_largest_is_less_stable_than_smallest(data_dir):
    """P1-a's two ingredients: an event removes its fraction, and removing the largest weights
    drops accuracy far more than removing the smallest (the instability axis has a spread)."""
    out = {}
    for target in ("smallest", "largest"):
        pruning = _schedule(target, "fc2", 0.5, granularity="weight", score="magnitude")
        _, records = _run(_cfg(data_dir, pruning=pruning))
        event = records[2]
        # half of fc2 (16 x 16) of the prunable 40 x 16 + 16 x 16 weights
        assert event["is_event"] and event["sparsity_after"] == pytest.approx(128 / 896)
        out[target] = event["instability"]
    assert out["largest"] > out["smallest"] + 0.05, out


def _noise(data_dir: str, mode: str, steps: int) -> TrialConfig:
    # cnn1d width 16, 800 training examples at batch 64: 13 steps per epoch; conv3 loses the 8
    # largest of its 16 filters at epoch 2, temporarily.
    pruning = _schedule(
        "largest",
        "conv3",
        0.5,
        perturbation={"mode": mode, "steps": steps, "eval_passes": "none"},
    )
    return _cfg(data_dir, "cnn1d", pruning=pruning, train={"epochs": 5})


@pytest.mark.parametrize("mode", ["zeroing", "gaussian"])
def test_a_noise_window_perturbs_the_model_and_the_units_re_enter(data_dir, mode):
    """P1-c: the event's perturbation moves the test accuracy, a longer window changes the
    training that follows, and after the window the targeted filters are trained again
    (re-entry: nothing stays removed)."""
    short_runner, short = _run(_noise(data_dir, mode, 0))
    runner, long = _run(_noise(data_dir, mode, 20))  # open for 20 of epoch 2-3's 26 steps
    event = long[2]
    assert event["is_event"] and abs(event["acc_before"] - event["acc_after"]) > 0.02
    assert short[2]["train_loss"] == long[2]["train_loss"]  # the same run up to the window
    assert short[3]["train_loss"] != long[3]["train_loss"]  # the window changed training
    assert all(r["sparsity"] == 0.0 for r in long)
    targeted = ~runner.method.perturbation.alive()["conv3"]
    assert int(targeted.sum()) == 8
    conv3 = runner.model.prunable_layers()["conv3"].weight.detach()
    norms = conv3.flatten(1).norm(dim=1)
    # re-entered: the targeted filters are trained weights again, not zeros or leftovers of size 0
    assert norms[targeted].min() > 0.05 * norms[~targeted].mean()


def test_flatness_measures_something_that_moves_with_training(data_dir):
    """P1-b's measures: positive, finite, and different at initialisation and after training."""
    flatness = {"epochs": [0, 5], "subset_size": 256, "top_k": 3, "power_iters": 10}
    _, records = _run(_learner(data_dir, flatness=flatness))
    first, last = records[0], records[5]
    for r in (first, last):
        assert r["hessian_topk_sum"] > 0 and r["grad_noise_trace"] > 0
        assert 0 < r["eps_flatness"] < math.inf
    assert last["hessian_topk_sum"] != pytest.approx(first["hessian_topk_sum"], rel=0.05)
    assert last["grad_noise_trace"] != pytest.approx(first["grad_noise_trace"], rel=0.05)


def _imp(data_dir: str, control: str) -> TrialConfig:
    pruning = {
        "method": "imp",
        "granularity": "weight",
        "imp": {"rounds": 2, "fraction": 0.2, "control": control},
    }
    return _cfg(data_dir, pruning=pruning, train={"epochs": 2})


def test_imp_rounds_prune_and_change_training_where_extended_dense_prunes_nothing(data_dir):
    """P2-a/b: each IMP round removes 20% of the remaining weights (density 0.8^k), extended
    dense training replays the same rounds without pruning, and the two runs' training diverges
    once IMP has pruned."""
    _, imp = _run(_imp(data_dir, "none"))
    _, dense = _run(_imp(data_dir, "extended_dense"))
    assert [r["imp_round"] for r in imp] == [0, 0, 1, 1, 2, 2]
    ends = {r["imp_round"]: r["sparsity"] for r in imp if r["epoch"] % 2 == 1}
    assert ends == pytest.approx({0: 0.0, 1: 0.2, 2: 1 - 0.8**2}, abs=0.01)
    assert {r["sparsity"] for r in dense} == {0.0}
    assert imp[1]["train_loss"] == dense[1]["train_loss"]  # the same dense training
    assert imp[2]["train_loss"] != dense[2]["train_loss"]  # pruned after round 0


def test_label_noise_flips_labels_and_the_network_fits_them_worse(data_dir):
    """P2-c's noise: a 40% fraction relabels about 40% x 9/10 of the training labels (a tenth are
    drawn equal to the original), and a run on them fits its training labels worse."""
    noisy_cfg = _learner(data_dir, dataset={"label_noise_fraction": 0.4})
    data = load_data(noisy_cfg.dataset, noisy_cfg.seed)
    changed = float((data.y_train != data.y_train_clean).float().mean())
    assert changed == pytest.approx(0.4 * 0.9, abs=0.05)
    assert float(data.noisy_mask.float().mean()) == pytest.approx(0.4, abs=0.01)
    _, noisy = _run(noisy_cfg)
    _, clean = _run(_learner(data_dir))
    assert noisy[-1]["train_acc"] < clean[-1]["train_acc"] - 0.05
    assert noisy[-1]["train_acc_clean"] > noisy[-1]["train_acc_noisy"] + 0.1

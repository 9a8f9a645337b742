"""The training loop: event order and records, a hand-made event, divergence, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from trainables.config import TrialConfig
from trainables.errors import UserError
from trainables.loop import TrialRunner
from trainables.records import RECORD_KEYS

torch.set_num_threads(1)


def _cfg(data_dir: str, **overrides) -> TrialConfig:
    d = {
        "dataset": {"data_dir": data_dir, "num_samples": 1000},
        "model": {"name": "cnn1d", "width": 8},
        "train": {"epochs": 5, "batch_size": 64, "milestones": [3], "lr": 3e-3},
        "pruning": {
            "method": "schedule",
            "period": 2,
            "layers": [
                {"name": "conv2", "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 2},
                {"name": "conv3", "final_fraction": 0.75, "start_epoch": 1, "end_epoch": 3},
            ],
        },
    }
    for section, values in overrides.items():
        if isinstance(values, dict):
            d.setdefault(section, {}).update(values)
        else:
            d[section] = values
    train = d["train"]  # shorter trials drop the milestones past their end
    train["milestones"] = [m for m in train.get("milestones", []) if m < train["epochs"]]
    return TrialConfig.from_dict(d)


def _units(record) -> dict[str, int] | None:
    """The record's per-layer units as {layer: units} (None off events)."""
    if record["units_removed"] is None:
        return None
    return {u["layer"]: u["units"] for u in record["units_removed"]}


def _strip_time(records):
    return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in records]


def test_schedule_trial_records(data_dir):
    runner = TrialRunner(_cfg(data_dir), device="cpu", num_threads=1)
    records = list(runner.run())
    assert [r["epoch"] for r in records] == list(range(5))
    assert all(set(r) == set(RECORD_KEYS) for r in records)
    assert [r["status"] for r in records] == ["running"] * 4 + ["done"]
    assert runner.finished and list(runner.run()) == []
    # conv2 (8 units, 0.5): events at 0, 2 remove 2, 2; conv3 (8, 0.75): events at 1, 3 remove 3, 3.
    expected = {0: {"conv2": 2}, 1: {"conv3": 3}, 2: {"conv2": 2}, 3: {"conv3": 3}}
    for r in records:
        assert r["is_event"] == (r["epoch"] in expected)
        assert _units(r) == expected.get(r["epoch"])
        if r["is_event"]:
            assert r["test_acc"] == r["acc_after"]
            assert r["instability"] == (r["acc_before"] - r["acc_after"]) / r["acc_before"]
            assert r["units_removed_total"] == sum(_units(r).values())
        else:
            assert r["acc_before"] is r["acc_after"] is r["instability"] is None
        assert 0 <= r["train_acc"] <= 1 and 0 <= r["test_acc"] <= 1
    sparsity = [r["sparsity"] for r in records]
    assert sparsity == sorted(sparsity) and sparsity[0] > 0
    # Derived schedule numbers on every record: 4 event epochs; the most-pruned layer (conv3,
    # 0.75) loses 37.5% of its units per event.
    assert {(r["num_events"], r["pruning_rate"]) for r in records} == {(4, 37.5)}
    layers = runner.model.prunable_layers()
    total = sum(layer.weight.numel() for layer in layers.values())
    assert sparsity[-1] == pytest.approx((4 * 8 * 3 + 6 * 8 * 3) / total)  # rows of [8, 8, 3]
    assert [r["lr"] for r in records] == pytest.approx([3e-3] * 3 + [3e-4] * 2)
    assert [e["epoch"] for e in runner.loop.events] == [0, 1, 2, 3]


def test_same_seed_same_records_other_seed_differs(data_dir):
    cfg = _cfg(data_dir, pruning={"target": "random"}, train={"epochs": 4})
    a = _strip_time(TrialRunner(cfg, device="cpu").run())
    b = _strip_time(TrialRunner(cfg, device="cpu").run())
    c = _strip_time(TrialRunner(_cfg(data_dir, seed=1, train={"epochs": 4}), device="cpu").run())
    assert a == b and a != c


def test_hand_made_event_instability(data_dir):
    """An MLP whose only live hidden path is unit 0 of fc1: pruning it leaves constant logits."""
    cfg = _cfg(
        data_dir,
        model={"name": "mlp", "width": 2},
        train={"epochs": 1, "lr": 1e-30, "milestones": []},  # training leaves the weights as set
        pruning={
            "layers": [{"name": "fc1", "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 0}],
            "target": "largest",
        },
    )
    runner = TrialRunner(cfg, device="cpu")
    fc1, fc2 = runner.model.hidden
    x, y = runner.data.x_test.flatten(1), runner.data.y_test
    with torch.no_grad():
        fc1.weight.zero_(), fc1.bias.zero_(), fc2.weight.zero_(), fc2.bias.zero_()
        fc1.weight[0] = x[y == 3].mean(0) - x.mean(0)  # a class-3 detector
        fc2.weight[0, 0] = 1.0
        runner.model.fc.weight.zero_()
        runner.model.fc.weight[3, 0] = 1.0
        runner.model.fc.bias.copy_(torch.arange(10.0) * 0.01)  # ties broken towards class 9
        h = torch.relu(fc1.weight[0] @ x.T)
        logits = runner.model.fc.bias + torch.outer(h, runner.model.fc.weight[:, 0])
    before = int((logits.argmax(1) == y).sum()) / y.numel()
    after = int((y == 9).sum()) / y.numel()  # constant logits = bias: always class 9
    (record,) = list(runner.run())
    assert record["units_removed"] == [{"layer": "fc1", "units": 1}]
    assert record["acc_before"] == before and record["acc_after"] == after
    assert before > after + 0.05
    assert record["instability"] == pytest.approx((before - after) / before)


def test_non_finite_loss_ends_the_trial_as_diverged(data_dir):
    cfg = _cfg(
        data_dir,
        model={"name": "mlp", "width": 8},
        pruning={"method": "none", "layers": [], "period": 1},
        train={"optimizer": "sgd", "lr": 1e12, "momentum": 0.9, "epochs": 5},
    )
    records = list(TrialRunner(cfg, device="cpu").run())
    assert records[-1]["status"] == "diverged" and len(records) < 5
    assert not math.isfinite(records[-1]["train_loss"])
    assert all(r["status"] == "running" for r in records[:-1])


def test_baseline_has_no_events_and_split_and_noise_metrics(data_dir):
    cfg = _cfg(
        data_dir,
        pruning={"method": "none", "layers": [], "period": 1},
        dataset={"validation_fraction": 0.2, "label_noise_fraction": 0.3},
        train={"epochs": 2, "optimizer": "sgd", "lr": 0.05, "nesterov": True, "weight_decay": 5e-4},
    )
    records = list(TrialRunner(cfg, device="cpu").run())
    assert not any(r["is_event"] for r in records) and {r["sparsity"] for r in records} == {0.0}
    for r in records:
        assert 0 <= r["val_acc"] <= 1 and r["val_loss"] > 0
        assert 0 <= r["train_acc_noisy"] <= 1 and 0 <= r["train_acc_clean"] <= 1
    # The relabelled subset is mostly wrong labels: the model fits the clean part better.
    assert records[-1]["train_acc_clean"] > records[-1]["train_acc_noisy"]


def test_default_schedule_and_clear_errors(data_dir):
    cfg = _cfg(data_dir, pruning={"layers": []}, train={"epochs": 17})  # the default ends at 16
    runner = TrialRunner(cfg, device="cpu")
    assert [lp.name for lp in runner.method.plan.layers] == ["conv1", "conv2", "conv3"]
    bad = {"layers": [{"name": "fc", "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 1}]}
    with pytest.raises(
        UserError, match=r"pruning.layers\[0\].name: unknown layer 'fc' of model cnn1d"
    ):
        TrialRunner(_cfg(data_dir, pruning=bad), device="cpu")


@pytest.mark.parametrize(
    ("pruning", "model", "message"),
    [
        ({"score": "ebn"}, {"name": "mlp", "width": 8}, "ebn needs a model with a BatchNorm after"),
        (
            {"score": "ebn_signed"},
            {"name": "mlp", "width": 8},
            "ebn_signed needs a model with a BatchNorm after each prunable layer, got mlp",
        ),
        ({"score": "magnitude"}, {}, "pruning.score: magnitude needs pruning.granularity weight"),
        ({"scope": "global"}, {}, "pruning.scope: global needs pruning.granularity weight"),
        (
            {"granularity": "weight", "score": "ebn"},
            {},
            "pruning.score: ebn needs pruning.granularity filter, got weight",
        ),
    ],
)
def test_bad_scoring_fails_at_build_time(data_dir, pruning, model, message):
    layers = [
        {
            "name": "fc1" if model else "conv1",
            "final_fraction": 0.5,
            "start_epoch": 0,
            "end_epoch": 0,
        }
    ]
    cfg = _cfg(data_dir, pruning={**pruning, "layers": layers}, model=model or {})
    with pytest.raises(UserError, match=message):
        TrialRunner(cfg, device="cpu")


def test_weight_granularity_global_schedule(data_dir):
    layers = [
        {"name": "conv2", "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 1},
        {"name": "conv3", "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 1},
    ]
    cfg = _cfg(
        data_dir,
        pruning={
            "granularity": "weight",
            "score": "magnitude",
            "scope": "global",
            "period": 1,
            "layers": layers,
        },
        train={"epochs": 2},
    )
    runner = TrialRunner(cfg, device="cpu")
    records = list(runner.run())
    n = runner.masks.n_units
    assert (
        sum(_units(records[-1]).values()) + sum(_units(records[0]).values())
        == (n["conv2"] + n["conv3"]) // 2
    )
    weights = runner.model.prunable_layers()
    assert records[-1]["sparsity"] == pytest.approx(
        sum(int((w.weight == 0).sum()) for w in weights.values()) / runner.masks.total_weights
    )

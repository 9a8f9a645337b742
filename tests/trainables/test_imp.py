"""IMP: global magnitude masks, round bookkeeping, LR/weight rewinding and the controls."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainables.config import ImpConfig, PruningConfig, TrainConfig, TrialConfig
from trainables.cross_rules import validate
from trainables.errors import UserError
from trainables.loop import TrialRunner
from trainables.models import build_model
from trainables.models.base import PrunableModel
from trainables.models.mlp import MLP
from trainables.pruning.imp import Imp
from trainables.pruning.masks import MaskSet
from trainables.pruning.rounds import ImpPlan, lr_at
from trainables.value_rules import count_of

torch.set_num_threads(1)


def _cfg(epochs=3, milestones=(1,), **imp) -> TrialConfig:
    return TrialConfig(
        train=TrainConfig(epochs=epochs, milestones=milestones, lr=0.1, gamma=0.1),
        pruning=PruningConfig(method="imp", granularity="weight", imp=ImpConfig(**imp)),
    )


def _masks_over(weights: dict[str, torch.Tensor]) -> MaskSet:
    """A weight MaskSet over an MLP whose two hidden layers hold the given weights."""
    a, b = weights["fc1"], weights["fc2"]
    model = MLP((a.shape[1],), (a.shape[0], b.shape[0]), 2)
    assert b.shape[1] == a.shape[0]
    with torch.no_grad():
        model.hidden[0].weight.copy_(a)
        model.hidden[1].weight.copy_(b)
    return MaskSet(model, "weight")


def _global_prune(masks: MaskSet, fraction: float) -> dict[str, torch.Tensor]:
    """One IMP event over every layer, as Imp.event does it."""
    names = list(masks.layers)
    k = count_of(sum(int(masks.alive(n).sum()) for n in names), fraction)
    masks.remove(masks.select_jointly(names, k, "magnitude", "smallest", torch.Generator()))
    return {n: masks.alive(n).clone() for n in names}


def test_global_magnitude_prunes_exactly_the_smallest_jointly():
    g = torch.Generator().manual_seed(0)
    weights = {
        "fc1": torch.randn(5, 2, generator=g) * 0.01,
        "fc2": 1 + torch.rand(16, 5, generator=g),
    }
    new = _global_prune(_masks_over(weights), 0.2)
    assert sum(int(m.sum()) for m in new.values()) == 90 - 18
    # joint ranking: the tiny tensor fc1 loses all 10 and fc2 its 8 smallest
    assert int((~new["fc1"]).sum()) == 10 and int((~new["fc2"]).sum()) == 8
    pruned = torch.cat([weights[k][~new[k]].abs() for k in weights])
    kept = torch.cat([weights[k][new[k]].abs() for k in weights])
    assert pruned.max() <= kept.min()


def test_global_magnitude_masks_only_shrink_and_follow_density():
    g = torch.Generator().manual_seed(1)
    masks = _masks_over(
        {"fc1": torch.randn(30, 7, generator=g), "fc2": torch.randn(13, 30, generator=g)}
    )
    previous = {n: masks.alive(n).clone() for n in masks.layers}
    alive = 30 * 7 + 13 * 30
    for _ in range(8):
        new = _global_prune(masks, 0.2)
        for k in previous:
            assert not (new[k] & ~previous[k]).any()  # masks only shrink
        alive -= -(-alive // 5)  # ceil(alive / 5) in integers
        assert sum(int(m.sum()) for m in new.values()) == alive
        previous = new
    assert alive / (30 * 7 + 13 * 30) == pytest.approx(0.8**8, rel=0.05)


def test_fraction_zero_never_masks():
    masks = _masks_over({"fc1": torch.randn(4, 4), "fc2": torch.randn(3, 4)})
    new = _global_prune(masks, 0.0)
    assert all(bool(m.all()) for m in new.values())
    assert count_of(35, 0.2) == 7  # the decimal 0.2, not the float 0.2000000000000000111


def test_plan_rounds_lengths_and_events():
    lrr = ImpPlan.of(_cfg(epochs=4, rounds=2))
    assert lrr.round_lengths == (4, 4, 4) and lrr.total_epochs == 12
    assert lrr.prune_epochs == (3, 7) and lrr.control_start_epoch is None
    assert [lrr.locate(e) for e in (0, 3, 4, 11)] == [(0, 0), (0, 3), (1, 0), (2, 3)]
    wr = ImpPlan.of(_cfg(epochs=4, rounds=2, rewind="weight", rewind_epoch=1))
    assert wr.round_lengths == (4, 3, 3) and wr.prune_epochs == (3, 6)
    assert [wr.locate(e) for e in (4, 6, 7)] == [(1, 1), (1, 3), (2, 1)]
    sfs = ImpPlan.of(_cfg(epochs=4, rounds=2, control="sparse_from_start"))
    assert sfs.total_epochs == 16 and sfs.event_kind(11) == "reinit" and sfs.locate(12) == (3, 0)
    dense = ImpPlan.of(_cfg(rounds=2, control="extended_dense"))
    assert dense.fraction == 0.0
    with pytest.raises(UserError, match="rewind_epoch: must be < train.epochs"):
        validate(_cfg(epochs=4, rounds=1, rewind="weight", rewind_epoch=4))


class _Trial:
    """A minimal IMP driver over a real model: what the loop does, with one batch per epoch."""

    def __init__(self, cfg: TrialConfig):
        torch.manual_seed(0)
        self.model: PrunableModel = build_model(cfg.model.name, cfg.model.width, (1, 40), 10)
        self.masks = MaskSet(self.model, "weight")
        self.plan = ImpPlan.of(cfg)
        t = cfg.train
        self.imp = Imp(self.plan, t.lr, t.milestones, t.gamma)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=t.lr, momentum=0.9)
        g = torch.Generator().manual_seed(1)
        self.x, self.y = (
            torch.randn(64, 1, 40, generator=g),
            torch.randint(0, 10, (64,), generator=g),
        )
        self.lrs: list[float] = []
        self.events: dict[int, dict[str, int]] = {}

    def epoch(self, e: int) -> None:
        self.imp.before_epoch(e, self.model)
        for group in self.opt.param_groups:
            group["lr"] = self.imp.lr(e)
        self.lrs.append(self.opt.param_groups[0]["lr"])
        self.opt.zero_grad()
        F.cross_entropy(self.model(self.x), self.y).backward()
        self.masks.mask_grads_()
        self.opt.step()
        self.masks.apply_()
        if self.plan.event_kind(e):
            self.events[e] = self.imp.event(e, self.model, self.masks)
            self.imp.start_round(e + 1, self.model, self.opt, self.masks)

    def run(self, epochs: range) -> None:
        for e in epochs:
            self.epoch(e)


def test_lrr_replays_the_schedule_and_keeps_weights():
    trial = _Trial(_cfg(epochs=3, milestones=(1, 2), rounds=2))
    trial.run(range(trial.plan.total_epochs))
    once = [lr_at(e, 0.1, (1, 2), 0.1) for e in range(3)]
    assert trial.lrs == pytest.approx(once * 3)  # the LR sequence repeats per round
    assert trial.masks.sparsity == pytest.approx(1 - (1 - 0.2) ** 2, abs=1e-3)
    # LRR keeps the weights: after the event only pruned entries changed (and they are 0)
    trial2 = _Trial(_cfg(epochs=3, rounds=1))
    trial2.run(range(2))
    trial2.imp.before_epoch(2, trial2.model)
    before = {n: layer.weight.detach().clone() for n, layer in trial2.masks.layers.items()}
    trial2.events[2] = trial2.imp.event(2, trial2.model, trial2.masks)
    trial2.imp.start_round(3, trial2.model, trial2.opt, trial2.masks)
    for n, layer in trial2.masks.layers.items():
        alive = trial2.masks.alive(n)
        assert torch.equal(layer.weight.detach()[alive], before[n][alive])
        assert (layer.weight.detach()[~alive] == 0).all()
    assert not trial2.opt.state  # a fresh optimizer per round, as OpenLTH


def test_weight_rewinding_resets_survivors_to_the_saved_epoch():
    trial = _Trial(_cfg(epochs=3, rounds=1, rewind="weight", rewind_epoch=1))
    trial.run(range(1))
    saved = {k: v.clone() for k, v in trial.model.state_dict().items()}  # start of epoch 1
    trial.run(range(1, 3))  # epoch 2 ends round 0: prune, then rewind
    assert sum(trial.events[2].values()) > 0
    masked = {_path(trial, m): n for n, m in trial.masks.layers.items()}
    for k, v in trial.model.state_dict().items():
        if k not in masked:
            assert torch.equal(v, saved[k]), k  # biases, BN params and running stats too
        else:
            alive = trial.masks.alive(masked[k])
            assert torch.equal(v[alive], saved[k][alive]) and (v[~alive] == 0).all(), k
    assert trial.opt.param_groups[0]["lr"] == pytest.approx(lr_at(1, 0.1, (1,), 0.1))
    trial.run(range(3, trial.plan.total_epochs))
    assert trial.lrs == pytest.approx([0.1, 0.01, 0.01, 0.01, 0.01])


def _path(trial: _Trial, module: torch.nn.Module) -> str:
    for name, m in trial.model.named_modules():
        if m is module:
            return f"{name}.weight"
    raise AssertionError


def test_extended_dense_never_masks_anything():
    trial = _Trial(_cfg(epochs=2, rounds=3, control="extended_dense", fraction=0.5))
    trial.run(range(trial.plan.total_epochs))
    assert sorted(trial.events) == [1, 3, 5]
    assert all(sum(v.values()) == 0 for v in trial.events.values())
    assert trial.masks.sparsity == 0.0
    assert all(bool(trial.masks.alive(n).all()) for n in trial.masks.layers)
    assert trial.lrs == pytest.approx([0.1, 0.01] * 4)


def test_sparse_from_start_trains_the_final_mask_from_init():
    trial = _Trial(_cfg(epochs=2, rounds=2, control="sparse_from_start"))
    init = {k: v.clone() for k, v in trial.model.state_dict().items()}
    trial.run(range(trial.plan.control_start_epoch))
    final_masks = {n: trial.masks.alive(n).clone() for n in trial.masks.layers}
    trial.epoch(trial.plan.control_start_epoch)  # reinit event
    n_zero = {n: int((~m).sum()) for n, m in final_masks.items()}
    assert trial.events[trial.plan.control_start_epoch] == n_zero
    for n, layer in trial.masks.layers.items():
        assert torch.equal(trial.masks.alive(n), final_masks[n])  # the final round's mask
        w0 = init[_path(trial, layer)]
        alive = final_masks[n]
        assert torch.equal(layer.weight.detach()[alive], w0[alive])
        assert (layer.weight.detach()[~alive] == 0).all()
    assert trial.masks.sparsity == pytest.approx(0.36, abs=1e-3)


def test_state_dict_round_trip_keeps_the_rewind_point():
    trial = _Trial(_cfg(epochs=3, rounds=1, rewind="weight", rewind_epoch=0))
    trial.run(range(2))
    other = Imp(trial.plan, 0.1, (1,), 0.1)
    other.load_state_dict(trial.imp.state_dict())
    for k, v in trial.imp.saved["rewind"].items():
        assert torch.equal(other.saved["rewind"][k], v)


# --- in the training loop -------------------------------------------------------------------------


def _trial(data_dir: str, epochs: int = 2, **imp) -> TrialConfig:
    return TrialConfig.from_dict(
        {
            "dataset": {"data_dir": data_dir, "num_samples": 1000, "validation_fraction": 0.1},
            "model": {"name": "cnn1d", "width": 8},
            "train": {
                "epochs": epochs,
                "batch_size": 64,
                "lr": 3e-3,
                "milestones": [1],
                "gamma": 0.5,
            },
            "pruning": {"method": "imp", "imp": imp},
            "seed": 5,
        }
    )


def test_imp_trial_records_rounds_sparsity_and_replayed_lr(data_dir):
    records = list(TrialRunner(_trial(data_dir, rounds=2), device="cpu", num_threads=1).run())
    assert [r["imp_round"] for r in records] == [0, 0, 1, 1, 2, 2]
    assert [r["lr"] for r in records] == pytest.approx([3e-3, 1.5e-3] * 3)
    assert [r["epoch"] for r in records if r["is_event"]] == [1, 3]
    sparsity = [r["sparsity"] for r in records]  # the model each row measures: trained, unpruned
    assert sparsity[0] == sparsity[1] == 0.0
    assert sparsity[2] == sparsity[3] == pytest.approx(0.2, abs=1e-3)
    assert sparsity[4] == sparsity[5] == pytest.approx(0.36, abs=1e-3)
    assert [records[e]["sparsity_after"] for e in (1, 3)] == [sparsity[2], sparsity[4]]
    for r in records:  # each round records train loss/acc, test and validation accuracy
        assert None not in (r["train_loss"], r["train_acc"], r["test_acc"], r["val_acc"])
    assert records[-1]["status"] == "done"


def test_extended_dense_and_sparse_from_start_in_the_loop(data_dir):
    dense = list(TrialRunner(_trial(data_dir, rounds=2, control="extended_dense"), "cpu").run())
    assert len(dense) == 6 and not any(r["is_event"] for r in dense)
    assert all(r["sparsity"] == 0.0 for r in dense)
    assert [r["lr"] for r in dense] == pytest.approx([3e-3, 1.5e-3] * 3)
    sfs = list(TrialRunner(_trial(data_dir, rounds=2, control="sparse_from_start"), "cpu").run())
    assert [r["imp_round"] for r in sfs] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [r["epoch"] for r in sfs if r["is_event"]] == [1, 3, 5]
    n = _prunable_weights()
    k1 = -(-n // 5)
    assert sfs[5]["units_removed_total"] == k1 + -(-(n - k1) // 5)  # the final mask's zeros
    assert sfs[6]["sparsity"] == sfs[4]["sparsity"]  # the final round's mask
    # the IMP phase is the matched IMP trial, epoch for epoch (same seed, same masks)
    imp = list(TrialRunner(_trial(data_dir, rounds=2), "cpu").run())
    for a, b in zip(imp[:5], sfs[:5], strict=True):
        assert a["test_acc"] == b["test_acc"] and a["sparsity"] == b["sparsity"]


def _prunable_weights() -> int:
    model = build_model("cnn1d", 8, (1, 40), 10)
    return sum(m.weight.numel() for m in model.prunable_layers().values())

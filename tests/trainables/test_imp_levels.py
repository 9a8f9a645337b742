"""Every IMP level is measured on the model the level trained, as OpenLTH does.

OpenLTH's ``lottery/runner.py`` runs, per level: train the (masked) model to the end of the
schedule (``_train_level`` -> ``standard_train``, whose end-of-training evaluation is that
level's result), then ``_prune_level`` prunes the trained model for the next level, which starts
from the rewind point (weight rewinding) or, with learning-rate rewinding, from the trained
weights. :func:`_openlth_levels` is that loop written out independently of ``trainables.loop``
on a tiny cnn1d: ``PrunedModel``-style masking (the mask multiplied into the weights before every
forward, no gradient masking), a fresh optimizer per level, global magnitude pruning of 20% of the
remaining weights, and every level's trained model evaluated before its prune. Only the data, the
initial weights and the batch order are shared with the trial, so the two can be compared number
for number. The prune count follows our documented rule (exactly ``ceil(0.2 * remaining)``
weights; docs/reproducing.md#jin2022-imp), which on untied float weights is OpenLTH's threshold rule
with one weight fewer.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from results.tables.summarize import INPUT_KEYS, level_end_rows, summarize
from trainables.augment import derived_generator
from trainables.config import TrialConfig
from trainables.loop import TrialRunner

torch.set_num_threads(1)

T, ROUNDS, LR, GAMMA, MILESTONE, FRACTION = 2, 2, 3e-3, 0.5, 1, 0.2


def _cfg(data_dir: str, rewind: str) -> TrialConfig:
    return TrialConfig.from_dict(
        {
            "dataset": {
                "data_dir": data_dir,
                "num_samples": 1000,
                "validation_fraction": 0.2,
                "label_noise_fraction": 0.3,
            },
            "model": {"name": "cnn1d", "width": 8},
            "train": {
                "epochs": T,
                "batch_size": 64,
                "eval_batch_size": 128,
                "lr": LR,
                "milestones": [MILESTONE],
                "gamma": GAMMA,
            },
            "pruning": {
                "method": "imp",
                "imp": {
                    "rounds": ROUNDS,
                    "fraction": FRACTION,
                    "rewind": rewind,
                    "rewind_epoch": 1 if rewind == "weight" else 0,
                },
            },
            "generalization": "val_selected",
            "seed": 5,
        }
    )


def _evaluate(model, masks, x, y, batch):
    """Eval-mode (mean loss, accuracy) over batches, the mask applied first (PrunedModel)."""
    _apply(model, masks)
    model.eval()
    loss, hits = torch.zeros(()), []
    with torch.no_grad():
        for xb, yb in zip(x.split(batch), y.split(batch), strict=True):
            logits = model(xb).float()
            loss += F.cross_entropy(logits, yb, reduction="sum")
            hits.append(logits.argmax(1) == yb)
    hits_t = torch.cat(hits)
    return float(loss.double()) / y.numel(), int(hits_t.sum()) / y.numel(), hits_t


def _apply(model, masks):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in masks:
                p.mul_(masks[name])


def _sparsity(masks) -> float:
    total = sum(m.numel() for m in masks.values())
    return sum(int((m == 0).sum()) for m in masks.values()) / total


def _prune(model, masks) -> dict[str, torch.Tensor]:
    """sparse_global: rank |w| of the surviving weights of every prunable tensor jointly and drop
    the ceil(fraction * remaining) smallest."""
    params = dict(model.named_parameters())
    alive = torch.cat([params[n].detach()[m.bool()].abs().flatten() for n, m in masks.items()])
    k = math.ceil(FRACTION * alive.numel())
    threshold = alive.sort().values[k - 1]
    new = {n: torch.where(params[n].detach().abs() > threshold, m, 0.0) for n, m in masks.items()}
    assert sum(int(m.sum()) for m in new.values()) == alive.numel() - k  # no ties
    return new


def _openlth_levels(runner: TrialRunner, init: dict, rewind: str) -> list[dict]:
    """Each level's numbers: the trained model before its prune, and the pruned model after."""
    cfg, data = runner.cfg, runner.data
    model = copy.deepcopy(runner.model)
    model.load_state_dict(init)
    paths = {id(m): name for name, m in runner.model.named_modules()}
    # OpenLTH's prunable tensors: the weights of the prunable layers, by parameter path
    masks = {
        f"{paths[id(layer)]}.weight": torch.ones_like(layer.weight)
        for layer in runner.masks.layers.values()
    }
    assert set(masks) <= set(dict(model.named_parameters()))
    order = derived_generator(cfg.seed, "data_order")
    n, bs, eval_bs = data.y_train.numel(), cfg.train.batch_size, cfg.train.eval_batch_size
    rewind_epoch = cfg.pruning.imp.rewind_epoch if rewind == "weight" else 0
    saved = None
    levels = []
    for level in range(ROUNDS + 1):
        start = 0 if level == 0 else rewind_epoch
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)  # a fresh one per level
        for epoch in range(start, T):
            if level == 0 and epoch == rewind_epoch:
                saved = copy.deepcopy(model.state_dict())
            for group in optimizer.param_groups:
                group["lr"] = LR * GAMMA ** (epoch >= MILESTONE)
            model.train()
            loss_sum, correct = 0.0, 0
            for idx in torch.randperm(n, generator=order).split(bs):
                x, y = data.x_train[idx], data.y_train[idx]
                _apply(model, masks)
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * idx.numel()
                correct += int((logits.argmax(1) == y).sum())
        # the end of the level: evaluate the trained model (OpenLTH's result for this level)
        row = {"train_loss": loss_sum / n, "train_acc": correct / n, "sparsity": _sparsity(masks)}
        row["test_loss"], row["test_acc"], _ = _evaluate(
            model, masks, data.x_test, data.y_test, eval_bs
        )
        row["val_loss"], row["val_acc"], _ = _evaluate(
            model, masks, data.x_val, data.y_val, eval_bs
        )
        _, _, hits = _evaluate(model, masks, data.x_train, data.y_train, eval_bs)
        row["train_acc_noisy"] = float(hits[data.noisy_mask].float().mean())
        row["train_acc_clean"] = float(hits[~data.noisy_mask].float().mean())
        if level < ROUNDS:  # then prune for the next level, and rewind
            masks = _prune(model, masks)
            row["test_loss_after"], row["acc_after"], _ = _evaluate(
                model, masks, data.x_test, data.y_test, eval_bs
            )
            row["sparsity_after"] = _sparsity(masks)
            if rewind == "weight":
                model.load_state_dict(saved)
        levels.append(row)
    return levels


@pytest.mark.parametrize("rewind", ["lr", "weight"])
def test_every_level_end_is_the_levels_trained_model(data_dir, rewind):
    runner = TrialRunner(_cfg(data_dir, rewind), device="cpu", num_threads=1)
    init = copy.deepcopy(runner.model.state_dict())
    records = list(runner.run())
    expected = _openlth_levels(runner, init, rewind)

    imp_round = np.array([r["imp_round"] for r in records], dtype=float)
    ends = np.flatnonzero(level_end_rows(imp_round))
    assert len(ends) == ROUNDS + 1
    for level, (row, want) in enumerate(zip([records[e] for e in ends], expected, strict=True)):
        for key, value in want.items():
            assert row[key] == pytest.approx(value, rel=1e-6, abs=1e-12), (level, key)
        if level < ROUNDS:  # the event epoch: its acc_before is the level's trained model
            assert row["is_event"] and row["acc_before"] == row["test_acc"]

    # what results derives from those rows: the level chosen on validation, and its gap
    cols = {k: _column([r.get(k) for r in records]) for k in INPUT_KEYS}
    cols["is_event"] = cols["is_event"].astype(bool)
    out = summarize(cols, runner.cfg, "ok")
    best = max(range(ROUNDS + 1), key=lambda i: (expected[i]["val_acc"], -i))
    assert out["generalization"] == pytest.approx(expected[best]["test_acc"])
    assert out["generalization_epoch"] == int(ends[best])
    gap = expected[best]["train_acc"] - expected[best]["test_acc"]
    assert out["gen_gap"] == pytest.approx(gap)


def _column(values: list) -> np.ndarray:
    """A record key as summarize reads it: text as objects, the rest as float (NaN = null)."""
    if any(isinstance(v, str) for v in values):
        return np.array(values, dtype=object)
    return np.array([np.nan if v is None else float(v) for v in values])

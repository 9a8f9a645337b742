"""The jin2022-imp preset's IMP trial, run in the loop on CIFAR-10 files written by hand: it
prunes OpenLTH's tensors (shortcut convs and the output layer included) and its level ends are
the epochs ``val_selected`` chooses among."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from cifar_files import accept_written_md5s, write_cifar10
from torch import nn

from results.tables.summarize import level_end_rows
from search_spaces.expand import expand
from search_spaces.spec import load_spec
from trainables.loop import TrialRunner

torch.set_num_threads(1)


def _openlth_prunable(model: nn.Module) -> dict[str, torch.Tensor]:
    """facebookresearch/open_lth, models/base.py::Model.prunable_layer_names: the ``.weight`` of
    every Conv2d and Linear module (sparse_global prunes over these unless told to ignore some;
    cifar_resnet_20's default_hparams ignores none)."""
    return {
        f"{name}.weight": m.weight
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }


def _preset_trial(data_dir: str):
    """The preset's IMP trial (control none, 20% noise, seed 0), shrunk: 3 rounds of one epoch
    on 40 hand-written training images."""
    trial = next(
        t
        for t in expand(load_spec("jin2022-imp")).pruned
        if t.pruning.imp.control == "none" and t.dataset.label_noise_fraction == 0.2 and not t.seed
    )
    imp = dataclasses.replace(trial.pruning.imp, rounds=3)
    return dataclasses.replace(
        trial,
        dataset=dataclasses.replace(trial.dataset, data_dir=data_dir, download=False),
        train=dataclasses.replace(trial.train, epochs=1, milestones=(), batch_size=16),
        pruning=dataclasses.replace(trial.pruning, imp=imp),
        per_example_loss=False,
    )


def test_preset_imp_trial_prunes_shortcut_convs_and_fc(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    write_cifar10(tmp_path, per_batch=8, n_test=8, rng=np.random.default_rng(0))
    accept_written_md5s(monkeypatch, CIFAR10, tmp_path / "cifar-10-batches-py")
    runner = TrialRunner(_preset_trial(str(tmp_path)), device="cpu", num_threads=1)
    records = list(runner.run())
    assert len(records) == 4 and records[-1]["status"] == "done"

    weights = _openlth_prunable(runner.model)
    assert len(weights) == 22
    assert sum(p.numel() for p in runner.model.parameters()) == 272_474
    ranked = {f"{name}.weight" for name in runner.masks.layers}
    assert ranked == set(weights)  # shortcut convs and fc.weight ranked jointly with the rest
    zeros = {name: int((w == 0).sum()) for name, w in weights.items()}
    for name in ("layer2.0.shortcut_conv.weight", "layer3.0.shortcut_conv.weight", "fc.weight"):
        assert zeros[name] > 0, name
    total = sum(w.numel() for w in weights.values())
    alive = total
    for _ in range(3):  # ceil(20%) of the remaining weights per level, over all 22 tensors
        alive -= -(-alive // 5)
    assert sum(zeros.values()) == total - alive
    assert records[-1]["sparsity"] == (total - alive) / total

    imp_round = np.array([r["imp_round"] for r in records], dtype=float)
    ends = tuple(int(e) for e in np.flatnonzero(level_end_rows(imp_round)))
    assert ends == tuple(sorted(runner.method.level_ends())) == (0, 1, 2, 3)

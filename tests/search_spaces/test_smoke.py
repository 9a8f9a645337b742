"""``smoke_spec``: every arm of each preset kept, its scale shrunk, and its rules still holding."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from search_spaces.expand import expand
from search_spaces.presets import list_presets
from search_spaces.smoke import SMOKE_EPOCHS, smoke_spec
from search_spaces.spec import load_spec, spec_from_dict
from trainables import datasets, models
from trainables.config import TrialConfig
from trainables.errors import UserError
from trainables.pruning.schedule import plan_schedule

PRESETS = list_presets()
# What smoke_spec changes in a trial; everything else of it is the arm, and stays.
SHRUNK = {
    "dataset": ("max_examples", "synthetic", "download"),
    "model": ("width",),
    "train": ("epochs", "milestones"),
    "pruning": ("layers",),
    "flatness": ("epochs", "subset_size", "top_k", "power_iters"),
}


def _arm(cfg: TrialConfig) -> str:
    d = cfg.to_dict()
    for section, names in SHRUNK.items():
        for name in names:
            d[section].pop(name)
    for name in ("rounds", "rewind_epoch"):
        d["pruning"]["imp"].pop(name)
    return json.dumps(d, sort_keys=True)


@pytest.fixture(scope="module")
def no_data(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("no-data"))


def _smoke(preset: str, data_dir: str, notes: list | None = None):
    spec = load_spec(preset, overrides=[f"dataset.data_dir={data_dir}"])
    return spec, smoke_spec(spec, None if notes is None else notes.append)


@pytest.mark.parametrize("preset", PRESETS)
def test_smoke_keeps_every_arm_and_nothing_else_changes(preset, no_data):
    spec, small = _smoke(preset, no_data)
    full = [c for c in expand(spec).trials if c.seed == spec.seeds[0]]
    trials = expand(small).trials
    assert sorted(map(_arm, trials)) == sorted(map(_arm, full))
    assert small.name == f"{preset}-smoke" and small.seeds == spec.seeds[:1]
    assert small.fits == spec.fits and small.storage == spec.storage
    assert (small.resources.cpu, small.resources.gpu, small.retries) == (1.0, 0.0, 0)
    assert smoke_spec(spec).hash == small.hash  # deterministic
    assert spec_from_dict(small.to_dict()) == small  # what `show --smoke` prints loads back


@pytest.mark.parametrize("preset", PRESETS)
def test_smoke_shrinks_scale_and_every_event_still_happens(preset, no_data):
    spec, small = _smoke(preset, no_data)
    by_arm = {_arm(c): c for c in expand(spec).trials}
    for cfg in expand(small).trials:
        full = by_arm[_arm(cfg)]
        assert cfg.train.epochs == min(SMOKE_EPOCHS, full.train.epochs)
        assert len(cfg.train.milestones) == len(full.train.milestones)
        assert len(cfg.flatness.epochs) == len(full.flatness.epochs)
        on_disk = full.dataset.name == "mnist1d"  # generated offline: never stood in for
        assert cfg.dataset.max_examples == 128 and cfg.dataset.synthetic == (not on_disk)
        assert 0 < cfg.model.width <= 8
        if cfg.pruning.method == "imp":
            assert 1 <= cfg.pruning.imp.rounds <= 2
        if cfg.pruning.method == "schedule":
            names = [x.name for x in cfg.pruning.layers]
            assert names == [x.name for x in full.pruning.layers if x.name in names]
            assert _event_epochs(cfg), "no unit removed at the smoke width"


def _event_epochs(cfg: TrialConfig) -> tuple[int, ...]:
    """The epochs at which the trial's schedule removes units, on its model at its width."""
    info = datasets.get(cfg.dataset.name)
    with torch.device("meta"):
        model = models.build_model(cfg.model.name, cfg.model.width, info.input_shape, 10)
    layers = model.prunable_layers()
    if cfg.pruning.granularity == "filter":
        units = {n: m.weight.shape[0] for n, m in layers.items()}
    else:
        units = {n: m.weight.numel() for n, m in layers.items()}
    return plan_schedule(cfg.pruning.layers, units, cfg.pruning.period).event_epochs


def test_epoch_numbers_scale_by_one_factor():
    """vgg11: 325 epochs -> 4, so f = 4/325: milestones [150, 300] -> [1, 3], ends 150 -> 1 and
    275 -> 3, starts 3..6 -> 0; the scratch arm stays at epoch 0; flatness epoch 314 -> 3."""
    small = smoke_spec(load_spec("bartoldson2020-vgg11"))
    assert small.train.epochs == 4 and small.train.milestones == (1, 3)
    pruned, scratch = small.pruning.values
    assert [(x.start_epoch, x.end_epoch) for x in pruned.layers] == [(0, 1)] * 3 + [(0, 3)]
    assert {(x.start_epoch, x.end_epoch) for x in scratch.layers} == {(0, 0)}
    flat = smoke_spec(load_spec("bartoldson2020-flatness")).flatness
    assert (flat.epochs, flat.subset_size, flat.top_k, flat.power_iters) == ((3,), 64, 2, 3)
    imp = smoke_spec(load_spec("jin2022-imp"))  # 160 -> 4: milestones [80, 120] -> [2, 3]
    rounds = {p.imp.rounds for p in imp.pruning.values}
    assert (imp.train.epochs, imp.train.milestones, rounds) == (4, (2, 3), {2})


def test_default_layers_are_listed_and_shared_by_the_models():
    """resnet-sgd crosses resnet20 and resnet56 with their (empty = paper) schedules: the smoke
    spec lists the 18 block convs both have (resnet20's), 10% from epoch 40 * 4/165 = 0 to 2."""
    small = smoke_spec(load_spec("bartoldson2020-resnet-sgd"))
    layers = small.pruning.layers
    assert len(layers) == 18 and layers[0].name == "layer1.0.conv1"
    assert {(x.final_fraction, x.start_epoch, x.end_epoch) for x in layers} == {(0.1, 0, 2)}


def test_grids_stay_distinct_and_short_specs_keep_their_epochs(tmp_path):
    spec = load_spec(
        "quickstart",
        overrides=[
            "model.width=[4,16,32]",
            "train.epochs=[4,60]",
            "pruning.layers=[{name: fc1, final_fraction: 0.5, start_epoch: 1, end_epoch: 3}]",
            f"dataset.data_dir={tmp_path}",
        ],
    )
    small = smoke_spec(spec)
    assert small.model.width.values == (4, 8, 9)
    assert small.train.epochs.values == (1, 4)  # 4 * 4/60 rounds up to 1; 60 -> 4
    assert small.pruning.layers == (
        dataclasses.replace(spec.pruning.layers[0], start_epoch=0, end_epoch=0),
    )
    short = [
        "train.epochs=3",
        "pruning.layers=[{name: fc1, final_fraction: 0.5, start_epoch: 0, end_epoch: 2}]",
    ]
    small = smoke_spec(load_spec("quickstart", overrides=short))
    assert small.train.epochs == 3 and small.pruning.layers[0].end_epoch == 2


def test_absent_data_is_synthetic_with_one_note(no_data):
    notes: list[str] = []
    _, small = _smoke("bartoldson2020-vgg11", no_data, notes)
    assert small.dataset.synthetic and not small.dataset.download
    folder = f"{no_data}/cifar-10-batches-py"
    assert notes == [
        f"--smoke: CIFAR-10 is not in {folder}: training on synthetic data of its shape and "
        "classes instead (the numbers say nothing about the paper)"
    ]


def test_data_on_disk_is_used_as_a_subset(tmp_path):
    from cifar_files import write_cifar10

    write_cifar10(tmp_path, per_batch=2, n_test=2, rng=np.random.default_rng(0))
    notes: list[str] = []
    _, small = _smoke("bartoldson2020-vgg11", str(tmp_path), notes)
    assert not small.dataset.synthetic and small.dataset.max_examples == 128 and notes == []


def test_models_without_a_shared_default_schedule_are_a_user_error():
    # ResNet-20's paper schedule prunes block convs, VGG11's its conv5..conv8: no common layer.
    overrides = ["model.name=[resnet20, vgg11_bn]", "train.epochs=300"]
    spec = load_spec("bartoldson2020-resnet-sgd", overrides=overrides)
    with pytest.raises(UserError, match="pruning.layers: --smoke scales the models' paper"):
        smoke_spec(spec)


def test_a_grid_of_layer_lists_is_scaled_list_by_list():
    layers = (
        "[[{name: fc1, final_fraction: 0.5, start_epoch: 30, end_epoch: 45}], "
        "[{name: fc2, final_fraction: 0.5, start_epoch: 15, end_epoch: 59}]]"
    )
    small = smoke_spec(load_spec("quickstart", overrides=[f"pruning.layers={layers}"]))
    first, second = small.pruning.layers.values  # 60 epochs -> 4: f = 1/15
    assert [(x.name, x.start_epoch, x.end_epoch) for x in first + second] == [
        ("fc1", 2, 3),
        ("fc2", 1, 3),
    ]

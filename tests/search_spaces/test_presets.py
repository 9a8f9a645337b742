"""The shipped presets: they load, and the paper presets match papers.md's tables."""

from __future__ import annotations

import pytest

from search_spaces.expand import expand
from search_spaces.model_check import model_facts
from search_spaces.presets import list_presets, preset_description, preset_text
from search_spaces.spec import load_spec, spec_from_yaml
from search_spaces.sweeps import Grid
from trainables.config import LayerSchedule, value_at
from trainables.errors import UserError

REQUIRED = {
    "quickstart",
    "bartoldson2020-vgg11",
    "bartoldson2020-resnet-sgd",
    "bartoldson2020-noise",
    "bartoldson2020-flatness",
    "jin2022-imp",
}
VGG11_LAYERS = (  # papers.md 1.3.2: fractions [.3, .3, .3, .9], start [3, 4, 5, 6], end [150, 150, 150, 275]
    LayerSchedule("conv5", 0.3, 3, 150),
    LayerSchedule("conv6", 0.3, 4, 150),
    LayerSchedule("conv7", 0.3, 5, 150),
    LayerSchedule("conv8", 0.9, 6, 275),
)


def test_presets_listed_and_described() -> None:
    names = list_presets()
    assert REQUIRED <= set(names) and list(names) == sorted(names)
    for name in names:
        assert preset_description(name)
        spec = spec_from_yaml(preset_text(name), name)
        assert spec.name == name
        if name != "quickstart":  # a paper preset says where its facts were checked
            text = preset_text(name)
            assert "docs/reproducing.md" in text or "papers.md" in text


def test_unknown_preset_text() -> None:
    with pytest.raises(UserError, match="unknown preset 'nope'; choose one of: "):
        preset_text("nope")


def _adam_recipe(spec, eval_batch: int = 256) -> None:  # papers.md 1.3.1, "Adam" column
    t = spec.train
    assert (t.optimizer, t.lr, t.weight_decay, t.milestones, t.gamma, t.epochs) == (
        "adam",
        1e-3,
        0.0,
        (150, 300),
        0.1,
        325,
    )
    assert (t.batch_size, t.eval_batch_size) == (128, eval_batch)
    assert (spec.dataset.name, spec.dataset.augment, spec.model.name) == (
        "cifar10",
        False,
        "vgg11_bn",
    )


def _sgd_recipe(spec) -> None:  # papers.md 1.3.1, "SGD" column
    t = spec.train
    assert (t.optimizer, t.lr, t.momentum, t.weight_decay, t.milestones, t.gamma, t.epochs) == (
        "sgd", 0.1, 0.9, 1e-4, (83, 125), 0.1, 165,
    )  # fmt: skip
    assert (t.batch_size, t.eval_batch_size, spec.dataset.augment) == (128, 256, True)


def test_vgg11_matches_fig2_fig3() -> None:
    spec = load_spec("bartoldson2020-vgg11")
    _adam_recipe(spec)
    p = spec.pruning
    assert (p.method, p.granularity, p.score) == ("schedule", "filter", "l2")
    assert p.target == Grid(("smallest", "random", "largest"))
    assert p.period == Grid((4, 20, 40, 60, 100, 200, 300))
    assert p.layers == VGG11_LAYERS
    assert model_facts("vgg11_bn", 0, "cifar10")[1] == VGG11_LAYERS  # the model's paper default
    events = [len(range(6, 275 + 1, r)) for r in p.period.values]  # papers.md 1.3.3, last layer
    assert events == [68, 14, 7, 5, 3, 2, 1]


def test_resnet_sgd_matches_fig4() -> None:
    spec = load_spec("bartoldson2020-resnet-sgd")
    _sgd_recipe(spec)
    p = spec.pruning
    assert spec.model.name == Grid(("resnet20", "resnet56"))
    assert (p.target, p.score, p.granularity, p.period, p.layers) == (
        "smallest",
        "l1",
        "filter",
        Grid((30, 60)),
        (),
    )
    for model, n in (("resnet20", 18), ("resnet56", 54)):  # every block conv, 10%, epochs 40-100
        names, default, _ = model_facts(model, 0, "cifar10")
        assert len(default) == n and all(layer.name.startswith("layer") for layer in default)
        assert {
            (layer.final_fraction, layer.start_epoch, layer.end_epoch) for layer in default
        } == {(0.1, 40, 100)}
    assert [len(range(40, 101, r)) for r in p.period.values] == [3, 2]


def test_resnet18_sgd_matches_fig4() -> None:
    spec = load_spec("bartoldson2020-resnet18-sgd")
    _sgd_recipe(spec)
    names, _, _ = model_facts("resnet18", 0, "cifar10")
    block_convs = [n for n in names if n.startswith("layer") and n.endswith((".conv1", ".conv2"))]
    assert [layer.name for layer in spec.pruning.layers] == block_convs and len(block_convs) == 16
    schedule = {(x.final_fraction, x.start_epoch, x.end_epoch) for x in spec.pruning.layers}
    assert schedule == {(0.1, 40, 100)}
    assert (spec.pruning.target, spec.pruning.score, spec.pruning.period) == (
        "smallest",
        "l1",
        Grid((30, 60)),
    )


def test_noise_matches_fig5_and_d2() -> None:
    spec = load_spec("bartoldson2020-noise")
    _adam_recipe(spec, eval_batch=128)
    p = spec.pruning
    assert (p.target, p.score, p.period, p.layers) == (
        "largest",
        "l2",
        40,
        VGG11_LAYERS,
    )  # F2_VGG_4's schedule
    trials = expand(spec).pruned
    steps = {(t.pruning.perturbation.mode, t.pruning.perturbation.variant): set() for t in trials}
    for t in trials:
        steps[(t.pruning.perturbation.mode, t.pruning.perturbation.variant)].add(
            t.pruning.perturbation.steps
        )
    # papers.md 1.2 legend table and 5: training steps 0 / 50 / 1105 (iter), 89 / 630 / 1220 / 2480
    assert steps == {
        ("none", "iter"): {0},
        ("zeroing", "iter"): {0, 50, 1105},
        ("gaussian", "iter"): {0, 50, 1105},
        ("zeroing", "cumulative"): {89, 630, 1220, 2480},
    }


def test_noise_steps_follow_the_official_conversion() -> None:
    from trainables.pruning.perturbation import official_passes_to_training_steps as convert

    assert [convert(x, 79) for x in (0, 129, 1500)] == [0, 50, 1105]
    assert [convert(x, 40) for x in (129, 750, 1500, 3000)] == [89, 630, 1220, 2480]


def test_flatness_matches_fig6() -> None:
    spec = load_spec("bartoldson2020-flatness")
    _adam_recipe(spec)
    f = spec.flatness
    assert (f.epochs, f.subset_size, f.split, f.top_k, f.power_iters, f.eps_delta) == (
        (314,),
        512,
        "test",
        100,
        20,
        0.1,
    )
    trials = expand(spec).pruned
    assert {(t.pruning.target, t.pruning.period) for t in trials} == {
        ("smallest", 4), ("smallest", 40), ("random", 40), ("largest", 40),
    }  # fmt: skip
    assert {t.pruning.layers for t in trials} == {VGG11_LAYERS}
    assert all(t.flatness.epochs == (314,) for t in expand(spec).trials)  # baselines measured too


# facebookresearch/open_lth, models/cifar_resnet.py::Model.default_hparams (training and pruning
# hparams of cifar_resnet_20), datasets/cifar10.py::Dataset (augmentation, Normalize) and
# datasets/registry.py::get (transformation_seed unset -> 0), written out as our field values.
OPENLTH_CIFAR_RESNET_20 = {
    "model.name": "openlth_resnet20",  # model_name cifar_resnet_20 (kaiming_normal, BN uniform)
    "dataset.name": "cifar10",
    "dataset.augment": True,  # RandomHorizontalFlip, RandomCrop(32, 4)
    "dataset.normalization": "imagenet",  # Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    "dataset.label_noise_seed": 0,  # seed = transformation_seed or 0
    "train.optimizer": "sgd",
    "train.lr": 0.1,
    "train.momentum": 0.9,
    "train.nesterov": False,
    "train.weight_decay": 1e-4,
    "train.milestones": (80, 120),  # milestone_steps 80ep,120ep
    "train.gamma": 0.1,
    "train.epochs": 160,  # training_steps 160ep
    "train.batch_size": 128,
    "pruning.method": "imp",
    "pruning.granularity": "weight",  # sparse_global: unstructured
    "pruning.score": "magnitude",
    "pruning.scope": "global",
    "pruning.imp.fraction": 0.2,  # pruning_fraction
}


def test_jin_matches_openlth_recipe() -> None:
    spec = load_spec("jin2022-imp")
    for trial in expand(spec).pruned:
        assert {k: value_at(trial, k) for k in OPENLTH_CIFAR_RESNET_20} == OPENLTH_CIFAR_RESNET_20
    p = spec.pruning
    assert spec.dataset.label_noise_fraction == Grid((0.0, 0.1, 0.2, 0.4))
    assert (p.imp.rounds, p.imp.rewind) == (16, "lr")
    assert p.imp.control == Grid(("none", "extended_dense"))
    assert round(0.8**p.imp.rounds, 4) == 0.0281  # density after 16 rounds
    assert (spec.generalization, spec.dataset.validation_fraction) == ("val_selected", 0.1)
    text = preset_text("jin2022-imp")
    assert "papers.md" not in text and "UNVERIFIED against the PDF" in text


@pytest.mark.slow
def test_quickstart_costliest_trial_runs_to_the_end() -> None:
    """The costliest quickstart trial (20 events) runs all 60 epochs; its time is measured by
    bench/train_overhead.py, not asserted here."""
    import torch

    from trainables.loop import TrialRunner

    torch.set_num_threads(1)
    plan = expand(load_spec("quickstart"))
    trial = next(t for t in plan.pruned if t.pruning.period == 1 and t.pruning.target == "largest")
    records = list(TrialRunner(trial, device="cpu", num_threads=1).run())
    assert len(records) == 60 and records[-1]["status"] == "done"
    assert sum(r["is_event"] for r in records) == 20

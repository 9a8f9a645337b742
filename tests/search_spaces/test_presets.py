"""The shipped presets: they load, and the paper presets match the official configurations.

The official values are written here from bbartoldson/GeneralizationStabilityTradeoff's
``config.py`` (cfg names in each test) and ``scripts_for_experiments/*.sh`` (optimizer, LR,
epochs).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from search_spaces.expand import expand
from search_spaces.presets import list_presets, preset_description, preset_text
from search_spaces.spec import load_spec, spec_from_yaml
from search_spaces.sweeps import Grid
from trainables.cross_rules import value_at
from trainables.errors import UserError
from trainables.models import schedule_layers
from trainables.pruning.schedule import LayerSchedule, schedule_summary

REQUIRED = {
    "quickstart",
    "bartoldson2020-vgg11",
    "bartoldson2020-resnet-sgd",
    "bartoldson2020-resnet18",
    "bartoldson2020-resnet18-c1",
    "bartoldson2020-ebn",
    "bartoldson2020-ebn-resnet18",
    "bartoldson2020-noise",
    "bartoldson2020-flatness",
    "jin2022-imp",
    "mini-bartoldson2020-flatness",
    "mini-bartoldson2020-noise",
    "mini-jin2022-imp",
}
# The names of the project's internal notes (never cited by the repository; see
# tests/test_citations.py), assembled so that this file does not match its own search.
INTERNAL_NOTES = ("papers" + ".md", "performance" + "-notes", "ray-optuna" + "-notes")
REPRODUCING = Path(__file__).resolve().parents[2] / "docs" / "reproducing.md"


def _layers(names, fractions, starts, ends) -> tuple[LayerSchedule, ...]:
    """A cfg's prune_frac / prune_start_epoch / prune_end_epoch, in forward order."""
    return tuple(map(LayerSchedule, names, fractions, starts, ends))


VGG11 = ("conv5", "conv6", "conv7", "conv8")  # features 15, 18, 22, 25
LAYER4 = ("layer4.0.conv1", "layer4.0.conv2", "layer4.1.conv1", "layer4.1.conv2")
# F2_VGG_1..4, F3_*, FB2_VGG_*: [.3, .3, .3, .9], start [3, 4, 5, 6], end [150, 150, 150, 275]
VGG11_LAYERS = _layers(VGG11, (0.3, 0.3, 0.3, 0.9), (3, 4, 5, 6), (150, 150, 150, 275))
# F2_VGG_5 (scratch_prune): the same fractions, start and end 0
VGG11_SCRATCH = _layers(VGG11, (0.3, 0.3, 0.3, 0.9), (0,) * 4, (0,) * 4)
# F2_RN_1..3: [.25, .4, .25, .95], start [7, 8, 9, 10], end [150, 150, 170, 275]
RN18_LAYERS = _layers(LAYER4, (0.25, 0.4, 0.25, 0.95), (7, 8, 9, 10), (150, 150, 170, 275))


def test_presets_listed_and_described() -> None:
    names = list_presets()
    assert REQUIRED <= set(names) and list(names) == sorted(names)
    sections = {
        line[3:].strip() for line in REPRODUCING.read_text().splitlines() if line[:3] == "## "
    }
    for name in names:
        assert preset_description(name)
        spec = spec_from_yaml(preset_text(name), name)
        assert spec.name == name
        assert name in sections, f"docs/reproducing.md has no section '## {name}'"
        assert not any(note in preset_text(name) for note in INTERNAL_NOTES)
        if name != "quickstart":  # a paper preset says where its facts were checked
            assert "docs/reproducing.md" in preset_text(name)


def test_unknown_preset_text() -> None:
    with pytest.raises(UserError, match="unknown preset 'nope'; choose one of: "):
        preset_text("nope")


def _adam_recipe(spec, eval_batch: int = 256, model: str = "vgg11_bn") -> None:
    """Figure_2.sh and friends: --adam --lr 0.001 --epochs 325 (batch 128, test batch 256, no
    --augment); config.py: lr_schedule [150, 300], weight_decay 0 (MultiStepLR's gamma 0.1)."""
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
    assert (spec.dataset.name, spec.dataset.augment, spec.model.name) == ("cifar10", False, model)


def _arms(spec) -> set[tuple]:
    """(score, target, period, scratch, layers) of each pruned trial config."""
    return {
        (p.score, p.target, p.period, p.scratch, p.layers)
        for p in (t.pruning for t in expand(spec).pruned)
    }


def test_vgg11_matches_fig2_fig3() -> None:
    spec = load_spec("bartoldson2020-vgg11")
    _adam_recipe(spec)
    targets, periods = ("smallest", "random", "largest"), (4, 20, 40, 60, 100, 200, 300)
    scheduled = {("l2", t, r, False, VGG11_LAYERS) for t in targets for r in periods}  # F3_*_r
    assert _arms(spec) == scheduled | {("l2", "smallest", 4, True, VGG11_SCRATCH)}  # + F2_VGG_5
    assert {t.pruning.granularity for t in expand(spec).pruned} == {"filter"}
    assert (
        schedule_layers((), "vgg11_bn", 0, "cifar10") == VGG11_LAYERS
    )  # the model's paper default
    events = [len(range(6, 275 + 1, r)) for r in periods]  # the last layer's events per period
    assert events == [68, 14, 7, 5, 3, 2, 1]
    plan = expand(spec)
    assert (len(plan.pruned), len(plan.trials)) == (22 * 5, 22 * 5 + 5)


def test_resnet18_matches_fig2() -> None:
    spec = load_spec("bartoldson2020-resnet18")
    _adam_recipe(spec, model="resnet18")
    assert _arms(spec) == {  # F2_RN_1 (Prune_S, period 4), F2_RN_2 (Prune_S, 40), F2_RN_3 (Prune_L)
        ("activations", "smallest", 4, False, RN18_LAYERS),
        ("activations", "smallest", 40, False, RN18_LAYERS),
        ("activations", "largest", 40, False, RN18_LAYERS),
    }
    assert schedule_layers((), "resnet18", 0, "cifar10") == RN18_LAYERS  # the model's paper default
    plan = expand(spec)
    assert (len(plan.pruned), len(plan.trials)) == (30, 40)  # + F2_RN_0, 10 replicates


def test_resnet18_c1_matches_table_c1() -> None:
    spec = load_spec("bartoldson2020-resnet18-c1")
    _adam_recipe(spec, model="resnet18")
    tc1 = _layers(LAYER4, (0.25, 0.8, 0.25, 0.95), (7, 8, 9, 10), (150, 150, 170, 275))
    assert _arms(spec) == {  # TC1_1, TC1_2, TC1_3
        ("activations", "smallest", 4, False, tc1),
        ("activations", "smallest", 40, False, tc1),
        ("activations", "largest", 40, False, tc1),
    }
    assert (len(expand(spec).pruned), len(expand(spec).trials)) == (30, 40)


def test_ebn_presets_match_fig_b2() -> None:
    vgg = load_spec("bartoldson2020-ebn")
    _adam_recipe(vgg)
    assert _arms(vgg) == {  # FB2_VGG_1..3, scoring 'EBN'
        ("ebn", "smallest", 4, False, VGG11_LAYERS),
        ("ebn", "smallest", 40, False, VGG11_LAYERS),
        ("ebn", "largest", 40, False, VGG11_LAYERS),
    }
    resnet = load_spec("bartoldson2020-ebn-resnet18")
    _adam_recipe(resnet, model="resnet18")
    layers = _layers(LAYER4, (0.25, 0.4, 0.25, 0.95), (3, 4, 5, 6), (150, 150, 170, 275))
    assert _arms(resnet) == {  # FB2_RN_1..3, scoring 'EBN_alt'
        ("ebn_signed", "smallest", 4, False, layers),
        ("ebn_signed", "smallest", 40, False, layers),
        ("ebn_signed", "largest", 40, False, layers),
    }
    for spec in (vgg, resnet):
        assert (len(expand(spec).pruned), len(expand(spec).trials)) == (30, 40)


# bbartoldson/GeneralizationStabilityTradeoff, Fig. 4's recipe as our field values.
# scripts_for_experiments/Figure_4.sh: `experiments.py -r F4_{r}_{p} --arch resnet{r} --epochs 165
# -d cifar10 --augment` for r in 18, 20, 56, p in 0, 1, 10 times; experiments.py's argparse
# defaults: --lr 0.1, -b 128, -t 256, no --adam; utils.py::get_optim_and_scheduler:
# SGD(lr, momentum=0.9, weight_decay=cfg['weight_decay']), no Nesterov, MultiStepLR(cfg
# ['lr_schedule']) with its default gamma 0.1; utils.py::get_train_test_data: RandomCrop(32,
# padding=4) then RandomHorizontalFlip, Normalize with CIFAR-10's statistics (our `paper`
# choice), no label noise, no validation split; config.py's F4 cfgs: weight_decay 0.0001,
# lr_schedule [83, 125].
OFFICIAL_F4_RECIPE = {
    "dataset.name": "cifar10",
    "dataset.augment": True,
    "dataset.normalization": "paper",
    "dataset.label_noise_fraction": 0.0,
    "dataset.validation_fraction": 0.0,
    "train.optimizer": "sgd",
    "train.lr": 0.1,
    "train.momentum": 0.9,
    "train.nesterov": False,
    "train.weight_decay": 1e-4,
    "train.milestones": (83, 125),
    "train.gamma": 0.1,
    "train.epochs": 165,
    "train.batch_size": 128,
    "train.eval_batch_size": 256,
}
F4_REPLICATES = 10  # Figure_4.sh: for i in {1..10}


def _official_f4_arms(depth: int) -> set[tuple]:
    """(score, target, period, scratch, layers) of config.py's F4_{depth}_0 and F4_{depth}_1.

    Both cfgs: prune_frac [.1] * (depth - 2), prune_start_epoch [40] * (depth - 2),
    prune_end_epoch [100] * (depth - 2), scoring 'L1', target_large False (Prune_S);
    retrain_period 30 (_0) or 60 (_1). The depth - 2 layers are those models.py hands a prune_frac:
    ``resnetxx`` (ResNet-20/56) every conv followed by a BatchNorm in layer1..layer3 (the option-A
    shortcuts have neither), ``resnet18`` those of layer1..layer4 less the three 1x1 shortcut
    convs: conv1 and conv2 of every basic block (resnet2056_arch.py: 3 stages of (depth - 2) / 6
    blocks; resnet18_arch.py: 4 stages of 2), in forward order.
    """
    stages, blocks = (4, 2) if depth == 18 else (3, (depth - 2) // 6)
    names = [
        f"layer{s}.{b}.conv{c}" for s in range(1, stages + 1) for b in range(blocks) for c in (1, 2)
    ]
    n = depth - 2
    assert len(names) == n
    layers = _layers(names, (0.1,) * n, (40,) * n, (100,) * n)
    return {("l1", "smallest", period, False, layers) for period in (30, 60)}


def _check_fig4(preset: str, depths: tuple[int, ...]) -> None:
    """Every trial has the official recipe; each model's pruned trials are its two F4 cfgs x 10
    seeds; one unpruned baseline per model and seed."""
    plan = expand(load_spec(preset))
    for trial in plan.trials:
        assert {k: value_at(trial, k) for k in OFFICIAL_F4_RECIPE} == OFFICIAL_F4_RECIPE
    for depth in depths:
        pruned = [t for t in plan.pruned if t.model.name == f"resnet{depth}"]
        assert {(t.model.width, t.pruning.granularity) for t in pruned} == {(0, "filter")}
        arms = {
            (p.score, p.target, p.period, p.scratch, p.layers) for p in (t.pruning for t in pruned)
        }
        assert arms == _official_f4_arms(depth)
        assert sorted(t.seed for t in pruned) == sorted(2 * list(range(F4_REPLICATES)))
    assert len(plan.trials) - len(plan.pruned) == F4_REPLICATES * len(depths)
    for trial in plan.pruned:  # utils.py::pruning_scheduler: range(start, end + 1, period)
        p = trial.pruning
        official = {e for x in p.layers for e in range(x.start_epoch, x.end_epoch + 1, p.period)}
        assert official == ({40, 70, 100} if p.period == 30 else {40, 100})
        assert schedule_summary(p.layers, p.period)["num_events"] == len(official)


def test_resnet_sgd_matches_fig4() -> None:
    _check_fig4("bartoldson2020-resnet-sgd", (20, 56))


def test_resnet18_sgd_matches_fig4() -> None:
    _check_fig4("bartoldson2020-resnet18-sgd", (18,))
    # The preset's comment: the filters the official rule removes (N - ceil(0.9 N) per layer,
    # models.py::_prune_layer) hold 9.7% of ResNet-18's parameters.
    import torch

    from trainables.models import build_model

    with torch.device("meta"):
        model = build_model("resnet18", 0, (3, 32, 32), 10)
    layers = model.prunable_layers()
    names = [layer.name for layer in load_spec("bartoldson2020-resnet18-sgd").pruning.layers]
    removed = sum(
        (w.shape[0] - math.ceil(0.9 * w.shape[0])) * w[0].numel()
        for w in (layers[n].weight for n in names)
    )
    assert round(100 * removed / sum(p.numel() for p in model.parameters()), 1) == 9.7


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
    # the legends' training batches: figures_and_tables/Figure_5.py ("Zeroing / Gaussian 1, 50,
    # 1105"; the "1" run, N = 0, perturbs one test batch and no training batch) and Figure_D2.py
    # ("Zeroing 89 / 630 / 1220 / 2480", utils.py::calc_n_batches_of_training_noise at E = 40)
    assert steps == {
        ("conv_mask", "iter"): {0},
        ("zeroing", "iter"): {0, 50, 1105},
        ("gaussian", "iter"): {0, 50, 1105},
        ("zeroing", "cumulative"): {89, 630, 1220, 2480},
    }
    # the noise windows count the official passes, test batches included (docs/reproducing.md;
    # the default, idle for conv_mask)
    assert all(t.pruning.perturbation.eval_passes == "official" for t in trials)


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
    assert _arms(spec) == {  # F2_VGG_1..5
        ("l2", "smallest", 4, False, VGG11_LAYERS),
        ("l2", "smallest", 40, False, VGG11_LAYERS),
        ("l2", "random", 40, False, VGG11_LAYERS),
        ("l2", "largest", 40, False, VGG11_LAYERS),
        ("l2", "smallest", 4, True, VGG11_SCRATCH),
    }
    plan = expand(spec)
    assert (len(plan.pruned), len(plan.trials)) == (50, 60)  # + F2_VGG_0, 10 replicates
    assert all(t.flatness.epochs == (314,) for t in plan.trials)  # baselines measured too


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
    "pruning.granularity": "weight",  # sparse_global: unstructured; IMP always ranks |w| globally
    "pruning.imp.fraction": 0.2,  # pruning_fraction
}


def test_jin_matches_openlth_recipe() -> None:
    spec = load_spec("jin2022-imp")
    for trial in expand(spec).pruned:
        # the seed of the relabelled subset acts only when some labels are relabelled
        keys = [k for k in OPENLTH_CIFAR_RESNET_20 if k != "dataset.label_noise_seed"]
        if trial.dataset.label_noise_fraction > 0:
            keys = list(OPENLTH_CIFAR_RESNET_20)
        assert {k: value_at(trial, k) for k in keys} == {
            k: OPENLTH_CIFAR_RESNET_20[k] for k in keys
        }
    noise = {
        t.dataset.label_noise_fraction: t.dataset.label_noise_seed for t in expand(spec).pruned
    }
    assert noise == {0.0: -1, 0.1: 0, 0.2: 0, 0.4: 0}  # the clean arm has no noise seed
    lrr, wr = spec.pruning.values
    assert (lrr.imp.rounds, lrr.imp.rewind) == (16, "lr")
    # IMP, the longer-training control and the smaller-size control (Jin et al.'s two factors)
    assert lrr.imp.control == Grid(("none", "extended_dense", "sparse_from_start"))
    # weight rewinding to the initialisation: OpenLTH's default, without --rewinding_steps
    assert (wr.imp.rounds, wr.imp.rewind, wr.imp.rewind_epoch, wr.imp.control) == (
        16, "weight", 0, "none",
    )  # fmt: skip
    assert round(0.8**lrr.imp.rounds, 4) == 0.0281  # density after 16 rounds
    assert spec.generalization == "val_selected"
    assert {d.validation_fraction for d in spec.dataset.values} == {0.1}
    assert "UNVERIFIED against the PDF" in preset_text("jin2022-imp")


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

"""plan_summary: counts, epochs and the documented cost model."""

from __future__ import annotations

import dataclasses

import pytest
from spec_examples import OPTUNA

from search_spaces import summary
from search_spaces.expand import expand
from search_spaces.spec import load_spec, spec_from_yaml
from search_spaces.summary import plan_summary, trial_seconds
from trainables.models import MODELS
from trainables.pruning.rounds import total_epochs


def test_quickstart_summary() -> None:
    summary = plan_summary(expand(load_spec("quickstart")))
    assert summary["trials"] == {"pruned": 27, "baselines": 3, "optuna": 0, "total": 30}
    assert summary["epochs"] == 30 * 60
    assert summary["resources_per_trial"] == {"cpu": 1.0, "gpu": 0.0}
    cpu_hours = 1800 * MODELS["mlp"].cpu_epoch_s / 3600
    assert summary["estimate"]["cpu_hours"] == pytest.approx(cpu_hours, abs=1e-3)


def test_wall_estimate_places_trials_on_free_slots_and_adds_overheads() -> None:
    plan = expand(load_spec("quickstart"))
    per_trial = 60 * MODELS["mlp"].cpu_epoch_s  # 4,000 training examples: the reference size
    # 30 equal trials on 2 slots: 15 rounds, each trial plus its overhead.
    makespan = 15 * (per_trial + summary.TRIAL_OVERHEAD_S)
    export = summary.EXPORT_S + 30 * summary.EXPORT_PER_TRIAL_S
    wall = summary.wall_estimate(plan, 2)
    assert wall == {
        "device": "cpu",
        "concurrency": 2,
        "seconds": pytest.approx(summary.RAY_START_S + makespan + export, abs=0.1),
    }
    assert wall["seconds"] < 300  # the 5-minute budget on 2 cores
    assert summary.wall_estimate(plan, 1)["seconds"] > 1.9 * makespan


def test_fractional_gpu_trials_share_their_gpu() -> None:
    spec = load_spec("bartoldson2020-flatness", overrides=["resources.gpu=0.5"])
    half = summary.wall_estimate(expand(spec), 2)["seconds"]
    spec = load_spec("bartoldson2020-flatness", overrides=["resources.gpu=1"])
    whole = summary.wall_estimate(expand(spec), 1)["seconds"]
    assert half == pytest.approx(whole, rel=0.01)  # two half-GPU trials = one GPU's worth


def test_imp_epochs_count_every_round() -> None:
    summary = plan_summary(expand(load_spec("jin2022-imp")))
    # IMP and extended dense: 17 rounds; sparse_from_start one phase more; weight rewinding to
    # epoch 0 trains full rounds too; the baselines one training
    epochs_160 = 12 * 17 + 12 * 17 + 12 * 18 + 12 * 17 + 12
    assert summary["epochs"] == epochs_160 * 160
    gpu = (
        epochs_160 * 160 * MODELS["openlth_resnet20"].gpu_epoch_s * 45_000 / 50_000 / 3600
    )  # 10% held out
    assert summary["estimate"]["gpu_hours"] == pytest.approx(gpu, abs=1e-3)
    assert summary["estimate"]["cpu_hours"] is None  # no CPU cost model for CIFAR ResNets


def test_flatness_adds_hvp_cost() -> None:
    summary = plan_summary(expand(load_spec("bartoldson2020-flatness")))
    per_trial = 325 + 2 * 100 * 20 * 512 / 50_000
    assert summary["estimate"]["gpu_hours"] == pytest.approx(60 * per_trial * 0.6 / 3600, abs=1e-3)


def test_optuna_trials_are_counted() -> None:
    summary = plan_summary(expand(spec_from_yaml(OPTUNA)))
    assert summary["trials"] == {"pruned": 0, "baselines": 3, "optuna": 24, "total": 27}
    assert summary["epochs"] == 3 * 12 + 24 * 12 * 2  # Optuna's base: IMP with 1 round


def test_imp_epochs_per_variant() -> None:
    trial_epochs = total_epochs
    base = load_spec("jin2022-imp")
    trial = expand(base).pruned[0]
    imp = trial.pruning.imp
    assert trial_epochs(trial) == 160 * 17
    weight = dataclasses.replace(imp, rewind="weight", rewind_epoch=10)
    assert trial_epochs(_with_imp(trial, weight)) == 160 + 16 * 150
    sparse = dataclasses.replace(imp, control="sparse_from_start")
    assert trial_epochs(_with_imp(trial, sparse)) == 160 * 17 + 160
    assert trial_epochs(expand(base).baselines[0]) == 160


def _with_imp(trial, imp):
    return dataclasses.replace(trial, pruning=dataclasses.replace(trial.pruning, imp=imp))


def test_a_model_without_an_estimate_plans_unknown_not_zero(monkeypatch) -> None:
    trial = expand(load_spec("bartoldson2020-vgg11")).pruned[0]
    assert trial_seconds(trial, "gpu") > 0
    monkeypatch.setitem(
        MODELS, "vgg11_bn", dataclasses.replace(MODELS["vgg11_bn"], gpu_epoch_s=None)
    )
    assert trial_seconds(trial, "gpu") is None
    assert plan_summary(expand(load_spec("bartoldson2020-vgg11")))["estimate"]["gpu_hours"] is None

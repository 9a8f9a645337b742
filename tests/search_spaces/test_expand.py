"""Expansion: exact trial counts per preset, matched baselines, deterministic random sampling."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
from spec_examples import OPTUNA, RANDOM

from search_spaces.expand import expand
from search_spaces.presets import list_presets
from search_spaces.spec import load_spec, spec_from_yaml
from trainables.config import PruningConfig, TrialConfig
from trainables.identity import baseline_key, trial_key

# (pruned, baselines, total) per preset; each total = grid x seeds + seeds per non-pruning config.
COUNTS = {
    "quickstart": (27, 3, 30),  # 3 targets x 3 periods x 3 seeds + 3
    "bartoldson2020-vgg11": (110, 5, 115),  # (3 targets x 7 periods + scratch) x 5 seeds + 5
    "bartoldson2020-resnet18": (30, 10, 40),  # 3 cfgs x 10 seeds + 10
    "bartoldson2020-resnet18-c1": (30, 10, 40),  # 3 cfgs x 10 seeds + 10
    "bartoldson2020-ebn": (30, 10, 40),  # 3 cfgs x 10 seeds + 10
    "bartoldson2020-ebn-resnet18": (30, 10, 40),  # 3 cfgs x 10 seeds + 10
    "bartoldson2020-resnet-sgd": (40, 20, 60),  # 2 models x 2 periods x 10 seeds + 2 x 10
    "bartoldson2020-resnet18-sgd": (20, 10, 30),  # 2 periods x 10 seeds + 10
    "bartoldson2020-noise": (110, 10, 120),  # (1 + 2 x 3 + 4) perturbations x 10 seeds + 10
    "bartoldson2020-flatness": (50, 10, 60),  # (1 + 3 + scratch) pruning cfgs x 10 seeds + 10
    "jin2022-imp": (48, 12, 60),  # 4 arms x 4 noise levels x 3 seeds + 4 x 3
    "mini-bartoldson2020-flatness": (25, 5, 30),  # (1 + 3 + scratch) cfgs x 5 seeds + 5
    "mini-bartoldson2020-noise": (40, 5, 45),  # (1 + 2 x 3 + 1) perturbations x 5 seeds + 5
    "mini-jin2022-imp": (30, 10, 40),  # 3 arms x 2 noise levels x 5 seeds + 2 x 5
}


def test_every_preset_has_a_count() -> None:
    assert set(COUNTS) == set(list_presets())


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_preset_trial_counts(name: str) -> None:
    plan = expand(load_spec(name))
    assert (len(plan.pruned), len(plan.baselines), len(plan.trials)) == COUNTS[name]
    assert plan.optuna is None
    assert len({trial_key(t) for t in plan.trials}) == len(plan.trials)


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_baselines_match_every_pruned_trial(name: str) -> None:
    spec = load_spec(name)
    plan = expand(spec)
    baselines = Counter((baseline_key(b), b.seed) for b in plan.baselines)
    assert all(n == 1 for n in baselines.values())  # one per seed and config
    assert all(b.pruning == PruningConfig() and b.is_baseline for b in plan.baselines)
    keys = {baseline_key(t) for t in plan.pruned}
    assert {k for k, _ in baselines} == keys
    assert set(baselines) == {(k, s) for k in keys for s in spec.seeds}
    for t in plan.pruned:  # a baseline differs from its trial in pruning and seed only
        assert t.is_baseline is False
        assert any(
            b.dataset == t.dataset and b.train == t.train and b.model == t.model
            for b in plan.baselines
        )


def test_baselines_come_first_and_order_is_deterministic() -> None:
    spec = load_spec("quickstart")
    plan = expand(spec)
    assert [t.is_baseline for t in plan.trials] == [True] * 3 + [False] * 27
    assert expand(load_spec("quickstart")).trials == plan.trials
    first = plan.pruned[:4]  # grid order: target slowest, then period, seeds innermost
    assert [(t.pruning.target, t.pruning.period, t.seed) for t in first] == [
        ("smallest", 1, 0), ("smallest", 1, 1), ("smallest", 1, 2), ("smallest", 4, 0),
    ]  # fmt: skip


def test_quickstart_follows_the_fixed_fraction_protocol() -> None:
    plan = expand(load_spec("quickstart"))
    layers = {t.pruning.layers for t in plan.pruned}
    assert len(layers) == 1  # every pruned trial removes the same final fraction
    (only,) = layers
    assert {layer.final_fraction for layer in only} == {0.41}
    events = Counter(
        len(range(layer.start_epoch, layer.end_epoch + 1, t.pruning.period))
        for t in plan.pruned
        for layer in only[:1]
    )
    assert events == {20: 9, 5: 9, 1: 9}
    assert {t.pruning.target for t in plan.pruned} == {"smallest", "random", "largest"}
    assert {t.dataset.label_noise_fraction for t in plan.trials} == {0.2}


def test_no_baselines_when_turned_off() -> None:
    spec = dataclasses.replace(load_spec("quickstart"), baselines=False)
    plan = expand(spec)
    assert len(plan.trials) == 27 and not plan.baselines


def test_grid_of_sections_is_a_union() -> None:
    plan = expand(load_spec("bartoldson2020-noise"))
    modes = Counter(
        (t.pruning.perturbation.mode, t.pruning.perturbation.variant, t.pruning.perturbation.steps)
        for t in plan.pruned
    )
    assert modes == {
        ("conv_mask", "iter", 0): 10,
        **{(m, "iter", s): 10 for m in ("zeroing", "gaussian") for s in (0, 50, 1105)},
        **{("zeroing", "cumulative", s): 10 for s in (89, 630, 1220, 2480)},
    }
    assert all(
        t.pruning.perturbation.restore == (t.pruning.perturbation.variant == "cumulative")
        for t in plan.pruned
    )


def test_random_search_is_presampled_deterministically() -> None:
    plan = expand(spec_from_yaml(RANDOM))
    assert (len(plan.pruned), len(plan.baselines)) == (
        2 * 5 * 2,
        5 * 2,
    )  # lr is not a pruning field
    assert expand(spec_from_yaml(RANDOM)).trials == plan.trials
    other = expand(spec_from_yaml(RANDOM.replace("seed: 7", "seed: 8")))
    assert {t.train.lr for t in other.trials} != {t.train.lr for t in plan.trials}
    lrs = {t.train.lr for t in plan.pruned}
    assert len(lrs) == 5 and all(1e-4 <= lr <= 1e-2 for lr in lrs)
    # each draw is crossed with the grid and the seeds: same draws for both targets
    by_target = {
        tgt: [(t.train.lr, t.pruning.period) for t in plan.pruned if t.pruning.target == tgt]
        for tgt in ("smallest", "largest")
    }
    assert by_target["smallest"] == by_target["largest"]


def test_int_distribution_includes_both_ends() -> None:
    plan = expand(spec_from_yaml(RANDOM.replace("num_samples: 5", "num_samples: 60")))
    assert {t.pruning.period for t in plan.pruned} == {1, 2, 3}


def test_random_duplicates_run_once() -> None:
    text = RANDOM.replace("lr: {loguniform: [1.0e-4, 1.0e-2]}", "lr: 1.0e-3").replace(
        "num_samples: 5", "num_samples: 40"
    )
    plan = expand(spec_from_yaml(text))
    assert len(plan.pruned) == 2 * 3 * 2  # targets x the 3 periods x seeds
    assert len(plan.baselines) == 2


def test_optuna_plan() -> None:
    plan = expand(spec_from_yaml(OPTUNA))
    opt = plan.optuna
    assert opt is not None
    assert opt.distributions == (
        ("pruning.imp.rounds", "int", (1, 3)),
        ("pruning.imp.fraction", "uniform", (0.1, 0.3)),
        ("pruning.imp.rewind", "choice", ("lr", "weight")),
    )
    assert (opt.num_samples, opt.seeds, opt.metric, opt.mode, opt.seed) == (
        8,
        (0, 1, 2),
        "test_acc",
        "max",
        5,
    )
    assert opt.num_trials == 24
    base = TrialConfig.from_dict(opt.base)
    assert (base.pruning.imp.rounds, base.pruning.imp.fraction, base.pruning.imp.rewind) == (
        1,
        0.1,
        "lr",
    )
    # only the baselines are fixed trials, and they match every Optuna trial
    assert [t.seed for t in plan.trials] == [0, 1, 2] and all(t.is_baseline for t in plan.trials)
    assert {baseline_key(t) for t in plan.trials} == {baseline_key(base)}


def test_random_draws_inside_a_grid_of_sections() -> None:
    spec = spec_from_yaml(
        """
name: g
model: {name: mlp}
train: {epochs: 20}
pruning:
  - {method: schedule, granularity: weight, score: magnitude, target: smallest, period: {int: [1, 4]}}
  - {method: schedule, granularity: weight, score: magnitude, target: [random, largest], period: 5}
search: {algorithm: random, num_samples: 3, seed: 1}
"""
    )
    plan = expand(spec)
    first = [t for t in plan.pruned if t.pruning.target == "smallest"]
    second = [t for t in plan.pruned if t.pruning.target != "smallest"]
    assert len(second) == 2  # no distribution in item 1: its 3 draws are identical, run once each
    assert 1 <= len(first) <= 3 and all(1 <= t.pruning.period <= 4 for t in first)
    assert {t.pruning.period for t in second} == {5}
    assert len(plan.baselines) == 1

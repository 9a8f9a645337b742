"""TrialConfig: strict parsing, content ids pinned by golden values, matched-baseline keys."""

from __future__ import annotations

import dataclasses

import pytest

from trainables.config import (
    FlatnessConfig,
    ModelConfig,
    TrialConfig,
    baseline_key,
    baseline_of,
    flatness_top_k,
    trial_id,
)

PRUNED = {"pruning": {"method": "schedule", "target": "largest", "period": 4}, "seed": 1}


def test_golden_ids():
    """Pinned: a new field with a default must never rename existing trials or studies."""
    assert trial_id(TrialConfig()) == "44136fa355b3"
    assert trial_id(TrialConfig.from_dict(PRUNED)) == "bba0cadce1a9"


def test_round_trip_and_baseline_matching():
    cfg = TrialConfig.from_dict(PRUNED)
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg
    base = baseline_of(cfg, seed=7)
    assert base.is_baseline and base.seed == 7 and not cfg.is_baseline
    assert baseline_key(base) == baseline_key(cfg) == baseline_key(TrialConfig())
    other = dataclasses.replace(cfg, model=ModelConfig(name="mlp"))
    assert baseline_key(other) != baseline_key(cfg)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"train": {"lr": "1e-3"}}, "train.lr: must be a number, got '1e-3'"),
        (
            {"pruning": {"target": "big"}},
            "pruning.target: must be one of smallest, largest, random",
        ),
        ({"seed": True}, "seed: must be an integer, got True"),
        ({"model": {"depth": 3}}, "model.depth: unknown key; valid keys: name, width"),
    ],
)
def test_strict_parsing_names_the_field(data, message):
    with pytest.raises(ValueError) as err:
        TrialConfig.from_dict(data)
    assert str(err.value).startswith(message)


def test_flatness_top_k_defaults_by_model_scale():
    small = TrialConfig()
    large = TrialConfig(model=ModelConfig(name="vgg11_bn"))
    assert flatness_top_k(small) == 10 and flatness_top_k(large) == 100
    explicit = dataclasses.replace(large, flatness=FlatnessConfig(top_k=3))
    assert flatness_top_k(explicit) == 3

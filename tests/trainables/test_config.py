"""TrialConfig: strict parsing, rules on the fields, content ids pinned by golden values."""

from __future__ import annotations

import dataclasses

import pytest

from trainables.config import ModelConfig, TrialConfig, baseline_of
from trainables.cross_rules import validate
from trainables.errors import UserError
from trainables.fields import help_of, rule_of
from trainables.identity import KeyCache, baseline_key, config_key, trial_key
from trainables.models import flatness_top_k

PRUNED = {"pruning": {"method": "schedule", "target": "largest", "period": 4}, "seed": 1}


def test_golden_ids():
    """Pinned: a new field with a default must never rename existing trials or studies."""
    assert trial_key(TrialConfig()) == "44136fa355b3"
    assert trial_key(TrialConfig.from_dict(PRUNED)) == "bba0cadce1a9"


def test_key_cache_gives_the_keys_of_the_resolved_config():
    cache = KeyCache()
    cfg = TrialConfig.from_dict(PRUNED)
    for seed in (0, 1, 5):  # memo hits after the first: only the seed differs
        identity = cache.resolve({"trial": cfg.to_dict() | {"seed": seed}})
        expected = TrialConfig.from_dict(PRUNED | {"seed": seed})
        assert identity.cfg == expected
        assert identity.trial_key == trial_key(expected)
        assert identity.config_key == config_key(expected) == config_key(cfg)
        assert identity.baseline_key == baseline_key(expected)
    repeated = cache.resolve({"trial": cfg.to_dict(), "seeds": [7, 9], "__trial_index__": 1})
    assert repeated.cfg.seed == 9
    assert repeated.trial_key == trial_key(TrialConfig.from_dict(PRUNED | {"seed": 9}))


def test_eval_passes_default_is_official_and_explicit_none_is_its_own_trial():
    """eval_passes defaults to official: a noise trial that writes it has the same key as one
    that does not, and ``none`` names a different trial (docs/reproducing.md)."""
    noise = {"pruning": {"method": "schedule", "perturbation": {"mode": "gaussian", "steps": 5}}}

    def key(eval_passes: str | None) -> str:
        extra = {} if eval_passes is None else {"eval_passes": eval_passes}
        data = {
            "pruning": noise["pruning"] | {"perturbation": noise["pruning"]["perturbation"] | extra}
        }
        return trial_key(TrialConfig.from_dict(data))

    assert TrialConfig.from_dict(noise).pruning.perturbation.eval_passes == "official"
    # 958daa430a6e named this trial with ``none`` counting before the default changed
    assert key(None) == key("official") == "958daa430a6e"
    assert key("none") == "cc3ac932c711"


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
        ({"seed": True}, "seed: must be an integer, got true"),
        ({"model": {"depth": 3}}, "model.depth: unknown key; valid keys: name, width"),
    ],
)
def test_strict_parsing_names_the_field(data, message):
    with pytest.raises(ValueError) as err:
        TrialConfig.from_dict(data)
    assert str(err.value).startswith(message)


def test_flatness_top_k_defaults_by_model_scale():
    assert flatness_top_k("cnn1d", 0) == 10 and flatness_top_k("vgg11_bn", 0) == 100
    assert flatness_top_k("vgg11_bn", 3) == 3


def test_every_field_has_help_and_the_rule_on_the_field_is_what_validate_applies():
    for section in dataclasses.fields(TrialConfig):
        assert help_of(TrialConfig, section.name)
        if dataclasses.is_dataclass(section.default_factory):
            for f in dataclasses.fields(section.default_factory):
                assert help_of(section.default_factory, f.name), f"{section.name}.{f.name}"
    assert rule_of(ModelConfig, "width")(-1) == "must be >= 0, got -1"
    bad = dataclasses.replace(TrialConfig(), model=ModelConfig(width=-1))
    with pytest.raises(UserError, match=r"^model\.width: must be >= 0, got -1$"):
        validate(bad)


def test_validate_reports_field_and_cross_rules_at_once():
    cfg = TrialConfig.from_dict(
        {
            "train": {"epochs": 5, "milestones": [3, 7], "lr": -1.0},
            "pruning": {"method": "schedule", "scope": "global"},
            "flatness": {"epochs": [9]},
        }
    )
    with pytest.raises(UserError) as err:
        validate(cfg)
    assert str(err.value).splitlines() == [
        "train.lr: must be > 0, got -1.0",
        "train.milestones[1]: must be < train.epochs (5), got 7",
        "flatness.epochs[0]: must be < train.epochs (5), got 9",
        "pruning.scope: global needs pruning.granularity weight, got filter",
        "pruning.layers: empty means model cnn1d's default schedule, which prunes until epoch 16; "
        "that must be < train.epochs (5): list the layers",
    ]

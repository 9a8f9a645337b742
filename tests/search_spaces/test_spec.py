"""Spec loading: sweep parsing, typing without casting, identity (golden hashes), YAML round trip."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from search_spaces.presets import list_presets
from search_spaces.spec import StudySpec, load_spec, spec_from_yaml
from search_spaces.sweeps import Dist, Grid
from trainables.config import LayerSchedule, PerturbationConfig, PruningConfig, TrialConfig

SMALL = """
name: small
model: {name: mlp}
train: {epochs: 12, lr: 1e-3}
pruning:
  method: schedule
  granularity: weight
  score: magnitude
  target: [smallest, largest]
  layers: [{name: fc1, final_fraction: 0.5, start_epoch: 2, end_epoch: 8}]
seeds: 2
"""


def test_yaml_12_floats_and_ints_where_floats_are_wanted() -> None:
    spec = spec_from_yaml(
        "name: a\ntrain: {lr: 1e-3, weight_decay: 0, gamma: 5.0e-1, milestones: [1]}\n"
    )
    assert spec.train.lr == 0.001 and isinstance(spec.train.lr, float)
    assert spec.train.weight_decay == 0.0 and isinstance(spec.train.weight_decay, float)
    assert spec.train.gamma == 0.5
    assert (
        spec_from_yaml("name: a\ntrain: {lr: 1}\n").hash
        == spec_from_yaml("name: a\ntrain: {lr: 1.0}\n").hash
    )


def test_sweep_forms() -> None:
    spec = spec_from_yaml(
        """
name: s
search: {algorithm: random, num_samples: 3}
train:
  lr: {loguniform: [1.0e-4, 1.0e-2]}
  batch_size: [64]                     # a one-item grid is its single value
  epochs: {int: [20, 30]}
  milestones: [[2, 4], [3]]            # a grid over a list field
pruning:
  method: schedule
  target: [smallest, random]
  score: {choice: [l1, l2]}
flatness: {epochs: [1, 5]}             # a single list value
"""
    )
    assert spec.train.lr == Dist("loguniform", (1e-4, 1e-2))
    assert spec.train.batch_size == 64
    assert spec.train.epochs == Dist("int", (20, 30))
    assert spec.train.milestones == Grid(((2, 4), (3,)))
    assert spec.pruning.target == Grid(("smallest", "random"))
    assert spec.pruning.score == Dist("choice", ("l1", "l2"))
    assert spec.flatness.epochs == (1, 5)


def test_grid_of_sections() -> None:
    spec = spec_from_yaml(
        """
name: s
pruning:
  method: schedule
  perturbation:
    - {mode: none}
    - {mode: zeroing, steps: [0, 5]}
"""
    )
    grid = spec.pruning.perturbation
    assert isinstance(grid, Grid)
    assert grid.values == (
        PerturbationConfig(),
        PerturbationConfig(mode="zeroing", steps=Grid((0, 5))),
    )


def test_seeds_count_equals_list() -> None:
    assert spec_from_yaml("name: a\nseeds: 3\n").seeds == (0, 1, 2)
    assert spec_from_yaml("name: a\nseeds: 3\n") == spec_from_yaml("name: a\nseeds: [0, 1, 2]\n")
    assert spec_from_yaml("name: a\nseeds: [7, 3]\n").seeds == (7, 3)


def test_layers_are_typed() -> None:
    spec = spec_from_yaml(SMALL)
    assert spec.pruning.layers == (LayerSchedule("fc1", 0.5, 2, 8),)


def test_spec_is_frozen() -> None:
    spec = spec_from_yaml(SMALL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.train.lr = 0.5  # type: ignore[misc]


def test_sections_are_the_trial_config_classes() -> None:
    """One definition per field: a spec section is its TrialConfig class (sweeps in the leaves)."""
    hints = typing.get_type_hints(StudySpec)
    config_hints = typing.get_type_hints(TrialConfig)
    for name in ("dataset", "model", "train", "pruning", "flatness"):
        assert hints[name] == config_hints[name] | Grid
    spec = spec_from_yaml(
        "name: s\nmodel: {name: mlp}\ntrain: {epochs: 20}\n"
        "pruning: {method: schedule, perturbation: {mode: zeroing}}\n"
    )
    assert type(spec.pruning) is PruningConfig
    assert spec.pruning.perturbation == PerturbationConfig(mode="zeroing")


# --- identity -------------------------------------------------------------------------------------

# Golden: these must never change (a changed hash renames studies and breaks `resume`). A new
# field with a default keeps them, because canonical_dict drops default-valued fields.
GOLDEN_SMALL = "1a5cd6d9110c6d85"
GOLDEN_QUICKSTART = "3bd6703f8c2ec15e"


def test_golden_hashes() -> None:
    assert spec_from_yaml(SMALL).hash == GOLDEN_SMALL
    assert load_spec("quickstart").hash == GOLDEN_QUICKSTART


def test_canonical_dict_drops_defaults() -> None:
    spec = spec_from_yaml(SMALL)
    assert spec.canonical_dict() == {
        "model": {"name": "mlp"},
        "train": {"epochs": 12},  # lr 1e-3 is the default
        "pruning": {
            "method": "schedule",
            "granularity": "weight",
            "score": "magnitude",
            "target": ["smallest", "largest"],
            "layers": [{"name": "fc1", "final_fraction": 0.5, "start_epoch": 2, "end_epoch": 8}],
        },
        "seeds": [0, 1],
    }


def test_explicit_defaults_keep_the_hash() -> None:
    explicit = SMALL.replace(
        "train: {epochs: 12, lr: 1e-3}", "train: {epochs: 12, lr: 1e-3, momentum: 0.9, bf16: false}"
    )
    explicit += (
        "baselines: true\nsearch: {algorithm: grid, metric: test_acc}\nflatness: {epochs: []}\n"
    )
    assert explicit != SMALL
    assert spec_from_yaml(explicit).hash == GOLDEN_SMALL


def test_hash_ignores_where_and_how_but_not_what() -> None:
    base = spec_from_yaml(SMALL)
    elsewhere = spec_from_yaml(
        SMALL.replace("name: small", "name: other")
        + "storage: s3://bucket/x\nresources: {cpu: 4, gpu: 0.5}\nmax_concurrent_trials: 3\n"
        + "checkpoint_frequency: 5\nretries: 0\nreport_every: 5\n"
    )
    assert elsewhere != base and elsewhere.hash == base.hash
    assert spec_from_yaml(SMALL.replace("seeds: 2", "seeds: 3")).hash != base.hash
    assert spec_from_yaml(SMALL.replace("lr: 1e-3", "lr: 2e-3")).hash != base.hash
    assert spec_from_yaml(SMALL + "search: {algorithm: random}\n").hash != base.hash


def test_report_every_keeps_the_hash() -> None:
    for every in (0, 1, 300, 86_400):
        spec = spec_from_yaml(SMALL + f"report_every: {every}\n")
        assert spec.report_every == every and spec.hash == GOLDEN_SMALL
        assert "report_every" not in spec.canonical_dict()


@pytest.mark.parametrize("name", list_presets())
def test_to_yaml_round_trips_presets(name: str) -> None:
    spec = load_spec(name)
    text = spec.to_yaml()
    assert text.splitlines()[0] == f"# spec-hash: {spec.hash}"
    assert spec_from_yaml(text) == spec


def test_to_yaml_round_trips_sweeps() -> None:
    spec = spec_from_yaml(
        """
name: s
search: {algorithm: random, num_samples: 2, seed: 3}
dataset: {label_noise_fraction: {uniform: [0, 0.4]}}
model: {name: mlp}
train: {epochs: 20, milestones: [[4], [4, 8]]}
pruning:
  - {method: schedule, granularity: weight, score: magnitude, period: {int: [1, 3]}}
  - method: schedule
    layers: [[{name: fc1, final_fraction: 0.2, start_epoch: 1, end_epoch: 5}], []]
    perturbation: [{mode: none}, {mode: gaussian, steps: [1, 2]}]
"""
    )
    assert isinstance(spec.pruning, Grid)
    again = spec_from_yaml(spec.to_yaml())
    assert again == spec and again.hash == spec.hash


def test_load_spec_from_file_and_overrides(tmp_path) -> None:
    path = tmp_path / "my-study.yaml"
    path.write_text(SMALL.replace("name: small\n", ""))
    spec = load_spec(str(path))
    assert spec.name == "my-study" and spec.storage == "./studies"
    renamed = load_spec(str(path), name="renamed", storage="s3://b/p")
    assert (renamed.name, renamed.storage) == ("renamed", "s3://b/p")
    assert renamed.hash == spec.hash
    preset = load_spec("quickstart", storage=str(tmp_path))
    assert preset.name == "quickstart" and preset.storage == str(tmp_path)


def test_study_spec_defaults() -> None:
    spec = spec_from_yaml("name: d\n")
    assert spec == StudySpec(name="d")
    assert spec.search.algorithm == "grid" and spec.search.metric == "test_acc"
    assert spec.seeds == (0,) and spec.baselines is True and spec.storage == "./studies"

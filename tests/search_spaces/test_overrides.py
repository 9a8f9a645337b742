"""``KEY=VALUE`` overrides: the schema comes from the spec's classes, values read as spec YAML
does, and an overridden spec is the same study (same hash) as the spec written out by hand."""

from __future__ import annotations

import copy

import pytest

from search_spaces.overrides import apply_overrides, key_tree, parse_overrides
from search_spaces.spec import StudySpec, spec_from_dict, spec_from_yaml
from search_spaces.yaml_io import load_yaml
from trainables.config import TrialConfig
from trainables.errors import UserError

VALID = key_tree(StudySpec)

BASE = """
name: t
model: {name: mlp}
train: {epochs: 20}
pruning:
  method: schedule
  granularity: weight
  score: magnitude
  layers:
    - {name: fc1, final_fraction: 0.41, start_epoch: 2, end_epoch: 10}
"""


def _override(base: str, *items: str) -> dict:
    return apply_overrides(load_yaml(base, "base"), parse_overrides(list(items)), VALID)


def _same_study(data: dict, by_hand: str) -> None:
    """`data` validates and is the study that `by_hand` spells out (the hash proves it)."""
    expected = spec_from_yaml(by_hand)
    assert spec_from_dict(data) == expected
    assert spec_from_dict(data).hash == expected.hash


def test_the_readme_examples_give_the_spec_written_by_hand() -> None:
    data = _override(
        BASE,
        "train.epochs=5",
        "seeds=1",
        "pruning.target=[smallest,largest]",
        "dataset.label_noise_fraction=0.1",
        "pruning.layers=[{name: fc1, final_fraction: 0.5, start_epoch: 1, end_epoch: 3}]",
    )
    assert data["train"] == {"epochs": 5}
    assert data["pruning"]["target"] == ["smallest", "largest"]
    assert data["pruning"]["layers"] == [
        {"name": "fc1", "final_fraction": 0.5, "start_epoch": 1, "end_epoch": 3}
    ]
    by_hand = """
name: t
dataset: {label_noise_fraction: 0.1}
model: {name: mlp}
train: {epochs: 5}
pruning:
  method: schedule
  granularity: weight
  score: magnitude
  target: [smallest, largest]
  layers:
    - {name: fc1, final_fraction: 0.5, start_epoch: 1, end_epoch: 3}
seeds: 1
"""
    _same_study(data, by_hand)
    assert spec_from_yaml(by_hand).hash != spec_from_yaml(BASE).hash


def test_the_base_data_is_left_unchanged() -> None:
    data = load_yaml(BASE, "base")
    before = copy.deepcopy(data)
    apply_overrides(data, parse_overrides(["train.epochs=5", "pruning.imp.rounds=2"]), VALID)
    assert data == before


# re-entry acts on whole units: the filter-granularity variant of BASE
FILTER_BASE = BASE.replace("  granularity: weight\n  score: magnitude\n", "")
GRID = FILTER_BASE + "  perturbation: [{mode: zeroing, steps: 0}, {mode: gaussian, steps: 50}]\n"


def test_a_key_inside_a_grid_of_sections_is_set_in_every_item() -> None:
    data = _override(GRID, "pruning.perturbation.steps=5")
    assert data["pruning"]["perturbation"] == [
        {"mode": "zeroing", "steps": 5},
        {"mode": "gaussian", "steps": 5},
    ]
    hand = FILTER_BASE + "  perturbation: [{mode: zeroing, steps: 5}, {mode: gaussian, steps: 5}]\n"
    _same_study(data, hand)


def test_a_whole_section_is_replaced() -> None:
    data = _override(GRID, "pruning.perturbation={mode: none}")
    assert data["pruning"]["perturbation"] == {"mode": "none"}
    _same_study(data, FILTER_BASE + "  perturbation: {mode: none}\n")
    data = _override(BASE, "train={lr: 0.01}")  # replaced, not merged: epochs is gone
    assert data["train"] == {"lr": 0.01}


def test_a_key_in_a_missing_section_creates_it() -> None:
    data = _override("name: t\nmodel: {name: mlp}\n", "pruning.imp.rounds=3", "pruning.method=imp")
    assert data == {
        "name": "t",
        "model": {"name": "mlp"},
        "pruning": {"imp": {"rounds": 3}, "method": "imp"},
    }
    _same_study(data, "name: t\nmodel: {name: mlp}\npruning: {method: imp, imp: {rounds: 3}}\n")


def test_later_overrides_win() -> None:
    assert _override(BASE, "train.epochs=5", "train.epochs=7")["train"]["epochs"] == 7


@pytest.mark.parametrize(
    "raw", ["1e-3", "1.0e-3", "5", "-2", "yes", "off", "null", "'5'", "[1, 2]", "{a: 1}", "a b"]
)
def test_values_read_exactly_as_in_a_spec_file(raw: str) -> None:
    (override,) = parse_overrides([f"train.lr={raw}"])
    assert override.value == load_yaml(f"lr: {raw}", "file")["lr"]
    assert type(override.value) is type(load_yaml(f"lr: {raw}", "file")["lr"])


def test_1e_3_is_a_float_and_validates_as_the_learning_rate() -> None:
    (override,) = parse_overrides(["train.lr=1e-3"])
    assert isinstance(override.value, float) and override.value == 0.001
    data = _override(BASE, "train.lr=1e-3")
    assert spec_from_dict(data).train.lr == 0.001


def test_an_empty_value_is_the_empty_string() -> None:
    (override,) = parse_overrides(["dataset.data_dir="])
    assert override.value == ""


def test_a_value_may_contain_equals_signs() -> None:
    (override,) = parse_overrides(["dataset.data_dir=/data/a=b"])
    assert (override.path, override.value) == (("dataset", "data_dir"), "/data/a=b")


@pytest.mark.parametrize("item", ["train.epochs", "=5", ""])
def test_an_item_that_is_not_key_value_is_refused(item: str) -> None:
    with pytest.raises(UserError) as err:
        parse_overrides([item])
    assert str(err.value) == f"override {item!r}: must be KEY=VALUE, e.g. train.epochs=5"


def test_an_unknown_key_is_refused_with_the_closest_valid_key() -> None:
    with pytest.raises(UserError) as err:
        _override(BASE, "train.epoch=5")
    assert str(err.value) == (
        "override 'train.epoch=5': unknown key train.epoch; did you mean train.epochs?"
    )


def test_keys_below_a_leaf_and_far_off_keys_are_unknown() -> None:
    with pytest.raises(UserError) as err:
        _override(BASE, "train.epochs.x=1", "zzz=1", "pruning.perturbation.stepz=1")
    lines = str(err.value).split("\n")
    assert (
        lines[0]
        == "override 'train.epochs.x=1': unknown key train.epochs.x; did you mean train.epochs?"
    )
    assert lines[1].startswith("override 'zzz=1': unknown key zzz; valid top-level keys: name, ")
    assert lines[2].endswith("did you mean pruning.perturbation.steps?")


def test_a_bad_yaml_value_is_refused_with_its_position() -> None:
    with pytest.raises(UserError) as err:
        parse_overrides(["pruning.target=[smallest,"])
    message = str(err.value)
    assert message.startswith(
        "override 'pruning.target=[smallest,': invalid YAML at line 1, column"
    )
    assert "\n" not in message


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(UserError) as err:
        parse_overrides(["x", "a=[", "train.epoch=5", "train.epochs=5"], VALID)
    assert str(err.value).split("\n") == [
        "override 'x': must be KEY=VALUE, e.g. train.epochs=5",
        "override 'a=[': invalid YAML at line 1, column 2: "
        "expected the node content, but found '<stream end>'",
        "override 'train.epoch=5': unknown key train.epoch; did you mean train.epochs?",
    ]


def test_a_non_mapping_where_a_section_is_needed_is_refused() -> None:
    with pytest.raises(UserError) as err:
        apply_overrides(
            {"name": "t", "pruning": 5}, parse_overrides(["pruning.imp.rounds=3"]), VALID
        )
    assert str(err.value) == (
        "override 'pruning.imp.rounds=3': cannot set pruning.imp.rounds: "
        "pruning holds int 5, not a mapping"
    )


def test_validation_then_reports_bad_values_as_usual() -> None:
    with pytest.raises(UserError, match=r"^train\.epochs: must be >= 1, got 0"):
        spec_from_dict(_override(BASE, "train.epochs=0"))


def test_the_key_tree_comes_from_the_dataclasses() -> None:
    assert VALID.fields["train"].fields["milestones"] is None  # a list field is a leaf
    assert VALID.fields["pruning"].fields["layers"] is None
    assert VALID.fields["seeds"] is None
    assert set(VALID.fields["search"].fields) == {
        "algorithm",
        "num_samples",
        "metric",
        "mode",
        "seed",
    }
    assert "pruning.perturbation.steps" in VALID.paths()
    # The plain config classes give the same sections: the tree depends on dataclass fields only.
    plain = key_tree(TrialConfig)
    for section in ("dataset", "model", "train", "pruning", "flatness"):
        assert plain.fields[section] == VALID.fields[section]

"""The one table of settings that act only when another field allows them
(``trainables.inert_rules.INERT``): each entry, set away from its default while its owner keeps
the default (which never lets it act), is refused through the real command line with its reason;
every refusal of a setting that does nothing comes from the table."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from orchestrator.cli.app import main
from search_spaces.spec import StudySpec
from search_spaces.yaml_io import dump_yaml
from trainables.config import TrialConfig
from trainables.fields import type_hints
from trainables.inert_rules import INERT, default_at

REPO = Path(__file__).resolve().parents[2]
# Values of a type the generic rule below cannot pick.
EXPLICIT = {
    "pruning.layers": [{"name": "conv3", "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 1}],
}


def _root(path: str) -> type:
    """The class holding the field: the study spec for search.*, else the trial config."""
    return StudySpec if path.startswith("search.") else TrialConfig


def _field_type(path: str) -> typing.Any:
    *sections, name = path.split(".")
    root: typing.Any = _root(path)
    for part in sections:
        root = type_hints(root)[part]
    return type_hints(root)[name]


def _other_value(path: str) -> typing.Any:
    """A valid value of the field at `path` that is not its default."""
    if path in EXPLICIT:
        return EXPLICIT[path]
    default, tp = default_at(_root(path), path), _field_type(path)
    if typing.get_origin(tp) is typing.Literal:
        return next(v for v in typing.get_args(tp) if v != default)
    if tp is bool:
        return not default
    if tp is int:
        return default + 1
    if tp is float:
        return default / 2 if default > 0 else 0.5
    raise AssertionError(f"no test value for {path} ({tp})")


def _nest(path: str, value: typing.Any) -> dict:
    head, _, rest = path.partition(".")
    return {head: _nest(rest, value) if rest else value}


@pytest.mark.parametrize("entry", INERT, ids=[e.field for e in INERT])
def test_each_setting_that_cannot_act_is_refused(entry, tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(dump_yaml({"name": "s", **_nest(entry.field, _other_value(entry.field))}))
    assert main(["run", str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{entry.field}: does nothing with {entry.owner} " in err, err
    assert "remove it" in err and "Traceback" not in err


def test_the_named_settings_are_in_the_table():
    fields = {e.field: e.owner for e in INERT}
    assert fields["train.momentum"] == fields["train.nesterov"] == "train.optimizer"
    assert fields["train.gamma"] == "train.milestones"
    assert fields["dataset.label_noise_seed"] == "dataset.label_noise_fraction"
    assert fields["search.seed"] == fields["search.num_samples"] == "search.algorithm"
    assert fields["dataset.download"] == "dataset.name"
    assert {f for f, o in fields.items() if o == "flatness.epochs"} >= {
        "flatness.subset_size",
        "flatness.top_k",
        "flatness.hessian",
    }


def test_every_refusal_of_a_setting_that_does_nothing_comes_from_the_table():
    """The refusal's wording lives in one module; another module refusing an idle setting by hand
    would have to write it again."""
    writers = [
        str(p.relative_to(REPO))
        for package in ("trainables", "search_spaces", "orchestrator", "results")
        for p in (REPO / package).rglob("*.py")
        if "does nothing with" in p.read_text()
    ]
    assert writers == ["trainables/inert_rules.py"]


def test_a_setting_is_accepted_where_its_owner_lets_it_act(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        dump_yaml(
            {
                "name": "s",
                "train": {
                    "optimizer": "sgd",
                    "momentum": 0.5,
                    "milestones": [2],
                    "gamma": 0.5,
                    "epochs": 3,
                },
                "search": {"algorithm": "random", "seed": 3},
                "dataset": {"label_noise_fraction": 0.1, "label_noise_seed": 4},
            }
        )
    )
    assert main(["run", str(spec), "--dry-run"]) == 0, capsys.readouterr().err

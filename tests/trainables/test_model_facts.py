"""The model registry states what each model has, and the built models agree; the names of scores,
targets, methods and perturbation modes have one source (the tables of what each needs)."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import torch
from torch import nn

from trainables import config, datasets, methods, models
from trainables.models import needs
from trainables.models.resnet import Block
from trainables.pruning import scores

DATASET = {"mlp": "mnist1d", "cnn1d": "mnist1d", "lenet": "mnist"}  # the others: cifar10


def _built(name: str) -> nn.Module:
    info = datasets.get(DATASET.get(name, "cifar10"))
    with torch.device("meta"):
        return models.build_model(name, 0, info.input_shape, info.num_classes)


@pytest.mark.parametrize("name", models.NAMES)
def test_each_entry_states_the_capabilities_its_model_has(name):
    """Read off the built model by hand: a BatchNorm right after every prunable layer (the
    module that follows it in the model's BN table), a residual block, a Conv2d."""
    model = _built(name)
    found = set()
    if set(model.prunable_layers()) <= set(model.following_bn()) and all(
        isinstance(bn, nn.modules.batchnorm._BatchNorm) for bn in model.following_bn().values()
    ):
        found.add("batchnorm")
    if any(isinstance(m, Block) for m in model.modules()):
        found.add("residual")
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        found.add("input_2d")
    assert models.MODELS[name].has == found
    assert found <= set(needs.CAPABILITIES)


def test_a_build_refuses_an_entry_that_misstates_its_model(monkeypatch):
    wrong = dataclasses.replace(models.MODELS["mlp"], has=frozenset({"batchnorm"}))
    monkeypatch.setitem(models.MODELS, "mlp", wrong)
    with pytest.raises(AssertionError, match="model mlp: the registry declares"):
        _built("mlp")


def test_the_names_have_one_source_and_every_one_is_implemented():
    tables = {
        config.Score: needs.SCORES,
        config.Target: needs.TARGETS,
        config.Method: needs.METHODS,
        config.PerturbationMode: needs.PERTURBATION_MODES,
    }
    for literal, table in tables.items():
        assert typing.get_args(literal) == tuple(table)
    implemented = {*scores.FILTER_SCORES, *scores.WEIGHT_SCORES, *scores.TRACKED_SCORES}
    assert implemented == set(needs.SCORES)
    assert set(scores.TARGETS) == set(needs.TARGETS)
    assert set(methods.METHODS) == set(needs.METHODS)
    for table in needs.NEEDS.values():
        assert all(set(n) <= set(needs.CAPABILITIES) for n in table.values())

"""The model-dependent rules agree with what the models do: a combination of model, score,
granularity, target, method, perturbation mode and layers is refused at spec time exactly when
building it and running its first epoch (an event included) fails with those rules switched off.

The layer names below are written out by hand (not read from the code under test): each model's
first prunable layer, a residual block conv where the model has one, and ``fc``, the output layer
(weight-prunable in OpenLTH's ResNet-20 only).
"""

from __future__ import annotations

import itertools
import typing

import pytest
import torch

from search_spaces.expand import expand
from search_spaces.spec import spec_from_dict
from trainables import config as C
from trainables import cross_rules, datasets
from trainables.config import TrialConfig
from trainables.errors import UserError
from trainables.loop import TrialRunner
from trainables.models import build_model

torch.set_num_threads(1)

# model -> (dataset, width, layer choices)
MODELS = {
    "mlp": ("mnist1d", 4, ("fc1", "fc")),
    "cnn1d": ("mnist1d", 2, ("conv1", "fc")),
    "lenet": ("mnist", 6, ("fc1", "fc")),
    "vgg11_bn": ("cifar10", 2, ("conv1", "fc")),
    "vgg16": ("cifar10", 2, ("conv1", "fc")),
    "resnet18": ("cifar10", 2, ("conv1", "layer1.0.conv1", "fc")),
    "resnet20": ("cifar10", 2, ("conv1", "layer1.0.conv2", "fc")),
    "resnet56": ("cifar10", 2, ("conv1", "layer3.8.conv2", "fc")),
    "openlth_resnet20": ("cifar10", 2, ("conv1", "layer2.0.shortcut_conv", "layer1.0.conv1", "fc")),
}
# The combinations where the layer choice matters: filter and weight layers, IMP, block convs.
LAYER_SENSITIVE = {
    ("l2", "filter", "schedule", "none"),
    ("l2", "weight", "schedule", "none"),
    ("l2", "weight", "imp", "none"),
    ("activations", "filter", "schedule", "none"),
}


def _sections(model: str, score, granularity, target, method, mode, layer) -> dict:
    dataset, width, _ = MODELS[model]
    pruning = {
        "method": method,
        "granularity": granularity,
        "score": score,
        "target": target,
        "layers": [{"name": layer, "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 0}],
        "perturbation": {"mode": mode, "steps": 1 if mode in C.NOISE_MODES else 0},
    }
    if method == "imp":
        pruning["imp"] = {"rounds": 1}
    return {
        "dataset": {"name": dataset, "synthetic": True, "max_examples": 8},
        "model": {"name": model, "width": width},
        "train": {"epochs": 1, "batch_size": 8, "eval_batch_size": 8},
        "pruning": pruning,
    }


def _model_free_valid(sections: dict) -> bool:
    """The combination passes every rule that does not depend on the model."""
    try:
        cross_rules.validate(TrialConfig.from_dict(sections))
    except (UserError, ValueError):
        return False
    return True


def _refused_at_spec_time(sections: dict) -> str | None:
    try:
        spec_from_dict({"name": "t", "seeds": 1, **sections})
    except UserError as exc:
        return str(exc)
    return None


def _fails_to_run(sections: dict) -> str | None:
    """Build the trial and run it (its first epoch holds the event), with no model rule checked."""
    try:
        list(TrialRunner(TrialConfig.from_dict(sections), device="cpu").run())
    except Exception as exc:  # any failure counts: this is what Ray would have shown
        return f"{type(exc).__name__}: {exc}"
    return None


def _combinations(model: str, targets: tuple[str, ...]):
    names = (typing.get_args(C.Score), typing.get_args(C.Granularity), targets)
    methods = ("schedule", "imp")
    for score, gran, target, method, mode in itertools.product(
        *names, methods, typing.get_args(C.PerturbationMode)
    ):
        layers = MODELS[model][2]
        if (score, gran, method, mode) not in LAYER_SENSITIVE:
            layers = layers[:1]
        for layer in layers:
            yield (score, gran, target, method, mode, layer)


def _disagreements(model: str, targets: tuple[str, ...], monkeypatch) -> list[str]:
    out = []
    for combo in _combinations(model, targets):
        sections = _sections(model, *combo)
        with monkeypatch.context() as m:
            m.setattr(cross_rules, "MODEL_RULES", (), raising=False)
            if not _model_free_valid(sections):
                continue  # refused whatever the model: not a model rule
            failure = _fails_to_run(sections)
        refusal = _refused_at_spec_time(sections)
        if (refusal is None) != (failure is None):
            out.append(f"{combo}: spec says {refusal or 'ok'}; running says {failure or 'ok'}")
    return out


FAST = [m for m in MODELS if m != "resnet56"]  # resnet56 is resnet20 deeper: the slow run has it


@pytest.mark.parametrize("model", FAST)
def test_spec_time_verdict_agrees_with_building_and_running(model, monkeypatch):
    assert _disagreements(model, ("smallest",), monkeypatch) == []


@pytest.mark.slow
@pytest.mark.parametrize("model", list(MODELS))
def test_spec_time_verdict_agrees_for_every_target(model, monkeypatch):
    assert _disagreements(model, typing.get_args(C.Target), monkeypatch) == []


def test_the_matrix_holds_both_verdicts():
    """The agreement above is not vacuous: some combinations run and some are refused."""
    verdicts = {
        _refused_at_spec_time(
            _sections("mlp", "ebn", "filter", "smallest", "schedule", "none", "fc1")
        )
        is None,
        _refused_at_spec_time(
            _sections("cnn1d", "ebn", "filter", "smallest", "schedule", "none", "conv1")
        )
        is None,
    }
    assert verdicts == {True, False}


@pytest.mark.parametrize(
    ("model", "has_default"),
    [("cnn1d", True), ("vgg11_bn", True), ("resnet20", True), ("openlth_resnet20", False)],
)
def test_an_empty_layer_list_is_the_paper_schedule_everywhere(model, has_default):
    """The spec, the expanded trial and the built trial resolve empty layers to one schedule."""
    sections = _sections(model, "l2", "filter", "smallest", "schedule", "none", "x")
    sections["pruning"]["layers"] = []
    sections["train"]["epochs"] = 300
    if not has_default:
        assert "has no default schedule" in _refused_at_spec_time(sections)
        with pytest.raises(UserError, match="has no default schedule"):
            TrialRunner(TrialConfig.from_dict(sections), device="cpu")
        return
    (trial,) = [
        t
        for t in expand(spec_from_dict({"name": "t", "seeds": 1, **sections})).trials
        if not t.is_baseline
    ]
    built = TrialRunner(TrialConfig.from_dict(sections), device="cpu")
    assert trial.pruning.layers
    assert [ls.name for ls in trial.pruning.layers] == [lp.name for lp in built.method.plan.layers]


@pytest.mark.parametrize("model", list(MODELS))
def test_channels_last_is_refused_exactly_where_it_does_nothing(model):
    """Channels-last memory reorders 4-d tensors only: on a model without 2-d input no parameter
    changes layout, and the spec refuses the setting there, saying so."""
    dataset, width, layers = MODELS[model]
    sections = _sections(model, "l2", "filter", "smallest", "schedule", "none", layers[0])
    sections["train"]["channels_last"] = True
    refused = "train.channels_last: does nothing on model" in (
        _refused_at_spec_time(sections) or ""
    )
    info = datasets.get(dataset)
    built = build_model(model, width, info.input_shape, info.num_classes)
    before = [p.stride() for p in built.parameters()]
    built.to(memory_format=torch.channels_last)
    changed = before != [p.stride() for p in built.parameters()]
    assert refused == (not changed)

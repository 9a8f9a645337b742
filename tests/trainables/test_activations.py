"""The ``activations`` score tracker against an independent re-implementation of the official rule."""

from __future__ import annotations

import copy
from types import MethodType

import pytest
import torch
import torch.nn.functional as F

from trainables.errors import UserError
from trainables.models import build_model
from trainables.models.resnet import Block
from trainables.pruning.activations import ActivationTracker

torch.set_num_threads(1)

INPUT = (3, 16, 16)


# --- reference: bbartoldson/GeneralizationStabilityTradeoff, models.py, function resnet18: the
# block forward `_mask_shortcuts_forward_C` defined when 'activations' is in the scoring string
# (running means start as a 0 tensor in `_make_conv_prunable`; the counter lives on conv1). It is
# installed on each block of a copy of the model, as the official code installs it (MethodType).


def _official_block_forward(self, x):
    out = self.bn1(self.conv1(x))
    if self.training:
        self.ref_counter += 1
        if self.ref_counter % 10 == 0:
            self.ref_m1 = 0.1 * out.abs().sum(dim=[0, 2, 3]).detach() + 0.9 * self.ref_m1.detach()
    out = F.relu(out)
    out = self.bn2(self.conv2(out))
    keep = self.shortcut_mask.bool()  # the official conv2.mask
    out[:, keep] += self.shortcut(x)[:, keep]
    if self.training and self.ref_counter % 10 == 0:
        self.ref_m2 = 0.1 * out.abs().sum(dim=[0, 2, 3]).detach() + 0.9 * self.ref_m2.detach()
    return F.relu(out)


def _official_copy(model):
    ref = copy.deepcopy(model)
    for block in ref.modules():
        if isinstance(block, Block):
            block.ref_counter = 0
            block.ref_m1 = torch.tensor([0.0])
            block.ref_m2 = torch.tensor([0.0])
            block.forward = MethodType(_official_block_forward, block)
    return ref


def _official_state(ref) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    counters, means = {}, {}
    for path, block in ref.named_modules():
        if isinstance(block, Block):
            counters[path] = block.ref_counter
            for conv, m in (("conv1", block.ref_m1), ("conv2", block.ref_m2)):
                means[f"{path}.{conv}"] = m.expand(getattr(block, conv).out_channels)
    return counters, means


# --- driving ----------------------------------------------------------------------------------


def _model(name: str = "resnet18"):
    torch.manual_seed(0)
    return build_model(name, 4, INPUT, 10)


def _batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + i)
    return torch.randn(6, *INPUT, generator=gen), torch.randint(0, 10, (6,), generator=gen)


class _Driver:
    """Training passes (forward, backward, SGD step) and eval passes on one model."""

    def __init__(self, model):
        self.model = model
        self.opt = torch.optim.SGD(model.parameters(), lr=0.05)

    def train(self, i: int) -> torch.Tensor:
        self.model.train()
        x, y = _batch(i)
        logits = self.model(x)
        self.opt.zero_grad()
        F.cross_entropy(logits, y).backward()
        self.opt.step()
        return logits.detach()

    def eval(self, i: int) -> torch.Tensor:
        self.model.eval()
        with torch.no_grad():
            return self.model(_batch(500 + i)[0])


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-6, msg=name)


# --- tests ------------------------------------------------------------------------------------


# 1x1-conv (kuangliu, OpenLTH) and option-A (Idelbayev) shortcuts
@pytest.mark.parametrize("name", ["resnet18", "resnet20", "openlth_resnet20"])
def test_running_means_follow_the_official_rule(name):
    model = _model(name)
    ref = _official_copy(model)
    tracker = ActivationTracker(model)
    ours, theirs = _Driver(model), _Driver(ref)
    last = None
    for i in range(25):
        if i == 12:  # stop the shortcut of two channels (as a filter event does) in both
            for m in (model, ref):
                m.layer1[0].shortcut_mask[1] = 0.0
                m.layer3[0].shortcut_mask[5] = 0.0
        torch.testing.assert_close(ours.train(i), theirs.train(i), rtol=0, atol=1e-6)
        counters, means = _official_state(ref)
        assert tracker.counters() == counters == dict.fromkeys(counters, i + 1)
        _same({n: tracker.scores(n) for n in tracker.layer_names()}, means)
        if i % 3 == 1:  # eval passes neither count nor update
            before = tracker.state_dict()
            torch.testing.assert_close(ours.eval(i), theirs.eval(i), rtol=0, atol=1e-6)
            after = tracker.state_dict()
            assert after["counters"] == before["counters"]
            _same(after["means"], before["means"])
        last = means
    assert all(m.abs().sum() > 0 for m in last.values())


def test_only_every_tenth_training_pass_updates():
    model = _model()
    tracker = ActivationTracker(model)
    driver = _Driver(model)
    history = []
    for i in range(21):
        driver.train(i)
        driver.eval(i)
        history.append(tracker.scores("layer4.1.conv2").clone())
    assert all(torch.count_nonzero(h) == 0 for h in history[:9])
    assert torch.count_nonzero(history[9]) > 0
    assert all(torch.equal(h, history[9]) for h in history[10:19])
    assert not torch.equal(history[19], history[9])
    assert torch.equal(history[20], history[19])


def test_conv2_score_is_pre_relu_block_output():
    # After the 10th pass m2 = 0.1 * sum |pre-ReLU output|, above the post-ReLU block output's sum.
    model = _model()
    tracker = ActivationTracker(model)
    outputs = []
    model.layer2[1].register_forward_hook(lambda m, args, out: outputs.append(out.detach()))
    driver = _Driver(model)
    for i in range(10):
        driver.train(i)
    total = tracker.scores("layer2.1.conv2") / 0.1
    post_relu = outputs[-1].sum(dim=(0, 2, 3))
    assert torch.all(total >= post_relu - 1e-4) and torch.any(total > post_relu + 1e-3)


def test_resume_from_state_dict_continues_identically():
    model = _model()
    tracker = ActivationTracker(model)
    driver = _Driver(model)
    for i in range(15):  # stop between two updates: the counter decides the next one
        driver.train(i)
    model_state = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(driver.opt.state_dict())
    saved = tracker.state_dict()
    for i in range(15, 25):
        driver.train(i)
    resumed = _model()
    resumed.load_state_dict(model_state)
    tracker2 = ActivationTracker(resumed)
    tracker2.load_state_dict(saved)
    driver2 = _Driver(resumed)
    driver2.opt.load_state_dict(opt_state)
    for i in range(15, 25):
        driver2.train(i)
    assert tracker2.counters() == tracker.counters()
    end = tracker.state_dict()["means"]
    assert all(torch.equal(tracker2.scores(n), end[n]) for n in end)
    assert not torch.equal(end["layer4.1.conv2"], saved["means"]["layer4.1.conv2"])


def test_tracking_some_blocks_gives_the_same_scores():
    model = _model()
    full = ActivationTracker(model)
    some = ActivationTracker(model, layers=("layer4.1.conv2", "layer2.0.conv1"))
    assert some.layer_names() == (
        "layer2.0.conv1",
        "layer2.0.conv2",
        "layer4.1.conv1",
        "layer4.1.conv2",
    )
    driver = _Driver(model)
    for i in range(20):
        driver.train(i)
    assert all(torch.equal(some.scores(n), full.scores(n)) for n in some.layer_names())
    assert set(some.counters()) == {"layer2.0", "layer4.1"}
    with pytest.raises(UserError, match="pruning.layers: .*got 'layer1.0.conv1'"):
        some.scores("layer1.0.conv1")
    with pytest.raises(UserError, match="pruning.layers: .*got 'layer4.0.shortcut_conv'"):
        ActivationTracker(model, layers=["layer4.0.shortcut_conv"])


def test_remove_detaches_the_hooks():
    model = _model()
    tracker = ActivationTracker(model)
    driver = _Driver(model)
    for i in range(10):
        driver.train(i)
    before = tracker.state_dict()
    tracker.remove()
    for i in range(10, 20):
        driver.train(i)
    after = tracker.state_dict()
    assert after["counters"] == before["counters"]
    _same(after["means"], before["means"])


def test_names_and_errors():
    model = _model()
    tracker = ActivationTracker(model)
    assert tracker.layer_names() == model.block_conv_names()
    assert tracker.scores("layer1.0.conv1").shape == (4,)
    assert tracker.scores("layer4.1.conv2").shape == (32,)
    for bad in ("conv1", "layer2.0.shortcut_conv", "fc"):
        with pytest.raises(UserError, match=f"pruning.layers: .*got '{bad}'"):
            tracker.scores(bad)
    with pytest.raises(UserError, match="pruning.score: 'activations' needs a ResNet"):
        ActivationTracker(build_model("mlp", 8, (1, 40), 10))
    with pytest.raises(ValueError, match="do not match"):
        ActivationTracker(_model("resnet20")).load_state_dict(tracker.state_dict())

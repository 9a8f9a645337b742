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


# --- wired into schedule pruning (pruning.score: activations) ---------------------------------

SCORED = ("layer3.1.conv1", "layer4.0.conv2")


def _trial(target: str = "smallest"):
    from trainables.config import TrialConfig

    layers = [
        {"name": name, "final_fraction": 0.5, "start_epoch": 1, "end_epoch": 2} for name in SCORED
    ]
    return TrialConfig.from_dict(
        {
            "dataset": {"name": "cifar10"},
            "model": {"name": "resnet18", "width": 4},
            "train": {"epochs": 3, "batch_size": 16},
            "pruning": {
                "method": "schedule",
                "score": "activations",
                "target": target,
                "layers": layers,
            },
        }
    )


@pytest.mark.parametrize("target", ["smallest", "largest"])
def test_schedule_pruning_ranks_filters_by_the_running_means(target):
    """Each event removes the k alive filters with the smallest (Prune_S) or largest (Prune_L)
    running means, as the official ``_prune_layer`` ranks ``post_shortcut_running_mean``."""
    from tiny_images import tiny_cifar10

    from trainables.loop import TrialRunner
    from trainables.pruning import scores

    with tiny_cifar10():
        runner = TrialRunner(_trial(target), device="cpu", num_threads=1)
    tracker = runner.method.tracker
    assert set(tracker.counters()) == {"layer3.1", "layer4.0"}  # the scheduled blocks only
    by_norm = {}
    event = runner.method.event

    def spy(r, epoch):  # what the L2 norm would have chosen at this event, for contrast
        by_norm[epoch] = {n: scores.l2(r.masks.layers[n].weight) for n in SCORED}
        return event(r, epoch)

    runner.method.event = spy
    differs = False
    for epoch in range(3):
        alive = {n: runner.masks.alive(n).clone() for n in SCORED}
        record = runner.run_epoch()
        for name in SCORED:
            removed = alive[name] & ~runner.masks.alive(name)
            k = int(removed.sum())
            assert k == (0 if epoch == 0 else record["units_removed"][SCORED.index(name)]["units"])
            if not k:
                continue
            # eval passes never update the means: they are still the ones the event ranked
            means, idx = tracker.scores(name), alive[name].nonzero().flatten()
            order = means[idx].argsort(descending=target == "largest", stable=True)
            expected = torch.zeros_like(removed)
            expected[idx[order[:k]]] = True
            assert torch.equal(removed, expected), (epoch, name)
            norms = by_norm[epoch][name][idx].argsort(descending=target == "largest", stable=True)
            differs |= set(idx[norms[:k]].tolist()) != set(idx[order[:k]].tolist())
    assert differs  # the running means, not the weights, chose the filters
    assert tracker.counters() == {"layer3.1": 36, "layer4.0": 36}  # 3 epochs x 12 training steps


def test_activations_needs_residual_block_convs(data_dir):
    from trainables.config import TrialConfig
    from trainables.loop import TrialRunner

    layer = {"name": "conv1", "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 0}
    cfg = TrialConfig.from_dict(
        {
            "dataset": {"data_dir": data_dir, "num_samples": 200},
            "pruning": {"method": "schedule", "score": "activations", "layers": [layer]},
        }
    )
    with pytest.raises(UserError, match="pruning.score: activations needs a model with residual"):
        TrialRunner(cfg, device="cpu")

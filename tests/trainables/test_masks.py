"""MaskSet properties: exact counts, masks only shrink, pruned channels output 0, stay 0 in training."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainables.models import build_model
from trainables.pruning.masks import MaskSet
from trainables.pruning.schedule import units_per_event

torch.set_num_threads(1)
SETTINGS = settings(max_examples=15, deadline=None)


def _cnn1d(width=6, seed=0):
    torch.manual_seed(seed)
    return build_model("cnn1d", width, (1, 40), 10)


def _mlp(width=12, seed=0):
    torch.manual_seed(seed)
    return build_model("mlp", width, (1, 40), 10)


@SETTINGS
@given(
    fractions=st.lists(st.floats(0.0, 0.95), min_size=3, max_size=3),
    n_events=st.integers(1, 6),
    target=st.sampled_from(["smallest", "largest", "random"]),
    score=st.sampled_from(["l2", "l1", "ebn"]),
)
def test_filter_schedule_hits_target_and_masks_only_shrink(fractions, n_events, target, score):
    model = _cnn1d()
    masks = MaskSet(model, "filter")
    gen = torch.Generator().manual_seed(0)
    names = list(masks.n_units)
    plans = {
        n: units_per_event(masks.n_units[n], f, n_events)
        for n, f in zip(names, fractions, strict=True)
    }
    for i in range(n_events):
        before = {n: m.clone() for n, m in masks.masks.items()}
        removed = masks.prune(
            {n: plans[n][i] for n in names}, score=score, target=target, generator=gen
        )
        assert removed == {n: plans[n][i] for n in names}
        for n in names:
            assert not bool((masks.masks[n] & ~before[n]).any())  # only shrink
    for n, f in zip(names, fractions, strict=True):
        pruned = int((~masks.masks[n]).sum())
        assert abs(pruned - f * masks.n_units[n]) < 1  # the target, up to one unit
        assert pruned == masks.n_units[n] - math.ceil((1 - f) * masks.n_units[n])
    layers = model.prunable_layers()
    expected = sum(int((~masks.masks[n]).sum()) * layers[n].weight[0].numel() for n in names)
    assert masks.sparsity == pytest.approx(expected / masks.total_weights)


@SETTINGS
@given(sparsity=st.floats(0.0, 0.99), scope=st.sampled_from(["layer", "global"]))
def test_weight_granularity_reaches_sparsity_within_one_weight(sparsity, scope):
    model = _mlp()
    layers = model.prunable_layers()
    magnitudes = {name: layer.weight.detach().abs().clone() for name, layer in layers.items()}
    masks = MaskSet(model, "weight")
    n = masks.n_units
    if scope == "global":  # one pooled budget, split arbitrarily: only the sum matters
        k = round(sparsity * masks.total_weights)
        share = {name: k * n[name] // masks.total_weights for name in n}
        share[next(iter(n))] += k - sum(share.values())
    else:
        share = {name: round(sparsity * n[name]) for name in n}
    masks.prune(
        share, score="magnitude", target="smallest", generator=torch.Generator(), scope=scope
    )
    assert abs(masks.pruned_weights - sparsity * masks.total_weights) <= len(n) / 2 + 1
    assert masks.pruned_weights == sum(share.values())
    for name in n:
        assert torch.count_nonzero(layers[name].weight[~masks.masks[name]]) == 0
    if scope == "global" and 0 < masks.pruned_weights < masks.total_weights:
        kept = torch.cat([magnitudes[m][masks.masks[m]] for m in n])
        gone = torch.cat([magnitudes[m][~masks.masks[m]] for m in n])
        assert gone.max() <= kept.min()  # the globally smallest magnitudes went


@SETTINGS
@given(
    counts=st.tuples(*[st.integers(1, 7)] * 3),
    score=st.sampled_from(["l2", "l1", "ebn"]),
    target=st.sampled_from(["smallest", "largest", "random"]),
    train_mode=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_pruned_channel_outputs_exactly_zero_after_bn(counts, score, target, train_mode, seed):
    """Any filters pruned by any score and target output exactly 0 after their BatchNorm."""
    torch.manual_seed(seed)
    model = _cnn1d(width=8)
    masks = MaskSet(model, "filter")
    units = dict(zip(("conv1", "conv2", "conv3"), counts, strict=True))
    masks.prune(units, score=score, target=target, generator=torch.Generator().manual_seed(seed))
    model.train(train_mode)
    outputs = {}
    for i, bn in enumerate(model.bns):
        bn.register_forward_hook(lambda m, a, out, i=i: outputs.__setitem__(f"conv{i + 1}", out))
    model(torch.randn(16, 1, 40))
    for name, out in outputs.items():
        dead = ~masks.masks[name]
        assert int(dead.sum()) == units[name]
        assert torch.count_nonzero(out[:, dead]) == 0
        assert torch.count_nonzero(out[:, ~dead]) > 0


def test_resnet_block_channel_is_zero_including_shortcut():
    torch.manual_seed(0)
    model = build_model("resnet20", 4, (3, 8, 8), 10)
    masks = MaskSet(model, "filter")
    masks.prune(
        {"layer1.0.conv2": 2, "layer2.0.conv2": 3},
        score="ebn",
        target="random",
        generator=torch.Generator().manual_seed(1),
    )
    model.train()
    x = torch.relu(model.bn1(model.conv1(torch.randn(4, 3, 8, 8))))
    pre = model.layer1[0].pre_activation(x)
    dead = ~masks.masks["layer1.0.conv2"]
    assert torch.count_nonzero(pre[:, dead]) == 0 and torch.count_nonzero(pre[:, ~dead]) > 0
    assert torch.equal(model.layer2[0].shortcut_mask.bool(), masks.masks["layer2.0.conv2"])


OPTIMIZERS = {
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adam_wd": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-1),
    "sgd_momentum_wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
    "sgd_nesterov": lambda p: torch.optim.SGD(
        p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3
    ),
}


@SETTINGS
@given(
    opt=st.sampled_from(sorted(OPTIMIZERS)),
    granularity=st.sampled_from(["filter", "weight"]),
    seed=st.integers(0, 100),
)
def test_masked_weights_stay_exactly_zero_through_training(opt, granularity, seed):
    model = _cnn1d(width=6, seed=seed)
    optimizer = OPTIMIZERS[opt](model.parameters())
    masks = MaskSet(model, granularity)
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(32, 1, 40, generator=gen), torch.randint(0, 10, (32,), generator=gen)

    def steps(n):
        for _ in range(n):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            masks.mask_grads_()
            optimizer.step()
            masks.apply_()

    steps(5)  # optimizer state is populated before the event
    units = {n: max(1, masks.n_units[n] // 3) for n in masks.n_units}
    masks.prune(units, score="l2", target="random", generator=gen)
    masks.zero_optimizer_state(optimizer)
    steps(25)
    layers, bns = model.prunable_layers(), model.following_bn()
    for name, mask in masks.masks.items():
        w = layers[name].weight
        dead = ~mask
        if granularity == "filter":
            assert (
                torch.count_nonzero(w[dead]) == 0
                and torch.count_nonzero(layers[name].bias[dead]) == 0
            )
            assert torch.count_nonzero(bns[name].weight[dead]) == 0
            assert torch.count_nonzero(bns[name].bias[dead]) == 0
        else:
            assert torch.count_nonzero(w[dead]) == 0
        masked = [w]
        if granularity == "filter":
            masked += [layers[name].bias, bns[name].weight, bns[name].bias]
        for p in masked:  # moments / momentum buffers of masked entries stay exactly 0
            for state in optimizer.state[p].values():
                if state.shape == p.shape:
                    assert torch.count_nonzero(state[dead]) == 0
        assert torch.count_nonzero(w[mask]) == w[mask].numel()  # survivors still train


def test_state_dict_round_trip_and_errors():
    model = _cnn1d()
    masks = MaskSet(model, "filter")
    masks.prune({"conv3": 2}, score="l2", target="smallest", generator=torch.Generator())
    other = MaskSet(_cnn1d(), "filter")
    other.load_state_dict(masks.state_dict())
    assert all(torch.equal(other.masks[n], masks.masks[n]) for n in masks.masks)
    assert other.sparsity == masks.sparsity > 0
    with pytest.raises(ValueError, match="granularity"):
        MaskSet(_cnn1d(), "weight").load_state_dict(masks.state_dict())
    with pytest.raises(KeyError, match="fc"):  # the model rules refuse it at validation
        masks.prune({"fc": 1}, score="l2", target="smallest", generator=torch.Generator())
    with pytest.raises(ValueError, match="cannot remove"):
        masks.prune({"conv3": 99}, score="l2", target="smallest", generator=torch.Generator())


def test_filter_choice_uses_the_official_cutoff_rule_and_weights_a_stable_sort():
    """Row norms [.3, .3, 0, .3, .9]: the filter rule prunes rows {0, 1} (official cutoff rule,
    trainables.pruning.scores), the weight rule the stable sort's smallest entries."""
    model = _mlp(width=5)
    name = next(iter(MaskSet(model, "filter").layers))
    with torch.no_grad():
        weight = dict(model.prunable_layers())[name].weight
        weight.zero_()
        weight[:, 0] = torch.tensor([0.3, 0.3, 0.0, 0.3, 0.9])
    gen = torch.Generator()
    rows = MaskSet(model, "filter").select({name: 2}, score="l2", target="smallest", generator=gen)
    assert rows[name].nonzero().flatten().tolist() == [0, 1]
    flat = MaskSet(model, "weight").select(
        {name: 2}, score="magnitude", target="largest", generator=gen
    )
    # |w| ranks .9 (row 4) first, then the first .3 by position (row 0): a stable sort
    assert flat[name][:, 0].nonzero().flatten().tolist() == [0, 4]

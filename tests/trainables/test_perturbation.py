"""Re-entry and noise injection: per-layer windows, exact zeros, restore, noise scale, resume.

The official pass sequence of whole trials is checked against an oracle in
``test_perturbation_official.py``; the conv-only Prune_L reference in ``test_conv_mask.py``.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import PerturbationConfig, TrialConfig
from trainables.errors import UserError
from trainables.loop import TrialRunner
from trainables.pruning import scores
from trainables.pruning.perturbation import (
    Perturbation,
    first_alive_std,
    official_passes_to_training_steps,
)

torch.set_num_threads(1)


class _Net(nn.Module):
    """Two prunable convs (6 units each), each followed by a BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm1d(6)
        self.conv2 = nn.Conv1d(6, 6, 3, padding=1)
        self.bn2 = nn.BatchNorm1d(6)
        self.fc = nn.Linear(6 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.relu(self.bn2(self.conv2(x))).flatten(1))


def _setup(
    mode: str, variant: str = "iter", steps: int = 3, restore: bool = False, seed=0, passes=None
):
    torch.manual_seed(seed)
    net = _Net()
    x, y = torch.randn(32, 1, 8), torch.randint(0, 3, (32,))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    cfg = PerturbationConfig(mode=mode, variant=variant, steps=steps, restore=restore)
    layers, bns = {"conv": net.conv, "conv2": net.conv2}, {"conv": net.bn, "conv2": net.bn2}
    pert = Perturbation(cfg, layers, bns, seed=seed, passes=passes)
    return net, opt, pert, x, y


def _step(net, opt, pert, x, y):
    pert.before_step()
    opt.zero_grad()
    F.cross_entropy(net(x), y).backward()
    opt.step()
    pert.after_step()


def _units(*idx: int) -> torch.Tensor:
    mask = torch.zeros(6, dtype=torch.bool)
    mask[list(idx)] = True
    return mask


def test_zeroing_holds_units_at_zero_on_every_forward_of_the_window_then_they_move_again():
    net, opt, pert, x, y = _setup("zeroing", steps=4)
    for _ in range(3):
        _step(net, opt, pert, x, y)
    n_params = sum(p.numel() for p in net.parameters())
    pert.on_event(0, {"conv": _units(1, 4)})
    rows = _units(1, 4)
    assert (net.conv.weight[rows] == 0).all()  # the post-event evaluation sees zeros
    for _ in range(4):
        pert.before_step()
        assert (net.conv.weight[rows] == 0).all()  # the forward pass sees zeros
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        pert.after_step()
    assert pert.open_layers() == []
    # as officially, the update after the window's last pass is not wiped: re-entry starts there
    assert (net.conv.weight[rows] != 0).all()
    assert (net.conv.weight[~rows] != 0).all()  # untargeted units untouched
    assert sum(p.numel() for p in net.parameters()) == n_params
    assert pert.alive()["conv"].tolist() == [True, False, True, True, False, True]
    assert pert.take_closed() == [
        {
            "layer": "conv",
            "event_epoch": 0,
            "window_steps": 4,
            "closed_by": "duration",
            "noise_draws_train": 4,
            "noise_draws_eval": 1,
        }
    ]


def test_zeroing_without_restore_leaves_bn_alone():
    net, opt, pert, x, y = _setup("zeroing", steps=2)
    gamma = net.bn.weight.detach().clone()
    pert.on_event(0, {"conv": _units(0)})
    assert torch.equal(net.bn.weight.detach(), gamma)


def test_restore_returns_exact_originals():
    net, opt, pert, x, y = _setup("zeroing", variant="cumulative", steps=5, restore=True)
    for _ in range(3):
        _step(net, opt, pert, x, y)
    rows = _units(2, 3)
    keys = ("weight", "bias", "running_mean", "running_var")
    w0 = net.conv.weight.detach()[rows].clone()
    bn0 = {k: getattr(net.bn, k).detach()[rows].clone() for k in keys}
    pert.on_event(0, {"conv": rows})
    assert (net.bn.weight[rows] == 0).all() and (net.bn.bias[rows] == 0).all()
    for _ in range(5):
        pert.before_step()
        assert (net.bn.weight[rows] == 0).all() and (net.conv.weight[rows] == 0).all()
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        pert.after_step()
    assert pert.open_layers() == []
    assert torch.equal(net.conv.weight.detach()[rows], w0)
    for k in keys:
        assert torch.equal(getattr(net.bn, k).detach()[rows], bn0[k]), k
    # running stats of the other channels did move during the window
    assert not torch.equal(net.bn.running_mean[~rows], torch.zeros(4))


def test_zero_step_window_only_perturbs_the_event_evaluation():
    net, opt, pert, x, y = _setup("zeroing", steps=0, restore=True)
    w0 = net.conv.weight.detach().clone()
    pert.on_event(0, {"conv": _units(5)})
    assert (net.conv.weight[5] == 0).all() and pert.open_layers() == ["conv"]
    pert.before_step()  # closes the window before the first training step
    assert pert.open_layers() == [] and torch.equal(net.conv.weight.detach(), w0)


def test_windows_are_per_layer_and_only_the_layers_own_event_ends_one():
    # official models.py: each conv has its own batches_since_targeting; _prune_layer resets only
    # the counter of the layer it targets
    net, opt, pert, x, y = _setup("zeroing", variant="cumulative", steps=5)
    pert.on_event(0, {"conv": _units(0)})
    _step(net, opt, pert, x, y)
    pert.on_event(1, {"conv2": _units(3)})  # another layer's event: conv's window stays open
    assert pert.open_layers() == ["conv", "conv2"]
    assert pert.units["conv2"].nonzero().flatten().tolist() == [3]  # only conv2's own targets
    assert pert.take_closed() == []
    _step(net, opt, pert, x, y)
    pert.on_event(2, {"conv": _units(2)})  # conv's own event: its window restarts
    closed = pert.take_closed()
    assert [(c["layer"], c["event_epoch"], c["closed_by"], c["window_steps"]) for c in closed] == [
        ("conv", 0, "own_event", 2)
    ]
    assert pert.units["conv"].nonzero().flatten().tolist() == [0, 2]  # cumulative: conv's own
    assert pert.windows.open["conv2"].train == 1  # conv2's window kept counting


def test_a_window_cut_by_its_own_event_is_not_restored():
    # official: the reset makes the next pass save the *current* values as the originals, so the
    # new window restores unit 1 to what it was at the cut, not to its value before event 0
    net, opt, pert, x, y = _setup("zeroing", variant="cumulative", steps=3, restore=True)
    w1 = net.conv.weight.detach()[1].clone()
    pert.on_event(0, {"conv": _units(1)})
    _step(net, opt, pert, x, y)  # zeroed, then one update
    cut = net.conv.weight.detach()[1].clone()
    pert.on_event(1, {"conv": _units(4)})
    for _ in range(3):
        _step(net, opt, pert, x, y)
    assert pert.open_layers() == []
    assert torch.equal(net.conv.weight.detach()[1], cut) and not torch.equal(cut, w1)


def test_gaussian_noise_has_the_first_alive_unit_std():
    torch.manual_seed(0)
    fc = nn.Linear(4000, 6)
    with torch.no_grad():
        fc.weight[0] *= 7.0  # targeted below: must not set the scale
        fc.weight[1] *= 3.0  # the first still-alive unit: sets sigma
    cfg = PerturbationConfig(mode="gaussian", steps=3)
    pert = Perturbation(cfg, {"fc": fc}, {}, seed=1)
    sigma = fc.weight[1].std().item()
    assert first_alive_std(fc.weight, torch.tensor([False, True, True, False, True, True])) == sigma
    before = fc.weight.detach().clone()
    rows = torch.tensor([True, False, False, True, False, False])
    pert.on_event(0, {"fc": rows})
    noise = fc.weight.detach()[rows] - before[rows]  # 8,000 draws
    assert noise.std().item() == pytest.approx(sigma, rel=0.05)
    assert abs(noise.mean().item()) < 0.05 * sigma
    assert torch.equal(fc.weight.detach()[~rows], before[~rows])
    for _ in range(3):  # accumulates: after 4 additions the std is 2 sigma
        pert.before_step()
        pert.after_step()
    assert pert.open_layers() == []
    total = fc.weight.detach()[rows] - before[rows]
    assert total.std().item() == pytest.approx(2 * sigma, rel=0.05)


def test_iter_and_cumulative_variants_choose_their_units():
    for variant, expect in (("iter", [2]), ("cumulative", [0, 2])):
        net, opt, pert, x, y = _setup("zeroing", variant=variant, steps=1)
        pert.on_event(0, {"conv": _units(0)})
        _step(net, opt, pert, x, y)
        _step(net, opt, pert, x, y)  # unit 0 re-enters
        assert (net.conv.weight[0] != 0).all()
        pert.on_event(1, {"conv": _units(2)})
        zero_rows = [i for i in range(6) if (net.conv.weight[i] == 0).all()]
        assert zero_rows == expect, variant


def test_choose_ranks_only_untargeted_units():
    net, opt, pert, x, y = _setup("zeroing", steps=0)
    with torch.no_grad():
        net.conv.weight.copy_(torch.arange(6.0).view(6, 1, 1).expand(6, 1, 3))  # l2 grows with row
    gen = torch.Generator().manual_seed(0)
    first = pert.choose({"conv": 2}, score="l2", target="smallest", generator=gen)
    assert first["conv"].nonzero().flatten().tolist() == [0, 1]
    pert.on_event(0, first)
    pert.before_step()  # close the 0-step window
    second = pert.choose({"conv": 2}, score="l2", target="smallest", generator=gen)
    assert second["conv"].nonzero().flatten().tolist() == [2, 3]  # 0 and 1 are never re-chosen


def test_a_unit_is_targeted_at_most_once():
    net, opt, pert, x, y = _setup("zeroing")
    pert.on_event(0, {"conv": _units(1)})
    with pytest.raises(ValueError, match="targeted twice"):
        pert.on_event(1, {"conv": _units(1, 2)})


@pytest.mark.parametrize("passes", [None, 9])
def test_resume_with_two_open_windows_is_exact(passes):
    def run(split: int | None):
        args = ("gaussian", "cumulative", 6, True)
        net, opt, pert, x, y = _setup(*args, passes=passes)
        pert.on_event(0, {"conv": _units(1)})
        closed = []
        for i in range(10):
            if i == split:  # checkpoint, rebuild everything, load
                assert len(pert.open_layers()) == 2
                state = copy.deepcopy(
                    {"m": net.state_dict(), "o": opt.state_dict(), "p": pert.state_dict()}
                )
                net, opt, pert, _, _ = _setup(*args, seed=99, passes=passes)
                net.load_state_dict(state["m"])
                opt.load_state_dict(state["o"])
                pert.load_state_dict(state["p"])
            if i == 2:
                pert.on_event(2, {"conv2": _units(0, 5)})
            if i == 4:
                pert.on_event(4, {"conv": _units(3)})
            _step(net, opt, pert, x, y)
            pert.before_eval_batch()
            closed += pert.take_closed()
        return net.state_dict(), closed

    (straight, closed), (resumed, closed_resumed) = run(None), run(3)
    assert closed == closed_resumed and closed
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k


def test_official_pass_counts_map_to_the_papers_legends():
    assert [official_passes_to_training_steps(x, 79) for x in (0, 129, 1500)] == [0, 50, 1105]
    assert [official_passes_to_training_steps(x, 40) for x in (129, 750, 1500, 3000)] == [
        89,
        630,
        1220,
        2480,
    ]


def test_bad_config_is_rejected():
    net = _Net()
    with pytest.raises(ValueError, match="perturbation.mode"):
        Perturbation(PerturbationConfig(mode="none"), {"conv": net.conv}, {}, seed=0)


# --- in the training loop -------------------------------------------------------------------------


def _trial(data_dir: str, **perturbation) -> TrialConfig:
    # cnn1d width 8, 800 training examples at batch 64: 13 steps per epoch. conv3 loses 2 + 2 units
    # at epochs 0 and 1.
    return TrialConfig.from_dict(
        {
            "dataset": {"data_dir": data_dir, "num_samples": 1000},
            "model": {"name": "cnn1d", "width": 8},
            "train": {"epochs": 4, "batch_size": 64, "lr": 3e-3},
            "pruning": {
                "method": "schedule",
                "target": "largest",
                "layers": [
                    {"name": "conv3", "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 1}
                ],
                "perturbation": perturbation,
            },
            "seed": 3,
        }
    )


def test_zeroing_trial_in_the_loop_re_enters_and_never_prunes(data_dir):
    cfg = _trial(data_dir, mode="zeroing", steps=20, eval_passes="none")
    runner = TrialRunner(cfg, device="cpu", num_threads=1)
    n_params = sum(p.numel() for p in runner.model.parameters())
    conv3 = runner.model.prunable_layers()["conv3"]
    records = [runner.run_epoch() for _ in range(3)]  # epoch 2 ends 13 steps into a 20-step window
    second = runner.method.perturbation.units["conv3"]
    assert int(second.sum()) == 2 and runner.method.perturbation.open_layers() == ["conv3"]
    # only the last step's update separates the units from zero (the next pass re-zeroes them)
    assert conv3.weight[second].abs().max() < 0.01
    records.append(runner.run_epoch())  # the window ends 7 steps into epoch 3
    assert (conv3.weight[second] != 0).all()  # re-entry
    assert [r["is_event"] for r in records] == [True, True, False, False]
    assert [r["units_removed"] for r in records[:2]] == [[{"layer": "conv3", "units": 2}]] * 2
    assert all(r["sparsity"] == 0.0 for r in records)
    for r in records[:2]:  # instability measured around the event's first perturbed state
        assert r["test_acc"] == r["acc_after"]
        assert r["instability"] == pytest.approx(
            (r["acc_before"] - r["acc_after"]) / r["acc_before"]
        )
    assert sum(p.numel() for p in runner.model.parameters()) == n_params
    alive = runner.method.perturbation.alive()["conv3"]
    assert int((~alive).sum()) == 4
    # eval_passes none: the first window is cut by conv3's own event after one epoch's 13 steps
    assert [r["windows_closed"] for r in records] == [
        None,
        [_closed(0, 13, "own_event", 1)],
        None,
        [_closed(1, 20, "duration", 1)],
    ]


def _closed(epoch: int, steps: int, by: str, evals: int) -> list[dict]:
    return {
        "layer": "conv3",
        "event_epoch": epoch,
        "window_steps": steps,
        "closed_by": by,
        "noise_draws_train": steps,
        "noise_draws_eval": evals,
    }


def test_perturbation_needs_filter_granularity(data_dir):
    cfg = _trial(data_dir, mode="zeroing", steps=1)
    cfg = dataclasses.replace(cfg, pruning=dataclasses.replace(cfg.pruning, granularity="weight"))
    with pytest.raises(UserError, match="pruning.granularity"):
        TrialRunner(cfg, device="cpu")


def test_eval_passes_none_needs_a_noise_mode(data_dir):
    """``official`` is the default (idle without a noise mode); ``none`` changes only noise runs."""
    assert _trial(data_dir, mode="gaussian").pruning.perturbation.eval_passes == "official"
    TrialRunner(_trial(data_dir, mode="conv_mask"), device="cpu")
    cfg = _trial(data_dir, mode="conv_mask", eval_passes="none")
    with pytest.raises(UserError, match="pruning.perturbation.eval_passes: none needs"):
        TrialRunner(cfg, device="cpu")


@pytest.mark.parametrize("mode", ["none", "zeroing"])
def test_events_record_the_official_pruned_score(data_dir, mode):
    """E[BN] smallest: conv3's channels with beta << 0 score exactly 0 and are chosen first, so
    the event's pruned score (official ``_prune``: mean of max(0, chosen units' mean)) is 0 and
    the official analysis would not count the event; with positive scores it is their mean."""
    cfg = _trial(data_dir, **({"mode": mode, "steps": 1} if mode != "none" else {}))
    pruning = dataclasses.replace(cfg.pruning, target="smallest", score="ebn")
    runner = TrialRunner(dataclasses.replace(cfg, pruning=pruning), device="cpu", num_threads=1)
    bn = runner.model.following_bn()["conv3"]
    with torch.no_grad():
        bn.weight.fill_(1.0)
        bn.bias.copy_(torch.tensor([-50.0, -50.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    first = runner.run_epoch()  # training moves beta by ~lr per step: -50 stays at E[BN] = 0
    assert first["is_event"] and first["pruned_score"] == 0.0
    with torch.no_grad():
        bn.bias.fill_(2.0)
        bn.weight.fill_(1.0)
        expected = float(scores.ebn(bn.weight, bn.bias)[0])
    second = runner.run_epoch()
    assert second["is_event"] and second["pruned_score"] == pytest.approx(expected, rel=0.1)
    assert second["pruned_score"] > 0
    assert runner.run_epoch()["pruned_score"] is None  # no event

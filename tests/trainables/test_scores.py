"""Scores and targets: E[BN] against Monte Carlo, norms against definitions, exact-k targets."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainables.errors import UserError
from trainables.pruning import scores


def test_ebn_matches_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    gamma = torch.tensor([1.0, -2.0, 0.5, 0.1, 3.0, -0.7, 0.0, 0.0])
    beta = torch.tensor([0.0, 0.5, -1.0, 0.3, -4.0, 2.0, 1.5, -1.5])
    z = torch.randn(1_000_000, 1, generator=gen, dtype=torch.float64)
    mc = torch.relu(gamma.double() * z + beta.double()).mean(0)
    se = torch.relu(gamma.double() * z + beta.double()).std(0) / 1000.0
    exact = scores.ebn(gamma, beta).double()
    assert torch.all((exact - mc).abs() <= 5 * se + 1e-6), (exact, mc)
    # gamma = 0 is the constant max(beta, 0), with no NaN.
    assert exact[6] == pytest.approx(1.5) and exact[7] == 0.0


def test_ebn_uses_abs_gamma():
    beta = torch.tensor([0.2, 0.2])
    assert torch.equal(
        scores.ebn(torch.tensor([0.8, -0.8]), beta)[0:1],
        scores.ebn(torch.tensor([0.8, 0.8]), beta)[1:2],
    )


def test_filter_norms_exclude_bias_and_follow_definition():
    w = torch.randn(6, 3, 5, 5)
    assert torch.allclose(scores.l2(w), torch.sqrt((w**2).sum(dim=(1, 2, 3))))
    assert torch.allclose(scores.l1(w), w.abs().sum(dim=(1, 2, 3)))
    lin = torch.randn(4, 7)
    assert torch.allclose(scores.l2(lin), lin.norm(dim=1))
    assert torch.equal(scores.magnitude(lin), lin.abs())


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 60),
    data=st.data(),
    target=st.sampled_from(["smallest", "largest", "random"]),
)
def test_select_picks_exactly_k_alive_extremes(n, data, target):
    values = data.draw(st.lists(st.floats(-5, 5, allow_nan=False), min_size=n, max_size=n))
    alive = torch.tensor(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    k = data.draw(st.integers(0, int(alive.sum())))
    s = torch.tensor(values)
    chosen = scores.select(s, alive, k, target, torch.Generator().manual_seed(1))
    assert int(chosen.sum()) == k and not bool((chosen & ~alive).any())
    kept = alive & ~chosen
    if k and kept.any() and target != "random":
        if target == "smallest":
            assert s[chosen].max() <= s[kept].min()
        else:
            assert s[chosen].min() >= s[kept].max()


def test_random_target_is_uniform_and_seeded():
    alive = torch.tensor([True, False, True, True, False, True])
    counts = torch.zeros(6)
    gen = torch.Generator().manual_seed(3)
    for _ in range(2000):
        counts += scores.select(torch.zeros(6), alive, 2, "random", gen).float()
    assert counts[~alive].sum() == 0
    assert torch.allclose(counts[alive] / 2000, torch.full((4,), 0.5), atol=0.05)
    a = scores.select(torch.zeros(6), alive, 2, "random", torch.Generator().manual_seed(9))
    b = scores.select(torch.zeros(6), alive, 2, "random", torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


def test_registries_list_valid_names_on_miss():
    with pytest.raises(UserError, match="choose one of: smallest, largest, random"):
        scores.get_target("median")
    with pytest.raises(UserError, match="choose one of: l2, l1, ebn"):
        scores.get_filter_score("magnitude")
    with pytest.raises(UserError, match="choose one of: magnitude"):
        scores.get_weight_score("ebn")

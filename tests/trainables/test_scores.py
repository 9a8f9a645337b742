"""Scores and targets: E[BN] against Monte Carlo and the official rule, norms against definitions,
exact-k targets, tracked scores read from their tracker."""

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


# --- reference: bbartoldson/GeneralizationStabilityTradeoff, models.py, _make_bn_prunable, its
# inner _bn_expectation: w = |weight| (scoring 'EBN') or the signed weight ('EBN_alt', when 'alt'
# is in the scoring name); alpha = (0 - bias) / w; Z = 1 - Phi(alpha) (torch.distributions
# Normal(0, 1)); trunc = bias + exp(log_prob(alpha)) / Z * w, set to 0 where Z == 0; expectation
# = Z * trunc, set to 0 where Z is NaN.


def _official_bn_expectation(weight: torch.Tensor, bias: torch.Tensor, alt: bool) -> torch.Tensor:
    w = weight if alt else weight.abs()
    alpha = (0 - bias) / w
    # validate_args=False: the torch of the official code did not check arguments (alpha may be NaN)
    normal = torch.distributions.normal.Normal(0.0, 1.0, validate_args=False)
    z = 1 - normal.cdf(alpha)
    trunc = bias + normal.log_prob(alpha).exp() / z * w
    trunc[z == 0] = 0
    expectation = z * trunc
    expectation[torch.isnan(z)] = 0
    return expectation


GAMMA = torch.tensor([1.0, -2.0, 0.5, -0.1, 3.0, -0.7, 0.0, 0.0, 0.0, 0.1, -0.1, 1e-3, -0.4])
BETA = torch.tensor([0.0, 0.5, -1.0, 0.3, -4.0, 2.0, 1.5, -1.5, 0.0, -1.0, -1.0, 0.2, -0.05])


@pytest.mark.parametrize(("name", "alt"), [("ebn", False), ("ebn_signed", True)])
def test_bn_scores_follow_the_official_rule(name, alt):
    gen = torch.Generator().manual_seed(5)
    gamma = torch.cat([GAMMA, torch.randn(200, generator=gen)])
    beta = torch.cat([BETA, torch.randn(200, generator=gen)])
    ours = scores.FILTER_SCORES[name](torch.randn(213, 3), gamma, beta)
    official = _official_bn_expectation(gamma, beta, alt)
    torch.testing.assert_close(ours, official, rtol=1e-5, atol=1e-7)
    # the special cases exactly: gamma 0 (beta > 0, < 0, = 0) and Z rounded to 0 (beta/|gamma| = -10)
    special = [6, 7, 8, 9] + ([] if alt else [10])
    assert torch.equal(ours[special], official[special])
    assert ours[6] == 1.5 and not torch.isnan(ours).any()


def test_ebn_signed_differs_from_ebn_only_where_gamma_is_negative():
    same = GAMMA >= 0
    assert torch.equal(scores.ebn_signed(GAMMA, BETA)[same], scores.ebn(GAMMA, BETA)[same])
    signed, plain = scores.ebn_signed(GAMMA, BETA)[~same], scores.ebn(GAMMA, BETA)[~same]
    assert torch.all(signed < plain)
    assert (scores.ebn_signed(GAMMA, BETA) < 0).any()  # no longer an expectation of a ReLU


class _FixedTracker:
    def __init__(self, values: dict[str, torch.Tensor]):
        self.values = values

    def scores(self, name: str) -> torch.Tensor:
        return self.values[name]


def test_tracked_scores_are_read_from_the_tracker():
    assert set(scores.TRACKED_SCORES) == {"activations"}
    layer = torch.nn.Conv2d(2, 4, 3)
    tracked = _FixedTracker({"block.conv1": torch.tensor([3.0, 1.0, 2.0, 0.0])})
    got = scores.unit_scores(
        "activations", layer, None, "filter", name="block.conv1", tracker=tracked
    )
    assert torch.equal(got, tracked.values["block.conv1"])
    with pytest.raises(ValueError, match="read from a tracker"):
        scores.unit_scores("activations", layer, None, "filter")
    assert scores.make_tracker("l2", layer, ["x"]) is None


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
    """ties="index" (weights): a stable sort never skips a strictly better-ranked score."""
    values = data.draw(st.lists(st.floats(-5, 5, allow_nan=False), min_size=n, max_size=n))
    alive = torch.tensor(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    k = data.draw(st.integers(0, int(alive.sum())))
    s = torch.tensor(values)
    chosen = scores.select(s, alive, k, target, torch.Generator().manual_seed(1), ties="index")
    assert int(chosen.sum()) == k and not bool((chosen & ~alive).any())
    kept = alive & ~chosen
    if k and kept.any() and target != "random":
        if target == "smallest":
            assert s[chosen].max() <= s[kept].min()
        else:
            assert s[chosen].min() >= s[kept].max()


def official_choice(values: list[float], alive: list[bool], k: int, largest: bool) -> set[int]:
    """Bartoldson et al.'s filter choice (``models.py::_prune_layer``), restated: among the alive
    units (in index order), the cutoff is the k-th best score (``topk``); every unit whose score is
    at or beyond the cutoff is a candidate, and the first k candidates by index are pruned."""
    live = [i for i, a in enumerate(alive) if a]
    ranked = sorted((values[i] for i in live), reverse=largest)
    if k == 0:
        return set()
    cutoff = ranked[k - 1]
    candidates = [i for i in live if (values[i] >= cutoff if largest else values[i] <= cutoff)]
    return set(candidates[:k])


def _chosen(values, alive, k, target, ties="cutoff") -> set[int]:
    pick = scores.select(
        torch.tensor(values), torch.tensor(alive), k, target, torch.Generator(), ties=ties
    )
    return set(pick.nonzero().flatten().tolist())


def test_cutoff_ties_follow_the_official_rule_and_can_skip_a_smaller_score():
    values, alive = [0.3, 0.3, 0.0, 0.3, 0.9], [True] * 5
    # k-th smallest = .3: candidates {0, 1, 2, 3} (all <= .3); the first two by index
    assert (
        _chosen(values, alive, 2, "smallest") == {0, 1} == official_choice(values, alive, 2, False)
    )
    assert _chosen(values, alive, 2, "smallest", ties="index") == {0, 2}  # the stable sort
    # largest: k-th largest = .3, candidates {0, 1, 3, 4} (>= .3); the first two skip the .9
    assert _chosen(values, alive, 2, "largest") == {0, 1} == official_choice(values, alive, 2, True)
    # indices count among all units; a dead unit is never a candidate
    dead = [False, True, True, True, True]
    assert _chosen(values, dead, 2, "smallest") == {1, 2} == official_choice(values, dead, 2, False)
    # no ties at the cutoff: the k best, as any rule
    assert _chosen([0.5, 0.1, 0.4, 0.2], [True] * 4, 2, "smallest") == {1, 3}


@settings(max_examples=300, deadline=None)
@given(data=st.data(), target=st.sampled_from(["smallest", "largest"]))
def test_cutoff_choice_equals_the_official_rule_with_many_ties(data, target):
    n = data.draw(st.integers(1, 40))
    # few distinct values (exact zeros included, as E[BN] has): ties at the cutoff are common
    pool = torch.tensor([0.0, 0.25, 0.5, 1.5, -0.75]).tolist()
    values = data.draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    alive = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    k = data.draw(st.integers(0, sum(alive)))
    largest = target == "largest"
    assert _chosen(values, alive, k, target) == official_choice(values, alive, k, largest)


def test_cutoff_choice_on_ebn_scores_with_exact_zeros():
    """E[BN] is exactly 0 where beta/|gamma| is very negative: Prune_S ties at 0 often."""
    gen = torch.Generator().manual_seed(0)
    differ = 0
    for _ in range(100):
        gamma = torch.randn(32, generator=gen) * 0.1
        beta = torch.randn(32, generator=gen) - torch.rand(32, generator=gen) * 2
        ebn = scores.ebn(gamma, beta).tolist()
        alive = (torch.rand(32, generator=gen) < 0.8).tolist()
        k = int(torch.randint(1, sum(alive) + 1, (1,), generator=gen))
        assert _chosen(ebn, alive, k, "smallest") == official_choice(ebn, alive, k, False)
        differ += _chosen(ebn, alive, k, "smallest", ties="index") != _chosen(
            ebn, alive, k, "smallest"
        )
    assert differ > 0  # the two rules do differ on these scores


def test_event_score_is_the_official_mean_of_clamped_layer_means():
    """Official ``_prune``: each pruned layer adds max(its chosen units' mean score, 0); the sum
    is divided by the number of pruned layers; -1 when none was pruned."""
    assert scores.event_score([0.0, 0.0]) == 0.0
    assert scores.event_score([0.3, -0.1]) == pytest.approx(0.15)
    assert scores.event_score([torch.tensor(0.5)]) == 0.5
    assert scores.event_score([]) == -1.0


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
    with pytest.raises(UserError, match="choose one of: l2, l1, ebn, ebn_signed, activations$"):
        scores.get_filter_score("magnitude")
    with pytest.raises(UserError, match="choose one of: magnitude"):
        scores.get_weight_score("ebn")

"""Flatness measures against closed forms, full Hessians, per-example loops and the official rules.

The official rules (Bartoldson et al.'s repository bbartoldson/GeneralizationStabilityTradeoff)
are restated in the helpers ``_official_power_reference`` and ``_official_epsilon`` from their
definitions, in plain numpy / plain parameter updates, and compared with prunetune's measures.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import FlatnessConfig, TrialConfig
from trainables.errors import UserError
from trainables.flatness import (
    EPS_GRID,
    eps_flatness,
    flatness_subset,
    grad_noise_trace,
    hessian_topk,
    measure_flatness,
)
from trainables.loop import TrialRunner

torch.set_num_threads(1)


def _half_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out.squeeze(-1) - y) ** 2).mean()


def _least_squares(n: int = 64, d: int = 6, seed: int = 0):
    """Linear model with H = X^T X / n, spectrum spread so power iteration converges fast."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    u, _ = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=torch.float64))
    eig = torch.tensor([9.0, 5.0, 2.5, 1.2, 0.5, 0.2], dtype=torch.float64)[:d]
    x = math.sqrt(n) * u @ torch.diag(eig.sqrt()) @ q.T  # X^T X / n = Q diag(eig) Q^T
    model = nn.Linear(d, 1, bias=False).double()
    w_star = torch.randn(d, generator=g, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(w_star)
    y = x @ w_star  # the model sits at the minimum: L(w* + e v) = e^2 v^T H v / 2
    return model, x, y


ALGORITHMS = ("official", "projected")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_hessian_topk_matches_least_squares_closed_form(algorithm):
    model, x, y = _least_squares()
    h = (x.T @ x / x.shape[0]).numpy()
    expected = np.linalg.eigvalsh(h)[::-1][:3]
    vals, vecs = hessian_topk(
        model, _half_mse, x, y, k=3, iters=300, tol=1e-13, algorithm=algorithm
    )
    np.testing.assert_allclose(vals.numpy(), expected, rtol=1e-7)
    # the vectors are unit eigenvectors: H v = lambda v
    for lam, v in zip(vals.numpy(), vecs.numpy(), strict=True):
        np.testing.assert_allclose(np.linalg.norm(v), 1.0, rtol=1e-9)
        np.testing.assert_allclose(h @ v, lam * v, atol=1e-5)


def _tiny_tanh_net():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x = torch.randn(20, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    return net, x, y


def _full_hessian(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """The cross-entropy Hessian [P, P] over all parameters, in ``named_parameters`` order."""
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, [s.numel() for s in shapes])
        params = {n: t.view(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        return F.cross_entropy(torch.func.functional_call(net, params, (x,)), y)

    return torch.autograd.functional.hessian(loss_of, flat0).numpy()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_hessian_topk_matches_full_hessian_of_tiny_network(algorithm):
    net, x, y = _tiny_tanh_net()
    full = _full_hessian(net, x, y)
    exact = np.linalg.eigvalsh(full)
    top = exact[np.argsort(-np.abs(exact))][:3]  # power iteration finds largest |lambda|
    vals, vecs = hessian_topk(
        net, F.cross_entropy, x, y, k=3, iters=3000, tol=1e-14, algorithm=algorithm
    )
    np.testing.assert_allclose(np.sort(vals.numpy()), np.sort(top), rtol=1e-5, atol=1e-8)
    for lam, v in zip(vals.numpy(), vecs.numpy(), strict=True):
        np.testing.assert_allclose(full @ v, lam * v, atol=1e-4)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_hessian_topk_with_masks_is_the_restricted_hessian(algorithm):
    model, x, y = _least_squares()
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0, 1.0]], dtype=torch.float64)
    live = mask.flatten().bool().numpy()
    h = (x.T @ x / x.shape[0]).numpy()[np.ix_(live, live)]
    vals, vecs = hessian_topk(
        model,
        _half_mse,
        x,
        y,
        k=2,
        iters=400,
        tol=1e-13,
        masks={"weight": mask},
        algorithm=algorithm,
    )
    np.testing.assert_allclose(vals.numpy(), np.linalg.eigvalsh(h)[::-1][:2], rtol=1e-6)
    assert (vecs[:, ~torch.from_numpy(live)] == 0).all()


# --- the official deflated power iteration ---------------------------------------------------------


def _official_power_reference(
    h: np.ndarray, start: np.ndarray, k: int, steps: int = 20, tol: float = 1e-4
) -> tuple[np.ndarray, np.ndarray, int]:
    """Top-k pairs of the symmetric matrix h by the official rules, restated in numpy.

    Rules of ``deflated_power_iteration`` and ``power_iteration`` in
    bbartoldson/GeneralizationStabilityTradeoff, ``hessian_eigenthings/power_iter.py``: pair 1
    starts from ``start`` as given (officially a uniform [0, 1) draw, not normalised), pair j
    from pair j-1's vector; pair j's matrix is pair j-1's minus ``lambda v v^T`` of pair j-1's
    estimates. A step maps v to ``A v``, estimates ``lambda = v . A v`` with the v before the
    step, then sets v to ``A v / |A v|``; it stops after ``steps`` steps or as soon as
    ``|(lambda - previous lambda) / lambda| < tol`` (previous lambda starts at 0), returning the
    last estimate and the last v. Returns (eigenvalues [k] descending, their vectors [k, P],
    the number of matrix-vector products).
    """
    a, v, found, products = h.copy(), start.copy(), [], 0
    for _ in range(k):
        previous = 0.0
        for _ in range(steps):
            av = a @ v
            products += 1
            lam = float(v @ av)
            v = av / np.linalg.norm(av)
            if abs((lam - previous) / lam) < tol:
                break
            previous = lam
        found.append((lam, v))
        a = a - lam * np.outer(v, v)
    found.sort(key=lambda pair: -pair[0])
    return np.array([lam for lam, _ in found]), np.stack([v for _, v in found]), products


def _official_start(size: int, seed: int) -> np.ndarray:
    """The documented seeded start of ``hessian_topk(algorithm="official")``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(size, generator=gen, dtype=torch.float64).numpy()


class _Point(nn.Module):
    """A parameter vector w whose "output" is w itself, for every example."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(size, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w.expand(x.shape[0], -1)


def _symmetric(eigenvalues: list[float], first: np.ndarray | None = None) -> np.ndarray:
    """A symmetric matrix with these eigenvalues; ``first`` (if given) is the first's vector."""
    rng = np.random.default_rng(0)
    m = rng.standard_normal((len(eigenvalues), len(eigenvalues)))
    if first is not None:
        m[:, 0] = first
    q, _ = np.linalg.qr(m)
    return q @ np.diag(eigenvalues) @ q.T


def _quadratic_form(a: np.ndarray):
    """(model, loss, x, y, calls): loss 0.5 w^T A w has the explicit Hessian A; ``calls[0]``
    counts the loss evaluations (one per Hessian-vector product here)."""
    a_t, calls = torch.from_numpy(a), [0]

    def loss(out: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return 0.5 * torch.einsum("bi,ij,bj->b", out, a_t, out).mean()

    x, y = torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4)
    return _Point(a.shape[0]), loss, x, y, calls


# close pairs and an indefinite spectrum, so 20 steps stop short of convergence
SLOW_SPECTRUM = [5.0, 4.6, -4.4, 4.2, 3.0, -2.0, 1.5, 1.0, 0.5, 0.2, 0.1, 0.05]


@pytest.mark.parametrize("masked", [False, True])
def test_official_algorithm_follows_the_official_deflated_power_iteration(masked):
    a = _symmetric(SLOW_SPECTRUM)
    model, loss, x, y, calls = _quadratic_form(a)
    live = np.ones(a.shape[0])
    masks = None
    if masked:
        live[[1, 6]] = 0.0
        masks = {"w": torch.from_numpy(live)}
    ref_vals, ref_vecs, products = _official_power_reference(
        a * np.outer(live, live), _official_start(a.shape[0], 5) * live, k=4
    )
    vals, vecs = hessian_topk(model, loss, x, y, k=4, masks=masks, seed=5, algorithm="official")
    np.testing.assert_allclose(vals.numpy(), ref_vals, rtol=1e-10)
    np.testing.assert_allclose(vecs.numpy(), ref_vecs, atol=1e-9)
    assert calls[0] == products and products > 20  # the rule's stops, not just its values
    # truncated: the official sum is not the true top-4 sum, and the projected algorithm differs
    projected, _ = hessian_topk(model, loss, x, y, k=4, masks=masks, seed=5, algorithm="projected")
    assert abs(float(projected.sum()) - float(vals.sum())) > 1e-3 * abs(float(vals.sum()))


def test_official_algorithm_starts_unnormalised():
    # start on the top eigenvector: the first estimate is lambda |start|^2, not lambda, so the
    # official rule sees two equal estimates only at step 3 (2 from a normalised start)
    start = _official_start(12, 2)
    a = _symmetric([3.0, 0.9, -0.8, 0.5, 0.4, 0.3, -0.2, 0.1, 0.05, 0.02, 0.01, 0.005], start)
    _, _, products = _official_power_reference(a, start, k=1)
    assert products == 3
    model, loss, x, y, calls = _quadratic_form(a)
    vals, _ = hessian_topk(model, loss, x, y, k=1, seed=2, algorithm="official")
    assert calls[0] == 3
    assert float(vals[0]) == pytest.approx(3.0, rel=1e-12)


def test_official_algorithm_follows_the_official_rules_on_a_network_hessian():
    net, x, y = _tiny_tanh_net()
    full = _full_hessian(net, x, y)
    ref_vals, ref_vecs, _ = _official_power_reference(full, _official_start(full.shape[0], 11), k=5)
    vals, vecs = hessian_topk(net, F.cross_entropy, x, y, k=5, seed=11, algorithm="official")
    np.testing.assert_allclose(vals.numpy(), ref_vals, rtol=1e-8)
    np.testing.assert_allclose(vecs.numpy(), ref_vecs, atol=1e-7)
    projected, _ = hessian_topk(net, F.cross_entropy, x, y, k=5, seed=11, algorithm="projected")
    assert not np.allclose(projected.numpy(), ref_vals, rtol=1e-3)


def test_hessian_topk_rejects_an_unknown_algorithm():
    model, x, y = _least_squares()
    with pytest.raises(ValueError, match="flatness.hessian: must be one of official, projected"):
        hessian_topk(model, _half_mse, x, y, k=1, algorithm="lanczos")


class _TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm1d(3)
        self.fc = nn.Linear(3 * 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def _trained_tiny_cnn():
    torch.manual_seed(0)
    model = _TinyCNN().double()
    x = torch.randn(24, 1, 8, dtype=torch.float64)
    y = torch.randint(0, 4, (24,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):  # a few steps so BN running stats differ from their init
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model, x, y


def test_grad_noise_trace_matches_per_example_loop():
    model, x, y = _trained_tiny_cnn()
    model.eval()
    expected = 0.0
    for i in range(x.shape[0]):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        expected += sum(float(p.grad.pow(2).sum()) for p in model.parameters())
    expected /= x.shape[0]
    model.train()
    got = grad_noise_trace(model, F.cross_entropy, x, y, chunk_size=5)
    assert got == pytest.approx(expected, rel=1e-10)
    assert model.training  # the training flag is restored


# --- epsilon-flatness ------------------------------------------------------------------------------

LS_EIGENVALUES = (9.0, 5.0, 2.5, 1.2, 0.5, 0.2)  # H of _least_squares, descending


def _official_grid() -> list[float]:
    """|eps| values of the official ``[round(x, 2) for x in np.linspace(-.4, .4, 81)]``."""
    return sorted({abs(round(float(e), 2)) for e in np.linspace(-0.4, 0.4, 81)})


def _grid_up(eps: float) -> float:
    """The first official grid point >= eps (inf past the grid)."""
    return min((g for g in _official_grid() if g >= eps), default=math.inf)


def test_eps_grid_is_the_official_grid():
    assert list(EPS_GRID) == [g for g in _official_grid() if g > 0]


def test_eps_flatness_on_quadratic_is_analytic():
    # grid: the first official grid point >= sqrt(2 delta / lambda); bisect: sqrt(2 delta / lambda)
    # (the grid value is new: the bisected one used to be the only one)
    model, x, y = _least_squares()
    vals, vecs = hessian_topk(model, _half_mse, x, y, k=6, iters=300, tol=1e-13)
    np.testing.assert_allclose(vals.numpy(), LS_EIGENVALUES, rtol=1e-6)
    delta = 0.07  # keeps every crossing below at least 2e-3 away from a grid point
    crossings = [math.sqrt(2 * delta / lam) for lam in LS_EIGENVALUES]
    assert all(min(abs(c - g) for g in EPS_GRID) > 2e-3 for c in crossings[:2])
    # smallest over directions: the sharpest (top) eigenvector
    eps = eps_flatness(model, _half_mse, x, y, vecs, delta)
    assert eps.grid == _grid_up(crossings[0]) == 0.13
    assert eps.bisect == pytest.approx(crossings[0], rel=1e-6)
    # along the second eigenvector alone
    eps2 = eps_flatness(model, _half_mse, x, y, vecs[1:2], delta)
    assert eps2.grid == _grid_up(crossings[1]) == 0.17
    assert eps2.bisect == pytest.approx(crossings[1], rel=1e-6)
    # past the grid (0.84 > 0.4): inf officially; the bisection scans on and finds it
    eps6 = eps_flatness(model, _half_mse, x, y, vecs[5:6], delta)
    assert eps6.grid == math.inf
    assert eps6.bisect == pytest.approx(crossings[5], rel=1e-6)
    # a flat direction never crosses: inf, not a grid edge
    flat_dir = torch.zeros_like(vecs[:1])
    flat = eps_flatness(model, _half_mse, x, y, flat_dir, delta)
    assert flat.grid == flat.bisect == math.inf


def test_eps_flatness_takes_the_worse_sign():
    # moved 0.05 along v1 off the minimum: the rise L(w + e v1) - L(w) = lambda (e^2 + 0.1 e) / 2
    # is larger for e > 0; given the direction -v1, the worse sign is the negative one
    model, x, y = _least_squares()
    _, vecs = hessian_topk(model, _half_mse, x, y, k=1, iters=300, tol=1e-13)
    with torch.no_grad():
        model.weight += 0.05 * vecs[0].view_as(model.weight)
    lam, delta = LS_EIGENVALUES[0], 0.07
    worse = (-0.1 + math.sqrt(0.01 + 8 * delta / lam)) / 2  # 0.084; the other sign: 0.184
    eps = eps_flatness(model, _half_mse, x, y, -vecs[:1], delta)
    assert eps.grid == _grid_up(worse) == 0.09
    assert eps.bisect == pytest.approx(worse, rel=1e-6)


def _official_epsilon(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, directions: torch.Tensor
) -> dict[float, float]:
    """The official worst loss rise per |eps| (its epsilon: the least |eps| with worst >= delta).

    Restated from bbartoldson/GeneralizationStabilityTradeoff: ``experiments.py`` (``main``,
    the ``gen_matrices`` block) adds ``e * v`` to the parameters, in ``model.parameters()``
    order, for every top eigenvector v and every e of ``round(linspace(-0.4, 0.4, 81), 2)``,
    and records the test loss; ``figures_and_tables/Figure_Ei.py`` takes per |e| the largest loss
    increase over eigenvectors and signs, keeps those >= 0.1 and takes the smallest |e|.
    """
    model.eval()
    with torch.no_grad():
        base = float(F.cross_entropy(model(x), y))
    worst: dict[float, float] = {}
    for v in directions:
        for e in (round(float(e), 2) for e in np.linspace(-0.4, 0.4, 81)):
            perturbed = copy.deepcopy(model)
            with torch.no_grad():
                start = 0
                for p in perturbed.parameters():
                    p += e * v[start : start + p.numel()].view_as(p)
                    start += p.numel()
                rise = float(F.cross_entropy(perturbed(x), y)) - base
            worst[abs(e)] = max(worst.get(abs(e), -math.inf), rise)
    return worst


def test_eps_flatness_grid_follows_the_official_rule_on_a_network():
    model, x, y = _trained_tiny_cnn()
    _, vecs = hessian_topk(model, F.cross_entropy, x, y, k=3)
    worst = _official_epsilon(model, x, y, vecs)
    # a delta between the worst rise at 0.23 and every smaller |eps|'s: the answer is 0.23
    below = max(w for e, w in worst.items() if e < 0.23)
    assert worst[0.23] > below
    delta = 0.5 * (below + worst[0.23])
    assert min(e for e, w in worst.items() if w >= delta) == 0.23
    eps = eps_flatness(model, F.cross_entropy, x, y, vecs, delta, chunk_size=7)
    assert eps.grid == 0.23
    assert 0.22 < eps.bisect <= 0.23


def test_eps_flatness_is_measured_on_the_evaluation_set():
    # eval set: the subset's rows and 3x those rows, tiled past one chunk; its Hessian is 5 H
    model, x, y = _least_squares()
    eval_x, eval_y = torch.cat([x, 3 * x]).repeat(10, 1), torch.cat([y, 3 * y]).repeat(10)
    assert eval_x.shape[0] > 512
    cfg = FlatnessConfig(epochs=(0,), top_k=2, eps_delta=0.07)
    out = measure_flatness(model, x, y, cfg, loss_fn=_half_mse, eval_x=eval_x, eval_y=eval_y)
    crossing = math.sqrt(2 * 0.07 / (5 * LS_EIGENVALUES[0]))  # 0.0558
    assert out["eps_flatness"] == _grid_up(crossing) == 0.06
    assert out["eps_flatness_bisect"] == pytest.approx(crossing, rel=1e-3)
    # the Hessian stays on the subset; without an evaluation set epsilon is the subset's
    assert out["hessian_topk_sum"] == pytest.approx(sum(LS_EIGENVALUES[:2]), rel=1e-3)
    on_subset = measure_flatness(model, x, y, cfg, loss_fn=_half_mse)
    assert on_subset["eps_flatness"] == _grid_up(math.sqrt(2 * 0.07 / LS_EIGENVALUES[0])) == 0.13
    with pytest.raises(ValueError, match="eval_x and eval_y"):
        measure_flatness(model, x, y, cfg, loss_fn=_half_mse, eval_x=eval_x)


def test_measure_flatness_leaves_model_and_rng_untouched():
    model, x, y = _trained_tiny_cnn()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    cfg = FlatnessConfig(epochs=(0,), top_k=3, power_iters=10)
    out = measure_flatness(model, x, y, cfg)
    keys = {"hessian_topk_sum", "grad_noise_trace", "eps_flatness", "eps_flatness_bisect"}
    assert set(out) == keys | {"flatness_time_s"}
    assert out["grad_noise_trace"] > 0 and out["flatness_time_s"] > 0
    assert out["eps_flatness"] > 0
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(torch.get_rng_state(), rng)
    # deterministic: the same call gives the same numbers
    again = measure_flatness(model, x, y, cfg)
    for key in keys:
        assert again[key] == out[key]


def test_flatness_subset_is_the_fixed_prefix():
    assert flatness_subset(1000, 512).tolist() == list(range(512))
    assert flatness_subset(100, 512).tolist() == list(range(100))
    with pytest.raises(ValueError, match="subset_size"):
        flatness_subset(10, 0)


# --- in the training loop -------------------------------------------------------------------------


def test_flatness_epochs_add_the_keys_to_their_records(tmp_path):
    cfg = TrialConfig.from_dict(
        {
            "dataset": {"data_dir": str(tmp_path), "num_samples": 1000},
            "model": {"name": "cnn1d", "width": 8},
            "train": {"epochs": 3, "batch_size": 64, "lr": 3e-3},
            "pruning": {
                "method": "schedule",
                "layers": [
                    {"name": "conv3", "final_fraction": 0.5, "start_epoch": 0, "end_epoch": 0}
                ],
            },
            "flatness": {"epochs": [1], "subset_size": 64, "top_k": 2, "power_iters": 5},
        }
    )
    runner = TrialRunner(cfg, device="cpu", num_threads=1)
    records = list(runner.run())
    keys = ("hessian_topk_sum", "grad_noise_trace", "eps_flatness", "flatness_time_s")
    assert all(records[1][k] is not None and records[1][k] > 0 for k in keys)
    assert all(r[k] is None for r in (records[0], records[2]) for k in keys)
    # pruned filters (conv3 lost 4 of 8 at epoch 0) are outside the measured subspace
    live = runner.masks.parameter_masks(runner.model)
    w = runner.model.prunable_layers()["conv3"].weight
    names = {id(p): n for n, p in runner.model.named_parameters()}
    assert int((live[names[id(w)]] == 0).all(dim=(1, 2)).sum()) == 4
    with pytest.raises(UserError, match="flatness.epochs"):
        bad = dataclasses.replace(cfg, flatness=dataclasses.replace(cfg.flatness, epochs=(3,)))
        TrialRunner(bad, device="cpu")

"""Flatness measures against closed forms, full Hessians and per-example loops."""

from __future__ import annotations

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


def test_hessian_topk_matches_least_squares_closed_form():
    model, x, y = _least_squares()
    h = (x.T @ x / x.shape[0]).numpy()
    expected = np.linalg.eigvalsh(h)[::-1][:3]
    vals, vecs = hessian_topk(model, _half_mse, x, y, k=3, iters=300, tol=1e-13)
    np.testing.assert_allclose(vals.numpy(), expected, rtol=1e-7)
    # the vectors are unit eigenvectors: H v = lambda v
    for lam, v in zip(vals.numpy(), vecs.numpy(), strict=True):
        np.testing.assert_allclose(np.linalg.norm(v), 1.0, rtol=1e-9)
        np.testing.assert_allclose(h @ v, lam * v, atol=1e-5)


def test_hessian_topk_matches_full_hessian_of_tiny_network():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x = torch.randn(20, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, [s.numel() for s in shapes])
        params = {n: t.view(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        return F.cross_entropy(torch.func.functional_call(net, params, (x,)), y)

    full = torch.autograd.functional.hessian(loss_of, flat0).numpy()
    exact = np.linalg.eigvalsh(full)
    top = exact[np.argsort(-np.abs(exact))][:3]  # power iteration finds largest |lambda|
    vals, vecs = hessian_topk(net, F.cross_entropy, x, y, k=3, iters=3000, tol=1e-14)
    np.testing.assert_allclose(np.sort(vals.numpy()), np.sort(top), rtol=1e-5, atol=1e-8)
    for lam, v in zip(vals.numpy(), vecs.numpy(), strict=True):
        np.testing.assert_allclose(full @ v, lam * v, atol=1e-4)


def test_hessian_topk_with_masks_is_the_restricted_hessian():
    model, x, y = _least_squares()
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0, 1.0]], dtype=torch.float64)
    live = mask.flatten().bool().numpy()
    h = (x.T @ x / x.shape[0]).numpy()[np.ix_(live, live)]
    vals, vecs = hessian_topk(
        model, _half_mse, x, y, k=2, iters=400, tol=1e-13, masks={"weight": mask}
    )
    np.testing.assert_allclose(vals.numpy(), np.linalg.eigvalsh(h)[::-1][:2], rtol=1e-6)
    assert (vecs[:, ~torch.from_numpy(live)] == 0).all()


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


def test_eps_flatness_on_quadratic_is_analytic():
    model, x, y = _least_squares()
    vals, vecs = hessian_topk(model, _half_mse, x, y, k=2, iters=300, tol=1e-13)
    delta = 0.1
    # smallest over directions: the sharpest (top) eigenvector
    eps = eps_flatness(model, _half_mse, x, y, vecs, delta)
    assert eps == pytest.approx(math.sqrt(2 * delta / float(vals[0])), rel=1e-6)
    # along the second eigenvector alone
    eps2 = eps_flatness(model, _half_mse, x, y, vecs[1:], delta)
    assert eps2 == pytest.approx(math.sqrt(2 * delta / float(vals[1])), rel=1e-6)
    # a flat direction never crosses: inf, not a grid edge
    flat_dir = torch.zeros_like(vecs[:1])
    assert eps_flatness(model, _half_mse, x, y, flat_dir, delta) == math.inf


def test_measure_flatness_leaves_model_and_rng_untouched():
    model, x, y = _trained_tiny_cnn()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    cfg = FlatnessConfig(epochs=(0,), top_k=3, power_iters=10)
    out = measure_flatness(model, x, y, cfg)
    assert set(out) == {"hessian_topk_sum", "grad_noise_trace", "eps_flatness", "flatness_time_s"}
    assert out["grad_noise_trace"] > 0 and out["flatness_time_s"] > 0
    assert out["eps_flatness"] > 0
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(torch.get_rng_state(), rng)
    # deterministic: the same call gives the same numbers
    again = measure_flatness(model, x, y, cfg)
    for key in ("hessian_topk_sum", "grad_noise_trace", "eps_flatness"):
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

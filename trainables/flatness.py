"""Flatness measures of a trained model (Bartoldson et al. 2020, Fig. 6 and Appendix E).

All measures are taken on a fixed evaluation subset (``flatness_subset``: the first
``subset_size`` examples of the configured split, as the official code's
``SubsetRandomSampler(range(512))``), with the model in eval mode (BN uses its running statistics,
dropout is off), with respect to every trainable parameter. They never modify the model: every
evaluation goes through ``torch.func.functional_call`` on detached copies of the parameters, the
training flag is restored, and no global RNG is consumed (random starts come from a local
generator), so measuring in the middle of a run leaves the run bit-for-bit unchanged.

- ``hessian_topk``: the k eigenpairs of largest magnitude of the Hessian of the mean loss, by
  deflated power iteration over Hessian-vector products (double backward), as the official code's
  vendored ``hessian_eigenthings`` (20 steps per pair, relative-change stop 1e-4). Two deliberate
  differences, both making it more accurate, not different in what it estimates: each pair starts
  from a fresh Gaussian vector (the official code restarts from the previous eigenvector), and
  deflation projects found eigenvectors out (``P H P`` with ``P = I - V V^T``) instead of
  subtracting ``lambda v v^T`` with the estimated lambda. Reported statistic: the sum of the k
  eigenvalues ("Tr(H_100)" for k = 100).
- ``grad_noise_trace``: Tr(C) = (1/n) sum_i ||grad_w l(x_i)||^2, uncentered (the mean gradient is
  not subtracted), with per-example gradients from ``torch.func.vmap(grad(...))``.
- ``eps_flatness``: the smallest |eps| at which the loss at ``w + eps * v`` exceeds the loss at
  ``w`` by ``delta``, over the given unit directions v (the top eigenvectors) and both signs. The
  official code scans ``eps in linspace(-0.4, 0.4, 81)``; we scan the same 0.01 grid, extend it
  geometrically past 0.4 (to ~410) when no crossing was found, and then bisect inside the
  crossing grid cell, so the answer is exact to ~1e-8 instead of to the grid step. ``inf`` when
  no crossing exists up to the end of the scan. The official code evaluated these losses on the
  full test set; here they use the same subset as the other two measures.

Masked (pruned) parameters: pass ``masks`` (parameter name -> 0/1 tensor of its shape) to
restrict every measure to the live coordinates (``M H M``, masked per-example gradients,
directions inside the live subspace), as the official code's masked forward does implicitly.

Costs on ``n`` subset examples: one HVP ~ 2.2 gradient evaluations over n examples (chunked by
``chunk_size``); ``hessian_topk`` does at most ``k * iters`` HVPs and keeps k vectors of P floats
(P = parameter count) in memory; ``grad_noise_trace`` ~ one vmapped backward; ``eps_flatness`` at
most ~70 loss evaluations per direction and sign. Measured (``bench/train_overhead.py``, one CPU
thread, MNIST-1D cnn1d, defaults n = 512, k = 10, 20 steps): ~7 s per measurement, ~28 training
epochs of that model, 99% of it in ``hessian_topk``; ``flatness_time_s`` records it per trial.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from trainables.config import FlatnessConfig

__all__ = [
    "LossFn",
    "flatness_subset",
    "hessian_topk",
    "grad_noise_trace",
    "eps_flatness",
    "measure_flatness",
    "EPS_DIRECTIONS",
]

LossFn = Callable[[Tensor, Tensor], Tensor]  # (outputs [B, ...], targets [B]) -> scalar mean loss

EPS_DIRECTIONS = 10  # the official epsilon-flatness uses the top-10 eigenvectors
POWER_TOL = 1e-4  # hessian_eigenthings' power_iter_err_threshold
_EPS_GRID_STEP = 0.01  # official linspace(-0.4, 0.4, 81)
_EPS_GRID_MAX = 0.4
_EPS_DOUBLINGS = 10  # extension past the official grid: 0.8, 1.6, ..., 409.6
_BISECT_STEPS = 20  # 0.01 / 2**20 ~ 1e-8
_PER_SAMPLE_FLOATS = {"cpu": 2**26, "cuda": 2**28}  # per-example gradient chunk: 256 MiB / 1 GiB


def flatness_subset(n_examples: int, subset_size: int) -> Tensor:
    """Indices of the fixed evaluation subset: the first ``min(subset_size, n_examples)`` examples.

    Deterministic and seed-independent, so every trial of a study (and every epoch of a trial) is
    measured on the same examples, as the official ``range(512)`` sampler. Returns int64 [m].
    """
    if subset_size < 1:
        raise ValueError(f"flatness.subset_size: must be >= 1, got {subset_size}")
    return torch.arange(min(subset_size, n_examples))


@dataclass
class _Flat:
    """A model's trainable parameters as one flat vector, evaluated functionally."""

    model: nn.Module
    names: list[str]
    shapes: list[torch.Size]
    base: Tensor  # [P] current parameter values (detached copy)
    live: Tensor | None  # [P] 0/1 float mask of unpruned coordinates, None = all live
    buffers: dict[str, Tensor]

    @classmethod
    def of(cls, model: nn.Module, masks: Mapping[str, Tensor] | None) -> _Flat:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        names = [n for n, _ in named]
        base = torch.cat([p.detach().reshape(-1) for _, p in named]).clone()
        live = None
        if masks:
            unknown = sorted(set(masks) - set(names))
            if unknown:
                raise ValueError(f"masks: {unknown[0]!r} is not a trainable parameter name")
            live = torch.cat(
                [
                    masks[n].detach().reshape(-1).to(base)
                    if n in masks
                    else torch.ones(p.numel(), dtype=base.dtype, device=base.device)
                    for n, p in named
                ]
            )
        return cls(
            model, names, [p.shape for _, p in named], base, live, dict(model.named_buffers())
        )

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        sizes = [s.numel() for s in self.shapes]
        parts = torch.split(flat, sizes)
        return {n: t.view(s) for n, t, s in zip(self.names, parts, self.shapes, strict=True)}

    def restrict(self, v: Tensor) -> Tensor:
        return v if self.live is None else v * self.live

    def outputs(self, flat: Tensor, x: Tensor) -> Tensor:
        return functional_call(self.model, (self.unflatten(flat), self.buffers), (x,))


def _chunks(x: Tensor, y: Tensor, size: int):
    for start in range(0, x.shape[0], size):
        yield x[start : start + size], y[start : start + size]


class _EvalMode:
    """Context: model in eval mode, its training flags restored on exit."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.flags = [m.training for m in model.modules()]

    def __enter__(self) -> nn.Module:
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        for m, flag in zip(self.model.modules(), self.flags, strict=True):
            m.training = flag


def _loss(flat: _Flat, w: Tensor, x: Tensor, y: Tensor, loss_fn: LossFn, chunk_size: int) -> float:
    """Mean loss over (x, y) at flat parameters w (no grad)."""
    n = x.shape[0]
    total = 0.0
    with torch.no_grad():
        for xc, yc in _chunks(x, y, chunk_size):
            total += float(loss_fn(flat.outputs(w, xc), yc)) * xc.shape[0] / n
    return total


def _hvp(flat: _Flat, v: Tensor, x: Tensor, y: Tensor, loss_fn: LossFn, chunk_size: int) -> Tensor:
    """H v for the mean loss over (x, y), by double backward; v, result [P]."""
    n = x.shape[0]
    out = torch.zeros_like(v)
    for xc, yc in _chunks(x, y, chunk_size):
        w = flat.base.detach().requires_grad_(True)
        loss = loss_fn(flat.outputs(w, xc), yc) * (xc.shape[0] / n)
        (g,) = torch.autograd.grad(loss, w, create_graph=True)
        (hv,) = torch.autograd.grad(g, w, grad_outputs=v)
        out += hv
    return out


def _project_out(v: Tensor, basis: Sequence[Tensor]) -> Tensor:
    for u in basis:
        v = v - torch.dot(u, v) * u
    return v


def hessian_topk(
    model: nn.Module,
    loss_fn: LossFn,
    x: Tensor,
    y: Tensor,
    k: int,
    iters: int = 20,
    tol: float = POWER_TOL,
    *,
    masks: Mapping[str, Tensor] | None = None,
    seed: int = 0,
    chunk_size: int = 512,
) -> tuple[Tensor, Tensor]:
    """The k Hessian eigenpairs of largest |eigenvalue| (deflated power iteration; see module doc).

    Args:
        model: evaluated in eval mode, never modified.
        loss_fn: mean loss ``(outputs [B, ...], y [B]) -> scalar``; the Hessian is that of
            ``loss_fn`` averaged over all of x (chunks weighted by size).
        x, y: the evaluation subset, on the model's device ([n, ...] and [n]).
        k: eigenpairs wanted (capped at the number of live parameters).
        iters: power-iteration steps per pair (each one HVP).
        tol: stop a pair when ``|lambda_t - lambda_{t-1}| <= tol * |lambda_t|``.
        masks: optional {param name: 0/1 tensor}: the Hessian restricted to live coordinates.
        seed: seeds the local CPU generator of the random starts (no global RNG is used).
        chunk_size: examples per forward pass (memory bound; does not change the result).

    Returns:
        ``(eigenvalues [k] float64 on CPU, eigenvectors [k, P] unit-norm, on the model's device)``,
        sorted by eigenvalue descending (as ``hessian_eigenthings``). P counts every trainable
        parameter in ``named_parameters`` order; masked coordinates of the vectors are 0.
    """
    with _EvalMode(model):
        flat = _Flat.of(model, masks)
        live = flat.base.numel() if flat.live is None else int(flat.live.sum())
        k = min(k, live)
        gen = torch.Generator().manual_seed(seed)
        vals: list[float] = []
        vecs: list[Tensor] = []
        for _ in range(k):
            v = torch.randn(flat.base.numel(), generator=gen, dtype=torch.float64)
            v = _unit(_project_out(flat.restrict(v.to(flat.base)), vecs))
            lam, prev = 0.0, None
            for _ in range(iters):
                hv = _project_out(flat.restrict(_hvp(flat, v, x, y, loss_fn, chunk_size)), vecs)
                lam = float(torch.dot(v, hv))
                norm = float(hv.norm())
                if norm == 0.0:  # v spans the null space: eigenvalue 0
                    break
                v = _unit(_project_out(hv / norm, vecs))
                if prev is not None and abs(lam - prev) <= tol * abs(lam):
                    break
                prev = lam
            vals.append(lam)
            vecs.append(v)
    order = sorted(range(k), key=lambda i: -vals[i])
    eigenvalues = torch.tensor([vals[i] for i in order], dtype=torch.float64)
    if not vecs:
        return eigenvalues, flat.base.new_zeros((0, flat.base.numel()))
    return eigenvalues, torch.stack([vecs[i] for i in order])


def _unit(v: Tensor) -> Tensor:
    norm = v.norm()
    return v / norm if norm > 0 else v


def grad_noise_trace(
    model: nn.Module,
    loss_fn: LossFn,
    x: Tensor,
    y: Tensor,
    *,
    masks: Mapping[str, Tensor] | None = None,
    chunk_size: int | None = None,
) -> float:
    """Tr(C) = (1/n) sum_i ||grad_w loss_fn(f(x_i), y_i)||^2 (uncentered), in squared loss units.

    Per-example gradients come from ``vmap(grad(...))`` over ``functional_call`` with the model
    in eval mode, each example forwarded alone (batch of 1, as the official batch-size-1 loop).
    ``chunk_size`` examples are vmapped at once (default: as many as fit ~256 MiB of gradients).
    With ``masks`` the masked coordinates are excluded.
    """
    with _EvalMode(model):
        flat = _Flat.of(model, masks)
        params = flat.unflatten(flat.base)
        live = flat.unflatten(flat.live) if flat.live is not None else None

        def one(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
            out = functional_call(model, (p, flat.buffers), (xi.unsqueeze(0),))
            return loss_fn(out, yi.unsqueeze(0))

        per_example = vmap(grad(one), in_dims=(None, 0, 0))
        budget = _PER_SAMPLE_FLOATS.get(flat.base.device.type, _PER_SAMPLE_FLOATS["cpu"])
        size = chunk_size or max(1, budget // max(1, flat.base.numel()))
        total = torch.zeros((), dtype=torch.float64, device=flat.base.device)
        for xc, yc in _chunks(x, y, size):
            grads = per_example(params, xc, yc)
            for name, g in grads.items():
                g = g.detach() if live is None else g.detach() * live[name]
                total += g.double().pow(2).sum()
    return float(total) / x.shape[0]


def eps_flatness(
    model: nn.Module,
    loss_fn: LossFn,
    x: Tensor,
    y: Tensor,
    directions: Tensor,
    delta: float,
    *,
    chunk_size: int = 512,
) -> float:
    """Smallest |eps| with ``L(w + eps * v) - L(w) >= delta`` over the directions and both signs.

    Args:
        directions: [m, P] unit vectors in the flat parameter order of ``hessian_topk``.
        delta: the loss rise to find (nats for cross-entropy; 0.1 in the paper).

    Returns:
        eps in parameter-norm units (the perturbation's L2 norm); ``inf`` when no direction
        reaches delta within the scan (see module docstring). Along an eigenvector of a quadratic
        loss with eigenvalue lambda > 0 this is ``sqrt(2 * delta / lambda)``.
    """
    if delta <= 0:
        raise ValueError(f"flatness.eps_delta: must be > 0, got {delta}")
    with _EvalMode(model):
        flat = _Flat.of(model, None)
        base_loss = _loss(flat, flat.base, x, y, loss_fn, chunk_size)

        def rise(eps: float, v: Tensor) -> float:
            return _loss(flat, flat.base + eps * v, x, y, loss_fn, chunk_size) - base_loss

        best = math.inf
        for v in directions.to(flat.base):
            for sign in (1.0, -1.0):
                best = min(best, _first_crossing(lambda e, d=sign * v: rise(e, d), delta, best))
    return best


def _eps_grid() -> list[float]:
    n = round(_EPS_GRID_MAX / _EPS_GRID_STEP)
    grid = [_EPS_GRID_STEP * i for i in range(1, n + 1)]
    return grid + [_EPS_GRID_MAX * 2**j for j in range(1, _EPS_DOUBLINGS + 1)]


def _first_crossing(rise: Callable[[float], float], delta: float, limit: float) -> float:
    """First grid cell (below `limit`) where rise >= delta, then bisected; inf if none."""
    lo = 0.0
    for eps in _eps_grid():
        if eps > limit:
            return math.inf
        if rise(eps) >= delta:
            hi = eps
            for _ in range(_BISECT_STEPS):
                mid = 0.5 * (lo + hi)
                if rise(mid) >= delta:
                    hi = mid
                else:
                    lo = mid
            return hi
        lo = eps
    return math.inf


def measure_flatness(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    cfg: FlatnessConfig,
    *,
    masks: Mapping[str, Tensor] | None = None,
    loss_fn: LossFn = F.cross_entropy,
    seed: int = 0,
) -> dict[str, float]:
    """All flatness measures of `model` on the subset (x [n, ...], y [n]) as record entries.

    Returns ``hessian_topk_sum`` (sum of the ``cfg.top_k`` eigenvalues, ``cfg.power_iters``
    steps each), ``grad_noise_trace`` (Tr(C)), ``eps_flatness`` (along the top
    ``min(top_k, EPS_DIRECTIONS)`` eigenvectors, rise ``cfg.eps_delta``) and ``flatness_time_s``
    (wall seconds of this call, so users can budget). The model is not modified.
    """
    start = time.perf_counter()
    vals, vecs = hessian_topk(
        model, loss_fn, x, y, cfg.top_k, cfg.power_iters, masks=masks, seed=seed
    )
    trace = grad_noise_trace(model, loss_fn, x, y, masks=masks)
    eps = eps_flatness(model, loss_fn, x, y, vecs[:EPS_DIRECTIONS], cfg.eps_delta)
    return {
        "hessian_topk_sum": float(vals.sum()),
        "grad_noise_trace": trace,
        "eps_flatness": eps,
        "flatness_time_s": time.perf_counter() - start,
    }

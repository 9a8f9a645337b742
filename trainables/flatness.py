"""Flatness measures of a trained model (Bartoldson et al. 2020, Fig. 6 and Appendix E).

The Hessian and Tr(C) are taken on a fixed evaluation subset (``flatness_subset``: the first
``subset_size`` examples of the configured split, as the official ``range(512)`` sampler),
epsilon-flatness on a separate evaluation set (officially the whole test loader); in eval mode
(BN running statistics, no dropout), with respect to every trainable parameter. The model is
never modified (``torch.func.functional_call`` on detached parameter copies, training flag
restored) and no global RNG is consumed (a local generator), so measuring in the middle of a run
leaves the run bit-for-bit unchanged.

- ``hessian_topk``: k Hessian eigenpairs of the mean loss by deflated power iteration over
  Hessian-vector products (double backward), at most ``iters`` steps per pair (20 officially),
  stopping at a relative change of the eigenvalue below 1e-4. ``algorithm="official"`` (default)
  is the official code's vendored ``hessian_eigenthings`` (warm starts, deflation by the estimated
  ``lambda v v^T``); ``"projected"`` restarts each pair and projects found eigenvectors out, more
  accurate when the steps run out but not the paper's number (:mod:`trainables.power_iteration`).
  Reported statistic: the sum of the k eigenvalues ("Tr(H_100)" for k = 100).
- ``grad_noise_trace``: Tr(C) = (1/n) sum_i ||grad_w l(x_i)||^2, uncentered (the mean gradient is
  not subtracted), with per-example gradients from ``torch.func.vmap(grad(...))``.
- ``eps_flatness``: the official rule (``figures_and_tables/Figure_Ei.py``): the smallest |eps|
  of ``round(linspace(-0.4, 0.4, 81), 2)`` at which the loss at ``w + eps * v`` rises by at least
  delta (0.1) for some top-10 eigenvector v and sign. ``inf`` when no |eps| <= 0.4 does: censored
  above the grid, it ranks as flatter than any measured value and stays distinct from ``None``
  (not measured) and NaN (failed). Also ``bisect``: that crossing refined inside its grid cell
  (to ~1e-8), scanning on geometrically to ~410 when the grid has none.

Masked (pruned) parameters: pass ``masks`` (parameter name -> 0/1 tensor of its shape) to
restrict every measure to the live coordinates (``M H M``, masked per-example gradients,
directions inside the live subspace), as the official code's masked forward does implicitly.

Costs: an HVP ~ 2.2 gradient evaluations over the subset; ``hessian_topk`` <= ``k * iters`` HVPs
and k vectors of P floats; ``grad_noise_trace`` ~ one vmapped backward; ``eps_flatness`` <= 20 * 40
evaluations of the evaluation set, plus ~20 to bisect. ``flatness_time_s`` records it per trial;
``bench/flatness_algorithms.py`` times the two Hessian algorithms side by side.
"""

from __future__ import annotations

import math
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from trainables.config import FlatnessConfig, HessianAlgorithm
from trainables.models.base import eval_mode
from trainables.power_iteration import official_topk, projected_topk

__all__ = [
    "LossFn",
    "HessianAlgorithm",
    "HESSIAN_ALGORITHMS",
    "EpsFlatness",
    "EPS_GRID",
    "flatness_subset",
    "hessian_topk",
    "grad_noise_trace",
    "eps_flatness",
    "measure_flatness",
    "EPS_DIRECTIONS",
]

LossFn = Callable[[Tensor, Tensor], Tensor]  # (outputs [B, ...], targets [B]) -> scalar mean loss
HESSIAN_ALGORITHMS: tuple[HessianAlgorithm, ...] = typing.get_args(HessianAlgorithm)

EPS_DIRECTIONS = 10  # the official epsilon-flatness uses the top-10 eigenvectors
POWER_TOL = 1e-4  # hessian_eigenthings' power_iter_err_threshold
# |eps| of the official round(linspace(-0.4, 0.4, 81), 2), without 0 (whose rise is 0 < delta)
EPS_GRID: tuple[float, ...] = tuple(round(0.01 * i, 2) for i in range(1, 41))
_EPS_EXTENSION = tuple(0.4 * 2**j for j in range(1, 11))  # bisect only: 0.8, 1.6, ..., 409.6
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
    algorithm: HessianAlgorithm = "official",
) -> tuple[Tensor, Tensor]:
    """k Hessian eigenpairs by deflated power iteration (``algorithm``: see module doc).

    Args:
        model: evaluated in eval mode, never modified.
        loss_fn: mean loss ``(outputs [B, ...], y [B]) -> scalar``; the Hessian is that of
            ``loss_fn`` averaged over all of x (chunks weighted by size).
        x, y: the evaluation subset, on the model's device ([n, ...] and [n]).
        k: eigenpairs wanted (capped at the number of live parameters).
        iters: at most this many power steps per pair (each one HVP), >= 1.
        tol: a pair stops at this relative change of lambda (:mod:`trainables.power_iteration`).
        masks: optional {param name: 0/1 tensor}: the Hessian restricted to live coordinates.
        seed: seeds a local CPU ``torch.Generator`` (no global RNG is used). ``official`` starts
            from ``torch.rand(P, generator=torch.Generator().manual_seed(seed),
            dtype=torch.float64)`` cast to the parameters' dtype, masked coordinates zeroed, not
            normalised; ``projected`` draws one such ``torch.randn`` vector per pair.
        chunk_size: examples per forward pass (memory bound; does not change the result).
        algorithm: ``"official"`` (the paper's) or ``"projected"``.

    Returns:
        ``(eigenvalues [k] float64 on CPU, eigenvectors [k, P] unit-norm, on the model's device)``,
        sorted by eigenvalue descending (as ``hessian_eigenthings``). P counts every trainable
        parameter in ``named_parameters`` order; masked coordinates of the vectors are 0.
    """
    if algorithm not in HESSIAN_ALGORITHMS:
        raise ValueError(
            f"flatness.hessian: must be one of {', '.join(HESSIAN_ALGORITHMS)}, got {algorithm!r}"
        )
    if iters < 1:
        raise ValueError(f"flatness.power_iters: must be >= 1, got {iters}")
    with eval_mode(model):
        flat = _Flat.of(model, masks)
        size = flat.base.numel()
        k = min(k, size if flat.live is None else int(flat.live.sum()))
        gen = torch.Generator().manual_seed(seed)

        def hvp(v: Tensor) -> Tensor:
            return flat.restrict(_hvp(flat, v, x, y, loss_fn, chunk_size))

        def draw(sample: Callable[..., Tensor]) -> Tensor:
            v = sample(size, generator=gen, dtype=torch.float64)
            return flat.restrict(v.to(flat.base))

        if algorithm == "official":
            vals, vecs = official_topk(hvp, draw(torch.rand), k, iters, tol)
        else:
            vals, vecs = projected_topk(hvp, lambda: draw(torch.randn), k, iters, tol)
    order = sorted(range(k), key=lambda i: -vals[i])
    eigenvalues = torch.tensor([vals[i] for i in order], dtype=torch.float64)
    if not vecs:
        return eigenvalues, flat.base.new_zeros((0, size))
    return eigenvalues, torch.stack([vecs[i] for i in order])


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
    with eval_mode(model):
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


@dataclass(frozen=True)
class EpsFlatness:
    """Epsilon-flatness in parameter-norm units (the perturbation's L2 norm): ``grid`` the official
    value, a point of ``EPS_GRID`` or ``inf``; ``bisect`` the crossing refined inside that grid
    cell, ``<= grid``, ``inf`` when none is found up to 409.6 either."""

    grid: float
    bisect: float


def eps_flatness(
    model: nn.Module,
    loss_fn: LossFn,
    x: Tensor,
    y: Tensor,
    directions: Tensor,
    delta: float,
    *,
    chunk_size: int = 512,
) -> EpsFlatness:
    """Smallest |eps| with ``max_{v, sign} L(w + sign * eps * v) - L(w) >= delta`` (module doc).

    Args:
        x, y: the evaluation set ([n, ...], [n]), the full test set for the paper's number;
            losses are means over all of it, ``chunk_size`` examples per forward pass.
        directions: [m, P] unit vectors in the flat parameter order of ``hessian_topk``.
        delta: the loss rise to find (nats for cross-entropy; 0.1 in the paper).

    Along an eigenvector of a quadratic loss with eigenvalue lambda > 0 the crossing is
    ``sqrt(2 * delta / lambda)``: ``bisect`` is that, ``grid`` the next grid point up.
    """
    if delta <= 0:
        raise ValueError(f"flatness.eps_delta: must be > 0, got {delta}")
    with eval_mode(model):
        flat = _Flat.of(model, None)
        base_loss = _loss(flat, flat.base, x, y, loss_fn, chunk_size)
        signed = [sign * v for v in directions.to(flat.base) for sign in (1.0, -1.0)]

        def rise(eps: float, d: Tensor) -> float:
            return _loss(flat, flat.base + eps * d, x, y, loss_fn, chunk_size) - base_loss

        cell = _first_cell(rise, signed, delta, 0.0, EPS_GRID)
        grid = math.inf if cell is None else cell[1]
        cell = cell or _first_cell(rise, signed, delta, EPS_GRID[-1], _EPS_EXTENSION)
        return EpsFlatness(grid, math.inf if cell is None else _bisect(rise, *cell, delta))


_Rise = Callable[[float, Tensor], float]
_Cell = tuple[float, float, list[Tensor]]


def _first_cell(
    rise: _Rise, signed: list[Tensor], delta: float, lo: float, points: Sequence[float]
) -> _Cell | None:
    """The first point whose worst rise over ``signed`` reaches delta: (previous point, point,
    the signed directions that reach it there, largest rise first); None if no point does."""
    for eps in points:
        rises = [rise(eps, d) for d in signed]
        crossing = sorted((r, i) for i, r in enumerate(rises) if r >= delta)
        if crossing:
            return lo, eps, [signed[i] for _, i in reversed(crossing)]
        lo = eps
    return None


def _bisect(rise: _Rise, lo: float, hi: float, crossing: list[Tensor], delta: float) -> float:
    """Bisect (lo, hi] on the worst rise over ``crossing`` (the directions that cross at hi;
    the others are below delta at both ends of the 0.01 cell and taken not to cross inside)."""
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        if any(rise(mid, d) >= delta for d in crossing):
            hi = mid
        else:
            lo = mid
    return hi


def measure_flatness(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    cfg: FlatnessConfig,
    *,
    masks: Mapping[str, Tensor] | None = None,
    loss_fn: LossFn = F.cross_entropy,
    seed: int = 0,
    eval_x: Tensor | None = None,
    eval_y: Tensor | None = None,
) -> dict[str, float]:
    """All flatness measures of `model` as record entries; the model is not modified.

    The Hessian and Tr(C) use the subset (x [n, ...], y [n]); epsilon-flatness uses
    ``eval_x``, ``eval_y`` (the full test set, as the paper; both or neither, default: the subset).
    Returns ``hessian_topk_sum`` (sum of the ``cfg.top_k`` eigenvalues, at most ``cfg.power_iters``
    steps each, by ``cfg.hessian``), ``grad_noise_trace`` (Tr(C)), ``eps_flatness`` (the official
    grid value along the top ``min(top_k, EPS_DIRECTIONS)`` eigenvectors, rise ``cfg.eps_delta``),
    ``eps_flatness_bisect`` (the same crossing bisected) and ``flatness_time_s`` (wall seconds of
    this call, so users can budget).
    """
    if (eval_x is None) != (eval_y is None):
        raise ValueError("measure_flatness: pass both eval_x and eval_y or neither")
    start = time.perf_counter()
    k, iters = cfg.top_k, cfg.power_iters
    vals, vecs = hessian_topk(
        model, loss_fn, x, y, k, iters, masks=masks, seed=seed, algorithm=cfg.hessian
    )
    trace = grad_noise_trace(model, loss_fn, x, y, masks=masks)
    ex, ey = (x, y) if eval_x is None else (eval_x, eval_y)
    eps = eps_flatness(model, loss_fn, ex, ey, vecs[:EPS_DIRECTIONS], cfg.eps_delta)
    return {
        "hessian_topk_sum": float(vals.sum()),
        "grad_noise_trace": trace,
        "eps_flatness": eps.grid,
        "eps_flatness_bisect": eps.bisect,
        "flatness_time_s": time.perf_counter() - start,
    }

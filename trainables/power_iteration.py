"""Top-k eigenpairs of a symmetric linear operator by deflated power iteration.

Pure functions over an operator ``op: v [P] -> A v [P]`` (in :mod:`trainables.flatness`, a
Hessian-vector product restricted to unpruned coordinates). Two algorithms, both at most ``iters``
steps (operator applications) per pair:

- :func:`official_topk` follows ``deflated_power_iteration`` and ``power_iteration`` in
  ``hessian_eigenthings/power_iter.py`` as vendored by Bartoldson et al.'s official code: one start
  vector for the first pair, each later pair warm-started from the previous eigenvector, and pair
  j iterates ``A - sum_{i<j} lambda_i v_i v_i^T`` with the estimated lambdas. When the steps run
  out before convergence the later pairs inherit the earlier pairs' errors; this is the paper's
  number.
- :func:`projected_topk` starts each pair from a fresh vector and projects the found eigenvectors
  out of every product (``P A P``, ``P = I - V V^T``): closer to the true eigenvalues when the steps
  run out, but not what the paper computed.

Neither sorts its output: pairs come in the order found.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["Operator", "official_topk", "projected_topk"]

Operator = Callable[[Tensor], Tensor]  # v [P] -> A v [P], A symmetric
Pairs = tuple[list[float], list[Tensor]]  # (eigenvalues, unit eigenvectors [P]) in order found


def official_topk(op: Operator, start: Tensor, k: int, iters: int, tol: float) -> Pairs:
    """k pairs of ``op`` from ``start`` [P] (used as given, not normalised: officially uniform
    [0, 1)); each pair stops when ``|(lambda_t - lambda_{t-1}) / lambda_t| < tol``, lambda_0 = 0.
    """
    vals: list[float] = []
    vecs: list[Tensor] = []

    def deflated(u: Tensor) -> Tensor:
        out = op(u)
        for lam_i, v_i in zip(vals, vecs, strict=True):  # in the order found, as nested operators
            out = out - lam_i * torch.dot(v_i, u) * v_i
        return out

    v = start
    for _ in range(k):
        lam, v = _power(deflated, v, iters, tol)
        vals.append(lam)
        vecs.append(v)
    return vals, vecs


def _power(op: Operator, v: Tensor, iters: int, tol: float) -> tuple[float, Tensor]:
    """``power_iteration`` from ``v``: the last estimate and the last product, renormalised."""
    lam = prev = 0.0
    for _ in range(iters):
        hv = op(v)
        lam = float(torch.dot(v, hv))  # before renormalising: v is not unit on the first step
        norm = hv.norm()
        if norm == 0:  # v lies in the operator's null space: eigenvalue 0, keep the direction
            return lam, _unit(v)
        v = hv / norm
        # lambda = 0 counts as not converged (the official division would raise)
        if lam != 0.0 and abs((lam - prev) / lam) < tol:
            break
        prev = lam
    return lam, v


def projected_topk(
    op: Operator, draw: Callable[[], Tensor], k: int, iters: int, tol: float
) -> Pairs:
    """k pairs of ``op``, pair j from ``draw()`` [P] with pairs < j projected out; each pair stops
    when ``|lambda_t - lambda_{t-1}| <= tol * |lambda_t|`` (from its second step)."""
    vals: list[float] = []
    vecs: list[Tensor] = []
    for _ in range(k):
        v = _unit(_project_out(draw(), vecs))
        lam, prev = 0.0, None
        for _ in range(iters):
            hv = _project_out(op(v), vecs)
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
    return vals, vecs


def _project_out(v: Tensor, basis: Sequence[Tensor]) -> Tensor:
    for u in basis:
        v = v - torch.dot(u, v) * u
    return v


def _unit(v: Tensor) -> Tensor:
    norm = v.norm()
    return v / norm if norm > 0 else v

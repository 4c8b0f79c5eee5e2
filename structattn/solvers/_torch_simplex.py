"""Custom autograd Functions for the simplex maps (torch tensors, last axis).

The forward passes run the array-API core of :mod:`structattn.solvers.simplex` on the
detached input; the backward passes are the closed-form Jacobian-vector products,
computed from the saved output ``p`` with differentiable torch operations.  Because
``p`` is an output of the Function, autograd differentiates the backward through ``p``
again, so double backward (``gradgradcheck``) is exact away from support changes.
All Jacobians are symmetric, so ``Jᵀ v = J v``.
"""

from __future__ import annotations

from typing import Any

import torch

from .simplex import _entmax15_last, _entmax_bisect_last, _softmax_last, _sparsemax_last

__all__ = ["EntmaxFunction", "SoftmaxFunction", "SparsemaxFunction", "simplex_map"]


def softmax_jvp(p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(diag(p) - p pᵀ) v`` along the last axis."""
    return p * (v - torch.sum(p * v, dim=-1, keepdim=True))


def sparsemax_jvp(p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``v_S - mean(v_S)`` on the support ``S = {p > 0}``, zero off it."""
    s = (p > 0).to(v.dtype)
    mean = torch.sum(s * v, dim=-1, keepdim=True) / torch.sum(s, dim=-1, keepdim=True)
    return s * (v - mean)


def entmax_jvp(p: torch.Tensor, v: torch.Tensor, alpha: float) -> torch.Tensor:
    """``g ⊙ v - g <g, v> / Σ g`` with ``g = p^{2-α}`` on the support, zero off it."""
    support = p > 0
    # p^{2-α} only where p > 0: the power's derivative stays finite off the support
    safe = torch.where(support, p, torch.ones_like(p))
    g = torch.where(support, safe ** (2.0 - alpha), torch.zeros_like(p))
    gv = torch.sum(g * v, dim=-1, keepdim=True)
    return g * v - g * (gv / torch.sum(g, dim=-1, keepdim=True))


class SoftmaxFunction(torch.autograd.Function):
    """Softmax along the last axis with the closed-form backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        p = _softmax_last(x)
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (p,) = ctx.saved_tensors
        return softmax_jvp(p, grad)


class SparsemaxFunction(torch.autograd.Function):
    """Sparsemax along the last axis (sort-based) with the closed-form backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        p = _sparsemax_last(x)
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (p,) = ctx.saved_tensors
        return sparsemax_jvp(p, grad)


class EntmaxFunction(torch.autograd.Function):
    """α-entmax along the last axis: exact for ``steps=None`` (α = 1.5), else bisection."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, alpha: float, steps: int | None
    ) -> torch.Tensor:
        p = _entmax15_last(x) if steps is None else _entmax_bisect_last(x, alpha, steps)
        ctx.alpha = alpha
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (p,) = ctx.saved_tensors
        return entmax_jvp(p, grad, ctx.alpha), None, None


def simplex_map(x: torch.Tensor, kind: str, alpha: float, steps: int | None) -> torch.Tensor:
    """Apply the Function for ``kind`` in {"softmax", "sparsemax", "entmax"} (last axis)."""
    if kind == "softmax":
        return SoftmaxFunction.apply(x)
    if kind == "sparsemax":
        return SparsemaxFunction.apply(x)
    return EntmaxFunction.apply(x, alpha, steps)

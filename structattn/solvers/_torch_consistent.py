"""The implicit-gradient autograd Function of consistent attention (torch only).

``θ ↦ (p(θ, λ*(θ)), λ*(θ))`` with the backward of the implicit function theorem on the
optimality conditions ``∇_λ g = 0`` (gauge fixed).  Imported lazily by
:mod:`structattn.solvers.consistent` on torch inputs that require grad, so
``import structattn`` does not import torch.  See CONTRIBUTING.md, "Custom autograd
Functions".
"""

from __future__ import annotations

from typing import Any

import torch

from .._array import namespace
from ._consistent_core import (
    _flatten,
    _gauge_fix,
    _newton_solve,
    _pool,
    _shifted,
    _softmax2,
    _unflatten,
    _up,
)

__all__ = ["ImplicitConsistent"]


def _implicit_outputs(scores: list, pools: list[int], duals: list) -> tuple[list, list]:
    """``(maps, gauge-fixed duals)`` as a differentiable function of ``(θ, λ)``."""
    return [_softmax2(t) for t in _shifted(scores, pools, duals)], _gauge_fix(duals)



def _softmax_vjp(p: Any, c: Any) -> Any:
    """``J_softmax(θ)ᵀ c = p ⊙ (c - <c, p>)`` over the last two axes."""
    xp = namespace(p, c)
    return p * (c - xp.sum(c * p, axis=(-2, -1), keepdims=True))


def _implicit_vjp(scores: list, pools: list[int], duals: list, cot_maps: list, cot_duals: list):
    """Implicit-function-theorem VJP, written with differentiable ops only.

    ``t̄_j = J_softmax(θ̃_j)ᵀ p̄_j``; the direct dual cotangent is
    ``ḡ_λj = t̄_{j+1} - A_j t̄_j + (λ̄_j - mean λ̄_j)`` (mean-zero per block); then
    ``w = (H + Σ 1 1ᵀ/n)⁻¹ ḡ_λ`` (Woodbury for two layers) and
    ``θ̄_j = t̄_j - J_softmax(θ̃_j)ᵀ (B_j w)`` with ``B_j w = w_{j-1} - A_jᵀ w_j``.
    """
    xp = namespace(*scores)
    maps = [_softmax2(t) for t in _shifted(scores, pools, duals)]
    tbar = [_softmax_vjp(p, c) for p, c in zip(maps, cot_maps, strict=True)]
    g_lam = []
    for j, s in enumerate(pools):
        lb = cot_duals[j]
        g_lam.append(
            tbar[j + 1] - _pool(tbar[j], s) + lb - xp.mean(lb, axis=(-2, -1), keepdims=True)
        )
    sizes = [int(x.shape[-2] * x.shape[-1]) for x in duals]
    w = _unflatten(_newton_solve(maps, pools, sizes, _flatten(g_lam)), duals)
    grads = []
    for j, p in enumerate(maps):
        c = xp.zeros_like(p)
        if j > 0:
            c = c + w[j - 1]
        if j < len(pools):
            c = c - _up(w[j], pools[j])
        grads.append(tbar[j] - _softmax_vjp(p, c))
    return grads



class ImplicitConsistent(torch.autograd.Function):
    """The torch ``autograd.Function`` of ``θ ↦ (p(θ, λ*(θ)), λ*(θ))``.

    Forward: given the scores and the (already solved, detached) optimal duals, return
    the maps and the gauge-fixed duals.  Backward (implicit function theorem on
    ``F(λ, θ) = ∇_λ g = p_{j+1} - A_j p_j = 0`` with ``mean(λ_j) = 0``): with ``v̄`` the
    output cotangents, ``ḡ_λ = (∂out/∂λ)ᵀ v̄`` is mean-zero per block (the maps are
    gauge invariant and the gauge fix projects), ``w = (H + Σ_k 1_k 1_kᵀ / n_k)⁻¹ ḡ_λ``
    equals ``H⁺ ḡ_λ`` on that subspace, and ``θ̄ = (∂out/∂θ)ᵀ v̄ - (∂F/∂θ)ᵀ w``.  The
    Hessian solve uses the Woodbury identity for two layers (``O(n)``) and the dense
    Hessian otherwise (``O(N³)``).  The backward is written with differentiable torch
    ops on the saved scores and the saved *output* duals (which carry ``λ*(θ)``'s own
    dependence on ``θ`` through this Function), so it can be differentiated again
    (``create_graph=True``, ``gradgradcheck``).

    ``apply(pools, n_layers, *scores, *duals)``: the non-tensor arguments (a tuple of
    ints and an int) come first and get ``None`` gradients.
    """

    @staticmethod
    def forward(ctx: Any, pools: tuple[int, ...], n_layers: int, *args: Any) -> tuple:
        ctx.pools, ctx.n_layers = pools, n_layers
        scores, duals = list(args[:n_layers]), list(args[n_layers:])
        maps, out = _implicit_outputs(scores, list(pools), duals)
        ctx.save_for_backward(*scores, *out)
        return (*maps, *out)

    @staticmethod
    def backward(ctx: Any, *cotangents: Any) -> tuple:
        pools, n_layers = list(ctx.pools), ctx.n_layers
        saved = ctx.saved_tensors
        scores, duals = list(saved[:n_layers]), list(saved[n_layers:])
        cot = [
            torch.zeros_like(o) if c is None else c
            for o, c in zip(scores + duals, cotangents, strict=True)
        ]
        grads = _implicit_vjp(scores, pools, duals, cot[:n_layers], cot[n_layers:])
        return (None, None, *grads, *([None] * len(duals)))

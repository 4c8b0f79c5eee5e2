"""Implicit Lasso gradients on torch tensors: the support system and its autograd Function.

Imported lazily by :func:`structattn.solvers.lasso` (``grad="implicit"`` on torch tensors
that require grad), so ``import structattn`` does not import torch.  See CONTRIBUTING.md,
"Custom autograd Functions".
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["ImplicitLasso", "implicit_invalid"]

_MARGIN = 1e-9  # relative strict-complementarity / invertibility margin


def _support_matrix(G: Any, Z: Any) -> Any:
    """Per column the masked Gram ``M_j = s G s + (I - s)`` (s = support of column j).

    Shape (..., c, k, k); ``M_j⁻¹ v`` solves the support system and is ``v`` off ``S``.
    """
    s = (Z != 0).to(G.dtype).transpose(-1, -2)  # (..., c, k)
    eye = torch.eye(G.shape[-1], dtype=G.dtype, device=G.device)
    return s[..., :, None] * G[..., None, :, :] * s[..., None, :] + eye * (1 - s)[..., None, :]


def implicit_invalid(G: Any, B: Any, Z: Any, lam: float, kkt: float, tol: float) -> str | None:
    """Reason why the support system does not define the derivative, or None."""
    if kkt > max(tol, 1e-6):
        return f"the solve has not converged (scaled KKT residual {kkt:.3g})"
    g = B - G @ Z  # Dᵀr
    off = Z == 0
    if lam == 0 and bool(off.any()):
        return "lam = 0 with zero coefficients (no strict complementarity)"
    if bool(off.any()) and float(torch.max(torch.abs(g[off]))) >= lam * (1 - _MARGIN):
        return "strict complementarity fails (|D^T r| = lam off the support)"
    ev = torch.linalg.eigvalsh(_support_matrix(G, Z))
    gmax = float(torch.max(torch.abs(torch.diagonal(G, dim1=-2, dim2=-1))))
    if float(torch.min(ev)) <= _MARGIN * gmax:
        return "D_S^T D_S is singular on the support"
    return None


def _sum_to(g: Any, shape: tuple[int, ...]) -> Any:
    """Reduce a broadcast gradient to ``shape``."""
    while g.dim() > len(shape):
        g = g.sum(0)
    for i, n in enumerate(shape):
        if n == 1 and g.shape[i] != 1:
            g = g.sum(i, keepdim=True)
    return g


class ImplicitLasso(torch.autograd.Function):
    """The Lasso solution ``Z`` with its implicit (support-system) gradient.

    ``apply(D, X, Z, lam)``: ``Z`` is the solved (detached) solution, ``lam`` a Python
    float (``None`` gradient).  The forward returns a copy of ``Z``; the backward
    differentiates the support system ``z_S = (D_SᵀD_S)⁻¹(D_Sᵀx − λ s)`` with respect to
    ``D`` and ``X`` (``O(c·k³)`` for ``c`` columns of ``k`` atoms), and is itself
    differentiable (double backward).
    """

    @staticmethod
    def forward(ctx: Any, D: Any, X: Any, Z: Any, lam: float) -> Any:
        ctx.save_for_backward(D, X, Z)
        ctx.lam = lam
        return Z.clone()

    @staticmethod
    def backward(ctx: Any, gZ: Any) -> Any:
        # Written with differentiable torch ops on the saved inputs D, X (the support
        # mask and signs are constants), so double backward works: the solution is
        # re-expressed as the support solve z_S = (D_SᵀD_S)⁻¹(D_Sᵀx - λ s), which
        # carries its dependence on D and X into the graph of the gradient.
        D, X, Z = ctx.saved_tensors
        k = D.shape[-1]
        Dt = D.transpose(-1, -2)
        G = torch.broadcast_to(Dt @ D, (*Z.shape[:-2], k, k))
        B = torch.broadcast_to(Dt @ X, Z.shape)
        M = _support_matrix(G, Z)
        s = (Z != 0).to(gZ.dtype)
        rhs = torch.stack([s * gZ, s * (B - ctx.lam * torch.sign(Z))], dim=-1)
        sol = torch.linalg.solve(M, rhs.transpose(-2, -3))  # (..., c, k, 2)
        sol = sol.transpose(-2, -3)  # (..., k, c, 2)
        W = sol[..., 0] * s
        Zr = sol[..., 1] * s  # equals Z (up to the solve's tolerance)
        gX = gD = None
        if ctx.needs_input_grad[1]:
            gX = _sum_to(D @ W, tuple(X.shape))
        if ctx.needs_input_grad[0]:
            Wt, Zt = W.transpose(-1, -2), Zr.transpose(-1, -2)
            gD = _sum_to(X @ Wt - D @ (Zr @ Wt + W @ Zt), tuple(D.shape))
        return gD, gX, None, None

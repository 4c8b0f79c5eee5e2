"""Consistent multi-layer attention by dual decomposition (Ron, Weiler-Sagie & Hazan, 2022).

Given score maps ``θ_1, ..., θ_M`` on grids ordered fine → coarse, with integer sum-pooling
``A_j`` of factor ``s_j`` between consecutive grids, the consistent attention maps solve
(solvers.md §2.2)::

    maximize    Σ_j [ <θ_j, p_j> + H(p_j) ]
    subject to  p_j ∈ Δ_{n_j},   A_j p_j = p_{j+1}     (j = 1, ..., M-1)

a strictly concave problem with a unique solution.  Its dual (§2.3), with one multiplier
map ``λ_j`` per constraint (on the grid of layer ``j+1``), is the smooth convex problem::

    minimize_λ  g(λ) = Σ_j LSE(θ̃_j(λ)),     θ̃_j(λ) = θ_j + λ_{j-1} - A_jᵀ λ_j,

whose gradient is the constraint violation ``∇_{λ_j} g = p_{j+1}(λ) - A_j p_j(λ)`` with
``p_j(λ) = softmax(θ̃_j(λ))``.  ``g`` is invariant under ``λ_j → λ_j + c·1`` (the gauge,
because ``A_jᵀ 1 = 1``); returned duals are gauge-fixed to ``mean(λ_j) = 0``.

Three solvers share one result type:

* ``"closed_form"`` — the nested-logit recursion of §2.4, exact for this entropic problem,
  ``O(n_1)`` time and memory, and differentiable by plain autograd on torch tensors.
* ``"dual_gd"`` — accelerated gradient descent on ``g`` (Nesterov momentum with gradient
  restart, step ``1/L`` with ``L = 2`` for two layers and ``L = 4`` for longer chains),
  differentiable by unrolling on torch tensors.
* ``"newton"`` — damped Newton on ``g`` (gauge directions regularized) with a
  backtracking line search; for two layers the Newton system is solved by the Woodbury
  identity (the Hessian is diagonal plus rank 2, ``O(n_1)`` per step), for longer chains
  with the dense Hessian (``O(N³)`` per step for ``N`` duals).

The functions take numpy arrays or torch tensors with any leading batch axes
``(..., h_j, w_j)``; the math core is written once against the array API.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._array import dtype_name, is_torch
from ._consistent_checks import GRADS, validate_options, validate_scores, validate_witness
from ._consistent_core import (  # noqa: F401  (_flatten, _grad, _hessian, ...: for the tests)
    _certificates,
    _check,
    _closed_form,
    _dual_gd,
    _dual_value,
    _eps,
    _flatten,
    _gauge_fix,
    _grad,
    _hessian,
    _newton,
    _newton_solve,
    _shifted,
    _softmax2,
    _use_woodbury,
    _witness,
)
from .simplex import ConvergenceWarning

__all__ = ["ConsistentAttentionResult", "consistent_attention"]


@dataclass(frozen=True)
class ConsistentAttentionResult:
    """Solution of the consistent multi-layer attention problem.

    Attributes
    ----------
    maps : tuple of arrays, shapes (..., h_j, w_j)
        The attention maps ``p_j`` (fine → coarse), each nonnegative and summing to 1
        over its last two axes.  For the dual solvers these are ``softmax(θ̃_j(λ))`` at the
        final duals (consistent up to ``feasibility``).
    duals : tuple of arrays, shapes (..., h_{j+1}, w_{j+1})
        The multipliers ``λ_j`` of the constraints ``A_j p_j = p_{j+1}``, gauge-fixed to
        zero mean over their last two axes (``M - 1`` of them).
    n_iter : int
        Iterations taken (0 for the closed form).
    feasibility : float
        ``max_j ||A_j p_j - p_{j+1}||_∞`` over the batch.
    gap : float
        Duality gap ``g(λ) - Σ_j [<θ_j, q_j> + H(q_j)]`` (maximum over the batch), where
        ``q`` is the exactly consistent chain ``q_1 = p_1``, ``q_{j+1} = A_j q_j``.  Being a
        dual value minus a feasible primal value it bounds the suboptimality of ``q``
        (up to rounding, it is ``>= 0``).
    converged : bool
        ``feasibility <= tol`` and ``gap <= tol · max(1, |g|)``.  In witness mode this only
        reports whether the given witness certifies optimality to ``tol``.
    method : str
        The solver used.
    marginals : tuple of (array, array) pairs
        Witness mode only (empty otherwise): for each constraint ``j`` the two
        reparameterized marginals on grid ``j+1``, ``(A_j p_j(λ), p_{j+1}(λ))``; for two
        layers these are the official code's ``normalize(SumPool(p_1)·e^{-λ})`` and
        ``normalize(p_2·e^{+λ})`` with ``p_j`` the plain softmax maps.
    kl : tuple of arrays, batch shape
        Witness mode only: ``KL(p_{j+1}(λ) ‖ A_j p_j(λ))`` per constraint, computed in log
        space (the official consistency penalty; differentiable on torch tensors).
    l1 : tuple of arrays, batch shape
        Witness mode only: ``||A_j p_j(λ) - p_{j+1}(λ)||_1`` per constraint.
    """

    maps: tuple
    duals: tuple
    n_iter: int
    feasibility: float
    gap: float
    converged: bool
    method: str
    marginals: tuple = ()
    kl: tuple = ()
    l1: tuple = ()


# ---------------------------------------------------------------- public API
def consistent_attention(
    scores: Sequence[Any],
    pools: Sequence[int],
    *,
    method: str = "closed_form",
    tol: float | None = None,
    max_iter: int = 1000,
    strict: bool = False,
    grad: str = "auto",
    witness: Any = None,
) -> ConsistentAttentionResult:
    """Consistent multi-layer attention maps (solvers.md §2): the entropic projection of
    per-layer softmax attention onto maps whose window sums agree across layers.

    Solves ``max Σ_j <θ_j, p_j> + H(p_j)`` over ``p_j ∈ Δ`` subject to
    ``SumPool_{s_j}(p_j) = p_{j+1}``.  Without the constraints each map would be
    ``softmax(θ_j)``; with them, every map is ``softmax(θ_j + λ_{j-1} - up(λ_j))`` for the
    optimal duals ``λ``.  For two layers the coarse map is
    ``p_2 = softmax((θ_2 + LSEpool(θ_1))/2)`` and ``p_1`` spreads it over each window as
    ``softmax`` of ``θ_1`` within the window.

    Parameters
    ----------
    scores : list of numpy.ndarray or torch.Tensor, shapes (..., h_j, w_j)
        Score maps ``θ_j`` ordered fine → coarse, all of one kind, dtype (float32 or
        float64), device and batch shape ``...`` (e.g. ``(batch, heads)``).
    pools : list of int
        ``len(scores) - 1`` positive pooling factors: ``h_j = pools[j] · h_{j+1}`` and
        ``w_j = pools[j] · w_{j+1}`` exactly.
    method : {"closed_form", "dual_gd", "newton", "witness"}
        ``"closed_form"``: nested-logit recursion, exact (the reference).  ``"dual_gd"``:
        accelerated dual gradient descent (step ``1/L``, ``L = 2`` for two layers, 4 for
        chains).  ``"newton"``: damped Newton; Woodbury (``O(n_1)`` per step) for two
        layers, a dense ``N × N`` Hessian (``N`` = number of duals) for longer chains.
        ``"witness"``: no solve; evaluate the reparameterization at the given ``witness``
        λ (the official code's learned, input-independent λ, §2.6) and return the
        reparameterized maps
        ``softmax(θ̃_j(λ))``, the marginals ``(A_j p_j(λ), p_{j+1}(λ))`` and their
        ``kl`` and ``l1`` residuals (the training penalty is ``α · kl``, α = 10 in the
        released config).  Nothing is enforced: ``maps`` are consistent only when λ is
        optimal (then ``kl = 0``).  The official code reweights features by the plain
        ``softmax(θ_j)``, which is ``maps`` at ``witness = 0``.
    tol : float, optional
        Tolerance on ``feasibility`` and on ``gap / max(1, |g|)``.  Default 1e-10 for
        float64, 1e-6 for float32 inputs.
    max_iter : int
        Iteration budget of the dual solvers.
    strict : bool
        Raise instead of warn when the solver did not reach ``tol`` (not used in witness
        mode, which never warns).
    grad : {"auto", "implicit", "unroll"}
        Gradients on torch tensors.  ``"implicit"``: implicit-function-theorem backward
        through the optimality conditions ``∇_λ g = 0`` with the gauge fixed
        (``mean(λ_j) = 0``; one Hessian solve, Woodbury for two layers, dense
        otherwise), the solver runs without autograd.
        ``"unroll"``: autograd through the iterations of ``"dual_gd"`` / ``"newton"``
        (``O(n_iter · n_1)`` memory, gradient error tracks the forward residual); for
        ``"closed_form"`` and ``"witness"`` this is plain autograd.  ``"auto"``: plain
        autograd for ``"closed_form"`` and ``"witness"``, implicit otherwise.
        ``"implicit"`` is not defined for ``"witness"``.  Ignored for numpy inputs.
    witness : array or list of arrays, optional
        Required by (and only used with) ``method="witness"``: the duals ``λ_j``, one per
        constraint (a single array is accepted for two layers), each broadcastable to the
        shape of ``scores[j + 1]`` (e.g. one ``(h_2, w_2)`` map shared by the batch), of
        the kind and dtype of the scores.

    Returns
    -------
    ConsistentAttentionResult
        ``maps`` (same kind, dtype and device as ``scores``), gauge-fixed ``duals``,
        ``n_iter``, ``feasibility``, ``gap``, ``converged``, ``method``; in witness mode
        also ``marginals``, ``kl`` and ``l1``.

    Raises
    ------
    TypeError
        ``scores`` not a sequence of numpy arrays / torch tensors, mixed kinds or dtypes,
        a non-floating dtype; a non-integer pooling factor.
    ValueError
        Wrong number of pools, a pool that is not positive or does not map one grid onto
        the next exactly, mismatched batch shapes, NaN/Inf scores, an unknown ``method``,
        bad ``tol`` / ``max_iter``.
    RuntimeError
        With ``strict=True``, when the solver did not reach ``tol``.

    Warns
    -----
    ConvergenceWarning
        When the tolerance was not reached (``strict=False``); the result is returned
        with ``converged=False`` and its residuals.

    Notes
    -----
    The closed form is ``O(n_1)`` time and memory and fully differentiable on torch
    tensors (plain autograd through log-sum-exp and softmax, to any order).
    ``"dual_gd"`` converges linearly with a rate that degrades as the maps become peaked.
    ``"newton"`` costs ``O(n_1)`` per step for two layers (Woodbury identity on the
    diagonal-plus-rank-2 dual Hessian) and ``O(N³)`` per step for longer chains (dense
    Hessian).  Implicit gradients are exact up to the forward residual and twice
    differentiable (the backward is itself written with differentiable torch ops).
    """
    scores, pools = validate_scores(scores, pools)
    tol = validate_options(method, tol, max_iter, strict, dtype_name(scores[0]))
    max_iter = int(max_iter)
    if grad not in GRADS:
        raise ValueError(f"grad must be one of {GRADS}, got {grad!r}")
    if method == "witness":
        if grad == "implicit":
            raise ValueError(
                "grad='implicit' is not defined for method='witness' (nothing is solved); "
                "use grad='auto' (ordinary autograd)"
            )
        lam = validate_witness(witness, scores, pools)
        shifted, maps, marginals, kls, l1s = _witness(scores, pools, lam)
        feas, gap, gabs = _certificates(scores, pools, maps, _dual_value(shifted))
        return ConsistentAttentionResult(
            maps=tuple(maps),
            duals=tuple(_gauge_fix(lam)),
            n_iter=0,
            feasibility=feas,
            gap=gap,
            converged=bool(feas <= tol and gap <= tol * max(1.0, gabs)),
            method=method,
            marginals=tuple(marginals),
            kl=tuple(kls),
            l1=tuple(l1s),
        )
    if witness is not None:
        raise ValueError(f"witness= is only used with method='witness', got method={method!r}")
    implicit = grad == "implicit" or (grad == "auto" and method != "closed_form")
    implicit = (
        implicit
        and bool(pools)
        and is_torch(scores[0])
        and _grad_enabled()
        and any(s.requires_grad for s in scores)
    )
    user_scores = scores
    if implicit:  # solve without autograd; the Function below attaches the gradient
        scores = [s.detach() for s in scores]
    if method == "closed_form":
        maps, duals = _closed_form(scores, pools)
        n_iter = 0
        g = _dual_value(_shifted(scores, pools, duals)) if duals else _dual_value(scores)
        feas, gap, gabs = _certificates(scores, pools, maps, g)
        # exact up to rounding: the certificates are reported, not used to stop
        floor = max(tol, 1e3 * _eps(scores[0]))
        converged = feas <= floor and gap <= floor * max(1.0, gabs)
    else:
        solver = _dual_gd if method == "dual_gd" else _newton
        duals, n_iter = solver(scores, pools, tol, max_iter) if pools else ([], 0)
        maps, feas, gap, converged = _check(scores, pools, duals, tol)
        duals = _gauge_fix(duals)
    if implicit:
        from ._torch_consistent import ImplicitConsistent

        out = ImplicitConsistent.apply(tuple(pools), len(scores), *user_scores, *duals)
        maps, duals = list(out[: len(scores)]), list(out[len(scores) :])
    if not converged:
        msg = (
            f"consistent_attention(method={method!r}) stopped after {n_iter} iterations with "
            f"feasibility {feas:.3g} and duality gap {gap:.3g} (tol={tol:.3g}); "
            "increase max_iter or use method='closed_form'"
        )
        if strict:
            raise RuntimeError(msg)
        warnings.warn(msg, ConvergenceWarning, stacklevel=2)
    return ConsistentAttentionResult(
        maps=tuple(maps),
        duals=tuple(duals),
        n_iter=int(n_iter),
        feasibility=feas,
        gap=gap,
        converged=bool(converged),
        method=method,
    )


def _grad_enabled() -> bool:
    import torch

    return torch.is_grad_enabled()

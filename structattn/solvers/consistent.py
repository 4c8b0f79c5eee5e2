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

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from .._array import (
    describe_array,
    dtype_name,
    is_numpy,
    is_torch,
    namespace,
    validate_float_array,
    validate_same_kind,
)
from .simplex import ConvergenceWarning, softmax

__all__ = ["ConsistentAttentionResult", "consistent_attention"]

_METHODS = ("closed_form", "dual_gd", "newton", "witness")
_GRADS = ("auto", "implicit", "unroll")
_ACCEPTED_DTYPES = ("float32", "float64")
_DEFAULT_TOL = {"float32": 1e-6, "float64": 1e-10}


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


# ----------------------------------------------------------------- validation
def _validate(scores: Any, pools: Any) -> tuple[list, list[int]]:
    if is_numpy(scores) or is_torch(scores) or not isinstance(scores, Sequence):
        raise TypeError(
            "scores must be a list or tuple of score maps (numpy arrays or torch tensors), "
            f"got {type(scores).__name__}"
        )
    scores = list(scores)
    if not scores:
        raise ValueError("scores must contain at least one score map, got an empty sequence")
    first = scores[0]
    for j, s in enumerate(scores):
        name = f"scores[{j}]"
        if not (is_numpy(s) or is_torch(s)):
            raise TypeError(
                f"{name} must be a numpy.ndarray or torch.Tensor, got {type(s).__name__}"
            )
        if is_torch(s) != is_torch(first):
            raise TypeError(
                f"{name} and scores[0] must both be numpy arrays or both torch tensors; "
                f"got {describe_array(s)} and {describe_array(first)}"
            )
        if dtype_name(s) not in _ACCEPTED_DTYPES:
            raise TypeError(f"{name} must have dtype float32 or float64, got {dtype_name(s)}")
        if dtype_name(s) != dtype_name(first):
            raise TypeError(
                f"{name} must have the dtype of scores[0] ({dtype_name(first)}), "
                f"got {dtype_name(s)}"
            )
        if is_torch(s) and s.device != first.device:
            raise ValueError(
                f"{name} must be on the device of scores[0] ({first.device}), got {s.device}"
            )
        if s.ndim < 2:
            raise ValueError(f"{name} must have shape (..., h, w), got shape {tuple(s.shape)}")
        if tuple(s.shape[:-2]) != tuple(first.shape[:-2]):
            raise ValueError(
                f"{name} must have the batch shape of scores[0] {tuple(first.shape[:-2])}, "
                f"got shape {tuple(s.shape)}"
            )
        if s.shape[-1] == 0 or s.shape[-2] == 0:
            raise ValueError(f"{name} must have a nonempty grid, got shape {tuple(s.shape)}")
        xp = namespace(s)
        if not bool(xp.all(xp.isfinite(s))):
            raise ValueError(f"{name} contains NaN or Inf values ({describe_array(s)})")
    if isinstance(pools, (str, bytes)) or not isinstance(pools, Sequence):
        raise TypeError(f"pools must be a list or tuple of positive ints, got {pools!r}")
    pools = list(pools)
    if len(pools) != len(scores) - 1:
        raise ValueError(
            f"pools must have one factor per pair of consecutive layers: {len(scores)} score "
            f"maps need {len(scores) - 1} pools, got {len(pools)}"
        )
    out = []
    for j, s in enumerate(pools):
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise TypeError(f"pools[{j}] must be a positive int, got {s!r}")
        if s < 1:
            raise ValueError(f"pools[{j}] must be a positive int, got {s!r}")
        s = int(s)
        fine, coarse = tuple(scores[j].shape[-2:]), tuple(scores[j + 1].shape[-2:])
        if fine[0] % s or fine[1] % s:
            raise ValueError(f"pools[{j}] = {s} does not divide the grid {fine} of scores[{j}]")
        if (fine[0] // s, fine[1] // s) != coarse:
            raise ValueError(
                f"scores[{j}] grid {fine} pooled by pools[{j}] = {s} gives "
                f"{(fine[0] // s, fine[1] // s)}, but scores[{j + 1}] has grid {coarse}"
            )
        out.append(s)
    return scores, out


def _validate_witness(witness: Any, scores: list, pools: list[int]) -> list:
    """The witness as a list of ``M - 1`` arrays broadcastable to the dual shapes."""
    if witness is None:
        raise ValueError("method='witness' needs witness= (the dual maps λ_j), got None")
    if is_numpy(witness) or is_torch(witness):
        if len(pools) != 1:
            raise ValueError(
                f"a single witness array serves two layers only; {len(scores)} score maps "
                f"need a list of {len(pools)} witness maps"
            )
        witness = [witness]
    if isinstance(witness, (str, bytes)) or not isinstance(witness, Sequence):
        raise TypeError(f"witness must be an array or a list of arrays, got {witness!r}")
    witness = list(witness)
    if len(witness) != len(pools):
        raise ValueError(
            f"witness must have one map per constraint: {len(scores)} score maps need "
            f"{len(pools)} witness maps, got {len(witness)}"
        )
    for j, lam in enumerate(witness):
        name = f"witness[{j}]"
        validate_float_array(lam, name, min_ndim=2, check_finite=False)
        validate_same_kind({"scores[0]": scores[0], name: lam})
        target = tuple(scores[j + 1].shape)
        ok = lam.ndim <= len(target)
        if ok:
            try:
                ok = tuple(np.broadcast_shapes(tuple(lam.shape), target)) == target
            except ValueError:
                ok = False
        if not ok:
            raise ValueError(
                f"{name} must broadcast to the shape {target} of scores[{j + 1}], "
                f"got shape {tuple(lam.shape)}"
            )
        validate_float_array(lam, name, min_ndim=2, check_finite=True)
    return witness


def _validate_options(method: Any, tol: Any, max_iter: Any, strict: Any, dtype: str) -> float:
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if tol is None:
        tol = _DEFAULT_TOL[dtype]
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"tol must be None or a positive real number, got {tol!r}")
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive finite number, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool, got {strict!r}")
    return float(tol)


# -------------------------------------------------------- array-API core (grid ops)
def _windows(x: Any, s: int) -> Any:
    """``(..., H, W) → (..., H/s, s, W/s, s)``."""
    xp = namespace(x)
    *b, h, w = x.shape
    return xp.reshape(x, (*b, h // s, s, w // s, s))


def _pool(x: Any, s: int) -> Any:
    """Sum-pooling ``A x`` by factor ``s`` over the last two axes."""
    return namespace(x).sum(_windows(x, s), axis=(-3, -1))


def _up(x: Any, s: int) -> Any:
    """Adjoint of sum-pooling, ``Aᵀ x``: copy each coarse value to its ``s × s`` children."""
    xp = namespace(x)
    *b, h, w = x.shape
    y = xp.broadcast_to(xp.reshape(x, (*b, h, 1, w, 1)), (*b, h, s, w, s))
    return xp.reshape(y, (*b, h * s, w * s))


def _window_lse(x: Any, s: int) -> Any:
    """Log-sum-exp over each ``s × s`` window (result on the coarse grid)."""
    xp = namespace(x)
    xw = _windows(x, s)
    m = xp.max(xw, axis=(-3, -1), keepdims=True)
    lse = xp.log(xp.sum(xp.exp(xw - m), axis=(-3, -1), keepdims=True)) + m
    return lse[..., 0, :, 0]


def _lse(x: Any) -> Any:
    """Log-sum-exp over the last two axes (batch shape returned)."""
    xp = namespace(x)
    m = xp.max(x, axis=(-2, -1), keepdims=True)
    return (xp.log(xp.sum(xp.exp(x - m), axis=(-2, -1), keepdims=True)) + m)[..., 0, 0]


def _softmax2(x: Any) -> Any:
    """Softmax over the last two axes (the whole grid), via :func:`simplex.softmax`."""
    xp = namespace(x)
    shape = tuple(x.shape)
    flat = xp.reshape(x, (*shape[:-2], shape[-2] * shape[-1]))
    return xp.reshape(softmax(flat, axis=-1, check_finite=False), shape)


def _shifted(scores: list, pools: list[int], duals: list) -> list:
    """``θ̃_j(λ) = θ_j + λ_{j-1} - A_jᵀ λ_j``."""
    out = []
    for j, th in enumerate(scores):
        t = th
        if j > 0:
            t = t + duals[j - 1]
        if j < len(duals):
            t = t - _up(duals[j], pools[j])
        out.append(t)
    return out


def _dual_value(shifted: list) -> Any:
    return sum(_lse(t) for t in shifted)


def _gauge_fix(duals: list) -> list:
    xp = namespace(*duals) if duals else None
    return [lam - xp.mean(lam, axis=(-2, -1), keepdims=True) for lam in duals]


def _xlogx(p: Any) -> Any:
    xp = namespace(p)
    pos = p > 0
    return xp.where(pos, p * xp.log(xp.where(pos, p, xp.ones_like(p))), xp.zeros_like(p))


def _float(x: Any) -> float:
    """A 0-d array as a Python float (detached from any autograd graph)."""
    return float(x.detach()) if is_torch(x) else float(x)


def _certificates(scores: list, pools: list[int], maps: list, g: Any) -> tuple[float, float, float]:
    """``(feasibility, gap, |g|)``, maxima over the batch (see the result's docstring)."""
    xp = namespace(*maps)
    feas = 0.0
    for j, s in enumerate(pools):
        feas = max(feas, _float(xp.max(xp.abs(_pool(maps[j], s) - maps[j + 1]))))
    q = maps[0]
    primal = 0.0
    for j, th in enumerate(scores):
        if j > 0:
            q = _pool(q, pools[j - 1])
        primal = primal + xp.sum(th * q - _xlogx(q), axis=(-2, -1))
    gap = g - primal
    return feas, _float(xp.max(gap)), _float(xp.max(xp.abs(g)))


# ---------------------------------------------------------------- solvers
def _closed_form(scores: list, pools: list[int]) -> tuple[list, list]:
    """Nested-logit recursion (solvers.md §2.4); returns ``(maps, duals)``.

    Bottom-up, ``a_i = θ_i + V_{i-1}`` (``V_{i-1}`` already lives on grid ``i``),
    ``log π_i = a_i/i - up(LSEpool(a_i/i))``,
    ``V_i = i · LSEpool(a_i/i)``; the top map is ``softmax((θ_M + V_{M-1})/M)``; then
    top-down ``log p_i = up(log p_{i+1}) + log π_i``.  The duals follow from stationarity
    ``log p_j = θ_j + λ_{j-1} - up(λ_j) + c_j``: ``up(λ_j)`` is the window-constant map
    ``θ_j + λ_{j-1} - log p_j`` (up to a constant), read off as its window mean.
    """
    xp = namespace(*scores)
    M = len(scores)
    log_pi, V = [], None
    for i in range(M - 1):
        a = scores[i] if V is None else scores[i] + V
        a = a / float(i + 1)
        lse = _window_lse(a, pools[i])
        log_pi.append(a - _up(lse, pools[i]))
        V = float(i + 1) * lse
    top = scores[-1] if V is None else scores[-1] + V
    top = top / float(M)
    log_maps = [None] * M
    log_maps[-1] = top - _lse(top)[..., None, None]
    for i in range(M - 2, -1, -1):
        log_maps[i] = _up(log_maps[i + 1], pools[i]) + log_pi[i]
    duals = []
    prev = None
    for j in range(M - 1):
        r = scores[j] - log_maps[j] if prev is None else scores[j] + prev - log_maps[j]
        prev = xp.mean(_windows(r, pools[j]), axis=(-3, -1))
        duals.append(prev)
    return [xp.exp(lp) for lp in log_maps], _gauge_fix(duals)


def _zeros_duals(scores: list, pools: list[int]) -> list:
    xp = namespace(*scores)
    return [xp.zeros_like(scores[j + 1]) for j in range(len(pools))]


def _grad(maps: list, pools: list[int]) -> list:
    return [maps[j + 1] - _pool(maps[j], s) for j, s in enumerate(pools)]


def _feas(grad: list) -> float:
    xp = namespace(*grad)
    return max(_float(xp.max(xp.abs(gr))) for gr in grad)


def _check(scores, pools, duals, tol):
    """Maps at ``duals`` and whether the certificates meet ``tol``."""
    shifted = _shifted(scores, pools, duals)
    maps = [_softmax2(t) for t in shifted]
    feas, gap, gabs = _certificates(scores, pools, maps, _dual_value(shifted))
    ok = feas <= tol and gap <= tol * max(1.0, gabs)
    return maps, feas, gap, ok


def _dual_gd(scores: list, pools: list[int], tol: float, max_iter: int) -> tuple[list, int]:
    """Accelerated gradient descent on ``g`` with gradient restart; returns ``(duals, n_iter)``."""
    xp = namespace(*scores)
    eta = 0.5 if len(scores) == 2 else 0.25
    lam = _zeros_duals(scores, pools)
    y = lam
    t = 1.0
    for k in range(1, max_iter + 1):
        maps = [_softmax2(s) for s in _shifted(scores, pools, y)]
        grad = _grad(maps, pools)
        new = [yj - eta * gj for yj, gj in zip(y, grad, strict=True)]
        # gradient restart (O'Donoghue & Candès): drop momentum when it points uphill
        uphill = sum(
            _float(xp.sum(gj * (nj - lj))) for gj, nj, lj in zip(grad, new, lam, strict=True)
        )
        if uphill > 0:
            t = 1.0
        t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        beta = (t - 1.0) / t_next
        y = [nj + beta * (nj - lj) for nj, lj in zip(new, lam, strict=True)]
        lam, t = new, t_next
        if _feas(grad) <= tol and _check(scores, pools, lam, tol)[3]:
            return lam, k
    return lam, max_iter


def _flatten(blocks: list) -> Any:
    xp = namespace(*blocks)
    return xp.concat([xp.reshape(b, (*b.shape[:-2], -1)) for b in blocks], axis=-1)


def _unflatten(v: Any, like: list) -> list:
    xp = namespace(v)
    out, start = [], 0
    for b in like:
        n = b.shape[-2] * b.shape[-1]
        out.append(xp.reshape(v[..., start : start + n], tuple(b.shape)))
        start += n
    return out


def _hessian(maps: list, pools: list[int], sizes: list[int]) -> Any:
    """Dense Hessian of ``g`` plus the gauge term ``Σ_k e_k e_kᵀ / n_k`` (nonsingular).

    Layer ``j`` contributes ``B_jᵀ (diag p_j - p_j p_jᵀ) B_j`` with ``B_j λ = λ_{j-1} -
    A_jᵀ λ_j``: the blocks ``diag(p_j)``, ``-diag(p_j) A_jᵀ``, ``diag(A_j p_j)`` minus the
    outer product of ``u_j = B_jᵀ p_j = (p_j, -A_j p_j)``.
    """
    xp = namespace(*maps)
    dev = array_api_compat.device(maps[0])
    dt = maps[0].dtype
    batch = tuple(maps[0].shape[:-2])
    K = len(pools)
    blocks = [[None] * K for _ in range(K)]

    def add(a, b, m):
        blocks[a][b] = m if blocks[a][b] is None else blocks[a][b] + m

    def diag(v):
        n = v.shape[-1]
        return xp.eye(n, dtype=dt, device=dev) * v[..., None, :]

    def flat(x):
        return xp.reshape(x, (*batch, -1))

    us = []
    for j, p in enumerate(maps):
        u = [None] * K
        if j > 0:  # block j-1: identity part of B_j
            add(j - 1, j - 1, diag(flat(p)))
            u[j - 1] = flat(p)
        if j < K:  # block j: -A_jᵀ part of B_j
            s = pools[j]
            pooled = _pool(p, s)
            add(j, j, diag(flat(pooled)))
            u[j] = -flat(pooled)
            if j > 0:
                # -diag(p_j) A_jᵀ: rows are fine cells of layer j, columns coarse cells
                nf, nc = sizes[j - 1], sizes[j]
                coarse = xp.reshape(xp.arange(nc, device=dev), tuple(pooled.shape[-2:]))
                idx = xp.reshape(_up(coarse, s), (nf,))
                onehot = xp.astype(idx[:, None] == xp.arange(nc, device=dev)[None, :], dt)
                cross = -onehot * flat(p)[..., :, None]
                add(j - 1, j, cross)
                add(j, j - 1, xp.matrix_transpose(cross))
        us.append(u)
    for a in range(K):
        for b in range(K):
            if blocks[a][b] is None:
                blocks[a][b] = xp.zeros((*batch, sizes[a], sizes[b]), dtype=dt, device=dev)
        blocks[a][a] = blocks[a][a] + 1.0 / sizes[a]
    H = xp.concat([xp.concat(row, axis=-1) for row in blocks], axis=-2)
    for u in us:
        zero = [xp.zeros((*batch, n), dtype=dt, device=dev) for n in sizes]
        v = xp.concat([zero[k] if u[k] is None else u[k] for k in range(K)], axis=-1)
        H = H - v[..., :, None] * v[..., None, :]
    return H


def _woodbury_solve(maps: list, pools: list[int], rhs: Any) -> Any:
    """Solve ``(H + 11ᵀ/n) x = rhs`` for two layers in ``O(n_1)`` (Woodbury identity).

    With ``q = A_1 p_1`` and ``r = p_2`` (both on the coarse grid, ``n`` cells) the dual
    Hessian is ``diag(q + r) - q qᵀ - r rᵀ`` (solvers.md §2.3); adding the gauge term
    ``11ᵀ/n`` gives ``D + U C Uᵀ`` with ``D = diag(q + r)``, ``U = [q, r, 1]`` and
    ``C = diag(-1, -1, 1/n)``, so
    ``x = D⁻¹rhs - D⁻¹U (C⁻¹ + Uᵀ D⁻¹ U)⁻¹ Uᵀ D⁻¹ rhs`` with a ``3 × 3`` capacitance
    system per batch element.  Written with differentiable ops only.
    """
    xp = namespace(maps[0], rhs)
    batch = tuple(maps[0].shape[:-2])
    q = xp.reshape(_pool(maps[0], pools[0]), (*batch, -1))
    r = xp.reshape(maps[1], (*batch, -1))
    n = q.shape[-1]
    dinv = 1.0 / (q + r)
    U = xp.stack([q, r, xp.ones_like(q)], axis=-1)  # (..., n, 3)
    dU = dinv[..., None] * U
    dev = array_api_compat.device(q)
    cinv = xp.asarray([-1.0, -1.0, float(n)], dtype=q.dtype, device=dev)
    cap = xp.matrix_transpose(U) @ dU + xp.eye(3, dtype=q.dtype, device=dev) * cinv
    y = dinv * rhs
    z = xp.linalg.solve(cap, (xp.matrix_transpose(U) @ y[..., None]))
    return y - (dU @ z)[..., 0]


def _use_woodbury(maps: list, pools: list[int]) -> bool:
    """Two layers with a strictly positive Hessian diagonal ``A_1 p_1 + p_2``."""
    if len(pools) != 1:
        return False
    xp = namespace(*maps)
    d = _pool(maps[0], pools[0]) + maps[1]
    return _float(xp.min(d)) > 1e3 * _eps(maps[0]) ** 2


def _newton_solve(maps: list, pools: list[int], sizes: list[int], rhs: Any) -> Any:
    """``(H + Σ_k 1_k 1_kᵀ/n_k)⁻¹ rhs``: Woodbury for two layers, dense otherwise."""
    if _use_woodbury(maps, pools):
        return _woodbury_solve(maps, pools, rhs)
    xp = namespace(rhs)
    H = _hessian(maps, pools, sizes)
    # saturated maps (scores ~1e3: exact zeros in p) make H singular; a Levenberg
    # shift of a few ulps of its largest diagonal keeps the solve defined (still a
    # descent direction for the damped Newton loop) instead of raising LinAlgError
    n = H.shape[-1]
    diag_max = xp.max(xp.abs(xp.linalg.diagonal(H)), axis=-1, keepdims=True)
    shift = (4.0 * _eps(maps[0])) * (1.0 + diag_max)
    eye = xp.eye(n, dtype=H.dtype, device=array_api_compat.device(H))
    return xp.linalg.solve(H + shift[..., None] * eye, rhs[..., None])[..., 0]


def _newton(scores: list, pools: list[int], tol: float, max_iter: int) -> tuple[list, int]:
    """Damped Newton on ``g`` with Armijo backtracking; returns ``(duals, n_iter)``."""
    xp = namespace(*scores)
    lam = _zeros_duals(scores, pools)
    sizes = [int(x.shape[-2] * x.shape[-1]) for x in lam]
    eps = 2.0**-52 if dtype_name(scores[0]) == "float64" else 2.0**-23
    for k in range(1, max_iter + 1):
        shifted = _shifted(scores, pools, lam)
        maps = [_softmax2(t) for t in shifted]
        g = _dual_value(shifted)
        grad = _flatten(_grad(maps, pools))
        d = _newton_solve(maps, pools, sizes, grad)
        dec = xp.sum(grad * d, axis=-1)  # Newton decrement², >= 0
        lam_flat = _flatten(lam)
        step = xp.ones_like(dec)
        slack = 64.0 * eps * (1.0 + xp.abs(g))
        for _ in range(60):
            cand = _unflatten(lam_flat - step[..., None] * d, lam)
            g_new = _dual_value(_shifted(scores, pools, cand))
            ok = g_new <= g - 1e-4 * step * dec + slack
            if bool(xp.all(ok)):
                break
            step = xp.where(ok, step, step / 2.0)
        lam = _gauge_fix(_unflatten(lam_flat - step[..., None] * d, lam))
        if _check(scores, pools, lam, tol)[3]:
            return lam, k
    return lam, max_iter


def _witness(scores: list, pools: list[int], lam: list) -> tuple:
    """Witness mode (solvers.md §2.6): reparameterized maps, marginals, KL and L1 residuals.

    For constraint ``j`` the marginals are ``q = A_j p_j(λ)`` and ``r = p_{j+1}(λ)`` with
    ``p_j(λ) = softmax(θ̃_j(λ))``; ``log q = LSEpool(θ̃_j) - LSE(θ̃_j)`` and
    ``log r = θ̃_{j+1} - LSE(θ̃_{j+1})``, so ``KL(r ‖ q) = Σ r (log r - log q)`` is evaluated
    without forming ``log`` of a possibly underflowed probability.
    """
    xp = namespace(*scores)
    shifted = _shifted(scores, pools, lam)
    maps = [_softmax2(t) for t in shifted]
    lses = [_lse(t) for t in shifted]
    marginals, kls, l1s = [], [], []
    for j, s in enumerate(pools):
        log_q = _window_lse(shifted[j], s) - lses[j][..., None, None]
        log_r = shifted[j + 1] - lses[j + 1][..., None, None]
        q, r = xp.exp(log_q), maps[j + 1]
        marginals.append((q, r))
        kls.append(xp.sum(r * (log_r - log_q), axis=(-2, -1)))
        l1s.append(xp.sum(xp.abs(q - r), axis=(-2, -1)))
    return shifted, maps, marginals, kls, l1s


def _implicit_outputs(scores: list, pools: list[int], duals: list) -> tuple[list, list]:
    """``(maps, gauge-fixed duals)`` as a differentiable function of ``(θ, λ)``."""
    return [_softmax2(t) for t in _shifted(scores, pools, duals)], _gauge_fix(duals)


_IMPLICIT_FN = None


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


_IMPLICIT_FN = None


def _implicit_function():
    """The torch ``autograd.Function`` of ``θ ↦ (p(θ, λ*(θ)), λ*(θ))`` (built lazily).

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
    """
    global _IMPLICIT_FN
    if _IMPLICIT_FN is not None:
        return _IMPLICIT_FN
    import torch

    class ImplicitConsistent(torch.autograd.Function):
        @staticmethod
        def forward(ctx, pools, n_layers, *args):
            ctx.pools, ctx.n_layers = pools, n_layers
            scores, duals = list(args[:n_layers]), list(args[n_layers:])
            maps, out = _implicit_outputs(scores, list(pools), duals)
            ctx.save_for_backward(*scores, *out)
            return (*maps, *out)

        @staticmethod
        def backward(ctx, *cotangents):
            pools, n_layers = list(ctx.pools), ctx.n_layers
            saved = ctx.saved_tensors
            scores, duals = list(saved[:n_layers]), list(saved[n_layers:])
            cot = [
                torch.zeros_like(o) if c is None else c
                for o, c in zip(scores + duals, cotangents, strict=True)
            ]
            grads = _implicit_vjp(scores, pools, duals, cot[:n_layers], cot[n_layers:])
            return (None, None, *grads, *([None] * len(duals)))

    _IMPLICIT_FN = ImplicitConsistent
    return _IMPLICIT_FN


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
    scores, pools = _validate(scores, pools)
    tol = _validate_options(method, tol, max_iter, strict, dtype_name(scores[0]))
    max_iter = int(max_iter)
    if grad not in _GRADS:
        raise ValueError(f"grad must be one of {_GRADS}, got {grad!r}")
    if method == "witness":
        if grad == "implicit":
            raise ValueError(
                "grad='implicit' is not defined for method='witness' (nothing is solved); "
                "use grad='auto' (ordinary autograd)"
            )
        lam = _validate_witness(witness, scores, pools)
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
        out = _implicit_function().apply(tuple(pools), len(scores), *user_scores, *duals)
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


def _eps(x: Any) -> float:
    return 2.0**-52 if dtype_name(x) == "float64" else 2.0**-23

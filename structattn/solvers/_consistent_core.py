"""Array-API core of consistent attention: grid operations, certificates and solvers.

Written once against the array API (numpy arrays and torch tensors alike): sum-pooling
``A_j`` and its adjoint, the shifted scores ``θ̃_j(λ)``, the dual value and the
certificates, the nested-logit closed form, accelerated dual gradient descent, damped
Newton (Woodbury for two layers, dense Hessian otherwise) and the witness-mode
reparameterization.  Inputs are validated by :mod:`._consistent_checks`; the public
entry point is :func:`structattn.solvers.consistent_attention`.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat

from .._array import dtype_name, is_torch, namespace
from .simplex import softmax


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




def _eps(x: Any) -> float:
    return 2.0**-52 if dtype_name(x) == "float64" else 2.0**-23

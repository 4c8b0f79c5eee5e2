"""Column-wise lasso by proximal gradient (ISTA/FISTA) and LCA dynamics (solvers.md §1.3, §3).

Solves, for every leading (batch, head) index and every column ``j`` of ``X``::

    Z* = argmin_Z  ½||X - D Z||_F² + λ||Z||₁ ,   D (..., n, k), X (..., n, c), Z (..., k, c)

The problem separates over the ``c`` columns (``c`` independent lassos sharing ``D``).
Everything is written in the Gram form: ``G = DᵀD`` (``k x k``) and ``B = DᵀX``
(``k x c``) are formed once, each iteration costs ``O(k² c)``.

Methods
-------
``"ista"``
    ``Z ← S_{λ/L}(Z - (G Z - B)/L)``; ``F(Z_t) - F* ≤ L||Z_0 - Z*||²/(2t)``.
``"fista"``
    ISTA at the extrapolated point (Beck–Teboulle momentum); ``O(1/t²)``.
``"lca_euler"``, ``"lca_rk4"``
    The locally competitive network ``dU/dt = -U + B/L - (G/L - I) S_{λ/L}(U)``,
    code ``Z = S_{λ/L}(U)`` (the network on ``D/√L``), integrated with explicit Euler or
    classical RK4 with step ``dt``.  The unit Euler step (``dt=1``) is exactly ISTA.

The hot loop over batch x columns for ISTA/FISTA on numpy arrays is the numba kernel
``"lasso_prox"`` (:mod:`structattn.backends.numba.lasso`); the array-API core below serves
numpy without numba, the LCA methods and torch, where autograd flows through the unrolled
iterations (``grad="unroll"``).  ``grad="implicit"`` (torch) differentiates the
support system of the converged solution instead (solvers.md §3.6, :func:`lasso`).
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._array import (
    describe_array,
    detach,
    device_of,
    is_torch,
    namespace,
    to_numpy,
    validate_float_array,
    validate_same_kind,
)
from .._validate import check_int, check_real, reject_unknown, renamed_keyword
from ..backends import kernel, resolve_backend
from .simplex import ConvergenceWarning

__all__ = ["LassoResult", "gelu_shrink", "lasso", "soft_threshold"]

_METHODS = ("ista", "fista", "lca_euler", "lca_rk4")
_L_RULES = ("exact", "power", "rowsum")
_INITS = ("zero", "one_step")
_SHRINKS = ("soft", "gelu")
_GRADS = ("unroll", "implicit")
_TINY = 1e-300


@dataclass(frozen=True)
class LassoResult:
    """Result of :func:`lasso`.

    Attributes
    ----------
    Z : array, shape (..., k, c)
        The codes.
    recon : array, shape (..., n, c)
        The reconstruction ``D Z``.
    kkt_residual : float
        Largest violation of the optimality conditions ``Dᵀ(X - DZ) ∈ λ ∂||Z||₁`` over all
        entries: ``|g_i - λ sign z_i|`` on the support, ``max(0, |g_i| - λ)`` off it
        (``g = Dᵀ(X - DZ)``), divided by ``max(||DᵀX||_∞, tiny)`` per column.
    duality_gap : float
        Largest over columns of ``P(z) - Dual(ν)`` with the dual-feasible point
        ``ν = r · min(1, λ/||Dᵀr||_∞)``, ``r = x - Dz``; ``P = ½||r||² + λ||z||₁``,
        ``Dual = ½||x||² - ½||x - ν||²``.  Nonnegative up to rounding; an upper bound on
        ``P(z) - P*``.  (With ``λ = 0`` the rescaled point is 0 unless ``Dᵀr = 0``
        exactly, so the gap is ``½||r||²`` and only tends to 0 when ``X ∈ range(D)``.)
    n_iter : int
        Iterations run (largest over columns for the per-column numba kernel).
    converged : bool
        ``kkt_residual <= tol``.
    history : tuple of float or None
        Objective ``Σ_columns (½||x - Dz||² + λ||z||₁)`` (summed over batch) after each
        iteration, when requested.
    L : float
        Largest step constant used (``1/L`` is the step size).
    """

    Z: Any
    recon: Any
    kkt_residual: float
    duality_gap: float
    n_iter: int
    converged: bool
    history: tuple[float, ...] | None
    L: float


# ----------------------------------------------------------------- helpers
def soft_threshold(u: Any, tau: Any) -> Any:
    """``S_τ(u) = sign(u) · max(|u| - τ, 0)`` elementwise (numpy or torch).

    ``τ``: a finite number ``>= 0`` or an array of them broadcasting against ``u`` (a
    negative scalar threshold would enlarge ``|u|``: refused with a ``ValueError``).
    """
    if isinstance(tau, numbers.Real):
        tau = check_real(tau, "tau", minimum=0.0)
    xp = namespace(u)
    return xp.sign(u) * xp.clip(xp.abs(u) - tau, min=0.0)


def gelu_shrink(u: Any, tau: Any) -> Any:
    """Smooth shrink of the released VARS code: ``sign(u) · GELU(|u| - τ)``.

    ``GELU(x) = x · Φ(x) = x · ½(1 + erf(x/√2))`` (the exact erf form, torch's default
    ``F.gelu``).  Not a proximal operator: for ``0 < |u| < τ`` the output is
    ``-sign(u)·(τ - |u|)Φ(|u| - τ)``, small and of the *opposite* sign, outputs are never
    exactly sparse except at ``u = 0`` (where ``sign(0) = 0`` makes the map jump by
    ``τΦ(-τ)`` on either side); for ``|u| ≫ τ`` it tends to the soft threshold.
    """
    xp = namespace(u)
    x = xp.abs(u) - tau
    if is_torch(u):
        import torch

        erf = torch.special.erf(x / math.sqrt(2.0))
    else:
        from scipy.special import erf as _erf

        erf = _erf(x / math.sqrt(2.0))
    return xp.sign(u) * (x * 0.5 * (1.0 + erf))


def _lipschitz(G: Any, rule: Any) -> Any:
    """Per-batch ``L ≥ ||G||₂`` of shape (..., 1, 1), gradient stopped."""
    xp = namespace(G)
    Gd = detach(G)
    k = G.shape[-1]
    if isinstance(rule, numbers.Real):
        return xp.full((*G.shape[:-2], 1, 1), float(rule), dtype=G.dtype, device=device_of(G))
    if rule == "exact":
        ev = xp.linalg.eigvalsh(Gd)
        return xp.max(ev, axis=-1, keepdims=True)[..., None]
    if rule == "rowsum":
        return xp.max(xp.sum(xp.abs(Gd), axis=-1), axis=-1, keepdims=True)[..., None]
    # power iteration on the (PSD) Gram matrix; 1% safety margin on the Rayleigh quotient
    v = xp.ones((*G.shape[:-1], 1), dtype=G.dtype, device=device_of(G)) / math.sqrt(k)
    for _ in range(100):
        w = Gd @ v
        v = w / xp.clip(xp.linalg.vector_norm(w, axis=-2, keepdims=True), min=_TINY)
    rq = xp.sum(v * (Gd @ v), axis=-2, keepdims=True)
    return rq * 1.01


def _certificates(G: Any, B: Any, Z: Any, xx: Any, lam: float) -> tuple[float, float]:
    """(scaled KKT residual, duality gap) from the Gram form; xx = ||x||² per column."""
    xp = namespace(G)
    GZ = G @ Z
    g = B - GZ  # Dᵀ r
    on = Z != 0
    viol = xp.where(on, xp.abs(g - lam * xp.sign(Z)), xp.clip(xp.abs(g) - lam, min=0.0))
    scale = xp.clip(xp.max(xp.abs(B), axis=-2), min=_TINY)  # (..., c)
    kkt = float(xp.max(xp.max(viol, axis=-2) / scale))
    # ||r||² = ||x||² - 2<b, z> + <z, G z>; ||Dᵀr||_∞ = ||g||_∞
    zb = xp.sum(Z * B, axis=-2)
    zgz = xp.sum(Z * GZ, axis=-2)
    rr = xp.clip(xx - 2.0 * zb + zgz, min=0.0)
    gmax = xp.max(xp.abs(g), axis=-2)
    s = xp.where(gmax > lam, lam / xp.clip(gmax, min=_TINY), xp.ones_like(gmax))
    primal = 0.5 * rr + lam * xp.sum(xp.abs(Z), axis=-2)
    # Dual(ν) = ½||x||² - ½||x - s r||² = s<x, r> - ½ s²||r||², <x, r> = ||x||² - <b, z>
    dual = s * (xx - zb) - 0.5 * s * s * rr
    gap = float(xp.max(primal - dual))
    return kkt, gap


def _objective(G: Any, B: Any, Z: Any, xx: Any, lam: float) -> float:
    xp = namespace(G)
    val = 0.5 * xx - xp.sum(Z * B, axis=-2) + 0.5 * xp.sum(Z * (G @ Z), axis=-2)
    return float(xp.sum(val) + lam * xp.sum(xp.abs(Z)))


# ----------------------------------------------------------------- array-API core
def _solve_array(
    G: Any,
    B: Any,
    Z0: Any,
    L: Any,
    lam: float,
    method: str,
    n_iter: int,
    tol_step: float,
    dt: float,
    xx: Any | None,
    shrink: Any = soft_threshold,
) -> tuple[Any, int, list[float] | None]:
    """Unrolled iterations on whole (..., k, c) arrays; stops when every column has."""
    xp = namespace(G)
    thr = lam / L
    scale = xp.clip(xp.max(xp.abs(detach(B)), axis=-2, keepdims=True), min=_TINY)
    hist: list[float] | None = [] if xx is not None else None
    Z = Z0
    Y = Z0
    t = 1.0
    if method.startswith("lca"):
        # state U with Z = S(U); start from U = Z0 (a consistent state for Z0 = 0 or S(U0))
        Bn = B / L
        Gn = G / L
        U = Z0

        def f(u: Any) -> Any:
            a = shrink(u, thr)
            return -u + a + Bn - Gn @ a

    it = 0
    for it in range(1, n_iter + 1):  # noqa: B007 - it is used after the loop
        if method == "ista":
            Z_new = shrink(Z - (G @ Z - B) / L, thr)
            step = Z_new - Z
        elif method == "fista":
            Z_new = shrink(Y - (G @ Y - B) / L, thr)
            step = Z_new - Y
            t_new = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
            Y = Z_new + ((t - 1.0) / t_new) * (Z_new - Z)
            t = t_new
        elif method == "lca_euler":
            U = U + dt * f(U)
            Z_new = shrink(U, thr)
            step = (Z_new - Z) / dt
        else:  # lca_rk4
            k1 = f(U)
            k2 = f(U + 0.5 * dt * k1)
            k3 = f(U + 0.5 * dt * k2)
            k4 = f(U + dt * k3)
            U = U + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
            Z_new = shrink(U, thr)
            step = (Z_new - Z) / dt
        Z = Z_new
        if hist is not None:
            hist.append(_objective(G, B, Z, xx, lam))
        if tol_step > 0 and float(xp.max(xp.abs(detach(step)) * L / scale)) <= tol_step:
            break
    return Z, it, hist


# ----------------------------------------------------------------- implicit gradients


# ----------------------------------------------------------------- validation
def _validate(D: Any, X: Any, lam: Any, check_finite: bool) -> tuple[tuple[int, ...], float]:
    validate_float_array(D, "D", min_ndim=2, check_finite=check_finite)
    validate_float_array(X, "X", min_ndim=2, check_finite=check_finite)
    validate_same_kind({"D": D, "X": X})
    if D.shape[-2] != X.shape[-2]:
        raise ValueError(
            f"D and X must have the same number of rows n; got D.shape={tuple(D.shape)} "
            f"(n={D.shape[-2]}) and X.shape={tuple(X.shape)} (n={X.shape[-2]})"
        )
    try:
        batch = tuple(np.broadcast_shapes(tuple(D.shape[:-2]), tuple(X.shape[:-2])))
    except ValueError:
        raise ValueError(
            f"the leading (batch, head) dimensions of D {tuple(D.shape[:-2])} and X "
            f"{tuple(X.shape[:-2])} do not broadcast"
        ) from None
    if 0 in D.shape or 0 in X.shape:
        raise ValueError(f"D and X must be nonempty, got {describe_array(D)}, {describe_array(X)}")
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real):
        raise TypeError(f"lam must be a real number, got {lam!r}")
    lam = float(lam)
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    xp = namespace(D)
    norms = xp.linalg.vector_norm(detach(D), axis=-2)
    if bool(xp.any(norms == 0)):
        idx = np.argwhere(np.asarray(to_numpy(norms)) == 0)[0].tolist()
        raise ValueError(
            f"D has a zero column (index {tuple(idx)} over (..., k) of shape "
            f"{tuple(norms.shape)}); every dictionary atom must be nonzero (normalize "
            "or drop it)"
        )
    return batch, lam


# ----------------------------------------------------------------- public API
def lasso(
    D: Any,
    X: Any,
    lam: float,
    *,
    method: str = "ista",
    max_iter: int = 500,
    tol: float = 1e-8,
    L: Any = None,
    init: Any = None,
    shrink: str = "soft",
    grad: str = "unroll",
    dt: float = 0.5,
    history: bool = False,
    warn: bool = True,
    backend: str = "auto",
    check_finite: bool = True,
    **deprecated: Any,
) -> LassoResult:
    """Column-wise lasso ``min_Z ½||X - D Z||_F² + λ||Z||₁``.

    Parameters
    ----------
    D : array, shape (..., n, k)
        Dictionary (templates as columns); no zero column.  Leading (batch, head)
        dimensions broadcast against those of ``X``.
    X : array, shape (..., n, c)
        Signals, one lasso per column.  Same kind (numpy/torch), dtype and device as ``D``.
    lam : float
        ``λ >= 0``.
    method : {"ista", "fista", "lca_euler", "lca_rk4"}
        Iteration (module docstring).
    max_iter : int
        Maximum number of iterations (integrator steps for LCA).
    tol : float
        Target of the scaled KKT residual (:class:`LassoResult`).  The loop stops when
        the scaled prox-gradient step ``L·||Z_{t+1} - Y_t||_∞ / ||DᵀX||_∞`` (per column)
        falls below ``tol/4``, which bounds the KKT residual by ``tol/2`` for ISTA/FISTA
        with ``L ≥ ||DᵀD||₂``.  ``tol = 0`` runs exactly ``max_iter`` iterations
        (``n_iter=`` is the deprecated name of this keyword).
    L : None, "power", "rowsum" or float
        Step constant (step ``1/L``), per batch element, gradient stopped.  ``None``:
        the exact ``||DᵀD||₂`` (eigenvalues of the ``k x k`` Gram); ``"power"``: 100 power
        iterations, times 1.01; ``"rowsum"``: ``max_i Σ_j |(DᵀD)_ij|`` (cheap upper bound,
        the VARS code's choice); a float: used as is.
    init : None, "zero", "one_step" or array of shape (..., k, c)
        Starting point: zeros (``None``/``"zero"``), ``S_{λ/L}(DᵀX/L)`` (one ISTA step
        from zero, the VARS code's choice), or given codes.
    shrink : {"soft", "gelu"}
        ``"soft"``: the exact soft threshold ``S_{λ/L}`` (proximal operator of ``λ||·||₁``).
        ``"gelu"``: the released VARS code's smooth surrogate
        :func:`gelu_shrink` ``sign(u)·GELU(|u| - λ/L)`` in every place the soft threshold is
        used (iterations and ``init="one_step"``).  It is not a proximal operator, so the
        iteration does not solve the lasso: the certificates still measure the exact lasso
        KKT conditions and stay away from 0 (use ``tol=0, warn=False`` for a fixed unroll).
    grad : {"unroll", "implicit"}
        torch only (ignored for numpy).  ``"unroll"``: autograd through the iterations.
        ``"implicit"``: the solve runs without autograd, and a custom
        ``torch.autograd.Function`` differentiates the support system of the solution
        (solvers.md §3.6): on the support ``S`` of each column with signs ``s``,
        ``(D_SᵀD_S) z_S = D_Sᵀx - λ s`` and ``z = 0`` off ``S``, so
        ``dz_S = (D_SᵀD_S)⁻¹ (dDᵀx + Dᵀdx - (dDᵀD + DᵀdD) z)_S``.  Backward solves one
        ``|S| x |S|`` system per column, ``w = (D_SᵀD_S)⁻¹ ḡ_S`` (zero off ``S``), and returns
        ``x̄ = D w``, ``D̄ = x wᵀ - D(z wᵀ + w zᵀ)`` summed over columns (``λ`` and ``L``
        are constants, a tensor ``init`` gets no gradient).  The backward is itself
        differentiable (double backward, support and signs held fixed).  Valid when the solve has
        converged, ``D_SᵀD_S`` is invertible and strict complementarity holds
        (``|Dᵀr|_i < λ`` off ``S``); otherwise a ``RuntimeWarning`` is emitted and the
        gradient falls back to unrolling.  Requires ``shrink="soft"``.
    dt : float
        Integrator step of the LCA methods in units of ``τ`` (``dt=1`` Euler is ISTA).
    history : bool
        Record the objective after each iteration (uses the array-API core).
    warn : bool
        Emit :class:`ConvergenceWarning` when not converged.
    backend : {"auto", "numpy", "numba", "torch"}
        ``numba`` runs ISTA/FISTA per (batch, column) in a compiled kernel (no autograd);
        LCA methods and ``history=True`` use the array-API core.
    check_finite : bool
        Reject NaN/Inf in ``D``, ``X``, ``init``.

    Returns
    -------
    LassoResult
        ``Z``, ``recon = D Z``, ``kkt_residual``, ``duality_gap``, ``n_iter``,
        ``converged``, ``history``, ``L``.

    Raises
    ------
    TypeError
        Non-array / non-float inputs, mixed kinds or dtypes, ``lam`` not a number.
    ValueError
        ``lam < 0`` or non-finite, row counts of ``D`` and ``X`` differ, batch
        dimensions do not broadcast, a zero column in ``D``, NaN/Inf, bad ``method``,
        ``L``, ``init``, ``shrink``, ``max_iter``, ``tol`` or ``dt``.

    Warns
    -----
    ConvergenceWarning
        When ``kkt_residual > tol`` after ``max_iter`` iterations (the result is returned).

    Notes
    -----
    Gram ``O(n k²)``, ``DᵀX`` ``O(n k c)``, each iteration ``O(k² c)`` per batch element.
    On torch, gradients flow through the unrolled iterations (``D``, ``X`` and a tensor
    ``init``); the soft threshold's derivative is the support indicator.  ``L`` is
    treated as a constant.  With ``grad="implicit"`` the gradient is that of the exact
    solution (independent of ``n_iter``, ``init`` and ``method``); memory ``O(c k²)``.
    """
    batch, lam = _validate(D, X, lam, check_finite)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if shrink not in _SHRINKS:
        raise ValueError(f"shrink must be one of {_SHRINKS}, got {shrink!r}")
    if grad not in _GRADS:
        raise ValueError(f"grad must be one of {_GRADS}, got {grad!r}")
    if grad == "implicit" and shrink != "soft":
        raise ValueError("grad='implicit' needs shrink='soft' (the GELU shrink is no prox)")
    shrink_fn = soft_threshold if shrink == "soft" else gelu_shrink
    n_iter = check_int(
        renamed_keyword(deprecated, "n_iter", "max_iter", max_iter, 500, "lasso"), "max_iter"
    )
    reject_unknown(deprecated, "lasso")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol >= 0:
        raise ValueError(f"tol must be a real number >= 0, got {tol!r}")
    if isinstance(dt, bool) or not isinstance(dt, numbers.Real) or not 0 < dt <= 2:
        raise ValueError(f"dt must be a real number in (0, 2], got {dt!r}")
    if L is None:
        L = "exact"
    if isinstance(L, str):
        if L not in _L_RULES[1:] and L != "exact":
            raise ValueError(f"L must be None, 'power', 'rowsum' or a positive float, got {L!r}")
    elif isinstance(L, bool) or not isinstance(L, numbers.Real) or not (
        math.isfinite(L) and L > 0
    ):
        raise ValueError(f"L must be None, 'power', 'rowsum' or a positive float, got {L!r}")
    be = resolve_backend(backend, D, X)

    xp = namespace(D, X)
    k, c = D.shape[-1], X.shape[-1]
    Dt = xp.matrix_transpose(D)
    G = Dt @ D
    B = Dt @ X
    G = xp.broadcast_to(G, (*batch, k, k))
    B = xp.broadcast_to(B, (*batch, k, c))
    xx = xp.broadcast_to(xp.sum(X * X, axis=-2), (*batch, c))
    Lb = _lipschitz(G, L)

    if init is None or (isinstance(init, str) and init == "zero"):
        Z0 = xp.zeros((*batch, k, c), dtype=D.dtype, device=device_of(D))
    elif isinstance(init, str):
        if init != "one_step":
            raise ValueError(f"init must be None, {_INITS} or an array, got {init!r}")
        Z0 = shrink_fn(B / Lb, lam / Lb)
    else:
        validate_float_array(init, "init", min_ndim=2, check_finite=check_finite)
        validate_same_kind({"D": D, "init": init})
        try:
            Z0 = xp.broadcast_to(init, (*batch, k, c))
        except (ValueError, RuntimeError):
            raise ValueError(
                f"init must broadcast to (..., k, c) = {(*batch, k, c)}, got shape "
                f"{tuple(init.shape)}"
            ) from None

    tol_step = float(tol) / 4.0
    use_kernel = (
        be == "numba" and method in ("ista", "fista") and not history and shrink == "soft"
    )
    implicit = grad == "implicit" and is_torch(D) and (D.requires_grad or X.requires_grad)
    if use_kernel:
        Zk, its = kernel("lasso_prox", "numba")(
            G, B, Z0, Lb, lam, method == "fista", int(n_iter), tol_step
        )
        Z, n_done, hist = Zk, int(its), None
    elif implicit:
        import torch

        with torch.no_grad():
            Z, n_done, hist = _solve_array(
                G.detach(), B.detach(), detach(Z0), Lb, lam, method, int(n_iter), tol_step,
                float(dt), detach(xx) if history else None,
            )
    else:
        Z, n_done, hist = _solve_array(
            G, B, Z0, Lb, lam, method, int(n_iter), tol_step, float(dt),
            xx if history else None, shrink_fn,
        )
    kkt, gap = _certificates(detach(G), detach(B), detach(Z), detach(xx), lam)
    if implicit:
        from ._torch_lasso import ImplicitLasso, implicit_invalid

        why = implicit_invalid(G.detach(), B.detach(), Z, lam, kkt, tol)
        if why is None:
            Z = ImplicitLasso.apply(D, X, Z, lam)
        else:
            warnings.warn(
                f"lasso grad='implicit': {why}; the solution is not differentiable there, "
                "falling back to unrolled gradients",
                RuntimeWarning,
                stacklevel=2,
            )
            Z, _, _ = _solve_array(
                G, B, Z0, Lb, lam, method, int(n_iter), tol_step, float(dt), None
            )
    converged = kkt <= tol
    if warn and not converged:
        warnings.warn(
            f"lasso ({method}) stopped after {n_done} iterations with scaled KKT residual "
            f"{kkt:.3g} > tol={tol:.3g} (duality gap {gap:.3g}); increase max_iter, use "
            "method='fista', or loosen tol",
            ConvergenceWarning,
            stacklevel=2,
        )
    return LassoResult(
        Z=Z,
        recon=D @ Z,
        kkt_residual=kkt,
        duality_gap=gap,
        n_iter=n_done,
        converged=converged,
        history=tuple(hist) if hist is not None else None,
        L=float(xp.max(Lb)),
    )

"""Maps onto the probability simplex: softmax, sparsemax and α-entmax.

Each map is a regularized argmax over the simplex ``Δ_n`` (solvers.md §1.1–1.2)::

    softmax(x)    = argmax_{p ∈ Δ_n} <x, p> + H(p)                 (Shannon entropy)
    sparsemax(x)  = argmax_{p ∈ Δ_n} <x, p> - ½||p||²              (Euclidean projection)
    entmax(x, α)  = argmax_{p ∈ Δ_n} <x, p> + H_α(p)               (Tsallis entropy, α > 1)

with the closed forms ``p ∝ exp(x)``, ``p_i = [x_i - τ]_+`` and
``p_i = [(α-1) x_i - τ]_+^{1/(α-1)}``, where the threshold ``τ`` is the unique root of
``Σ_i p_i(τ) = 1`` (``Σ p_i(τ)`` is continuous and strictly decreasing where positive).
``α = 1`` is softmax, ``α = 2`` is sparsemax; for ``α = 1.5`` the threshold has an
exact sort-based form; every other ``α`` uses bisection on ``τ``.

The functions take numpy arrays or torch tensors of any shape and work along one
``axis``.  The math core is written once against the array API; on torch tensors it runs
inside custom :class:`torch.autograd.Function` objects whose backward is the closed-form
Jacobian-vector product (itself differentiable, so ``gradgradcheck`` passes).
Computation is in at least float32: float16/bfloat16 inputs are upcast and the result is
cast back.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import array_api_compat
import numpy as np

from .._array import describe_array, dtype_name, is_numpy, is_torch, namespace
from .._validate import check_int, reject_unknown, renamed_keyword

__all__ = ["ConvergenceWarning", "entmax", "softmax", "sparsemax"]

#: Input dtypes accepted; the half types are computed in float32.
_ACCEPTED_DTYPES = ("float16", "bfloat16", "float32", "float64")
_UPCAST = {"float16": "float32", "bfloat16": "float32"}
#: Machine epsilon of the compute dtypes (the default bisection tolerance is 4 eps).
_EPS = {"float32": 2.0**-23, "float64": 2.0**-52}
_METHODS = ("auto", "bisect")


class ConvergenceWarning(RuntimeWarning):
    """An iterative solver stopped (iteration budget spent) before reaching its tolerance."""


# ----------------------------------------------------------------- validation
def _validate_x(x: Any, axis: Any, check_finite: bool) -> int:
    """Validate ``x`` and ``axis``; return ``axis`` as a non-negative int."""
    if not (is_numpy(x) or is_torch(x)):
        raise TypeError(f"x must be a numpy.ndarray or torch.Tensor, got {type(x).__name__}")
    if dtype_name(x) not in _ACCEPTED_DTYPES:
        raise TypeError(
            f"x must have a floating dtype in {_ACCEPTED_DTYPES}, got {dtype_name(x)}"
        )
    if x.ndim < 1:
        raise ValueError(f"x must have at least 1 dimension, got shape {tuple(x.shape)}")
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an int, got {axis!r}")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(
            f"axis {axis} is out of range for x with {x.ndim} dimensions "
            f"(shape {tuple(x.shape)}); expected -{x.ndim} <= axis < {x.ndim}"
        )
    axis = int(axis) % x.ndim
    if x.shape[axis] == 0:
        raise ValueError(
            f"x must have a nonzero size along axis {axis}, got shape {tuple(x.shape)}"
        )
    if not isinstance(check_finite, bool):
        raise TypeError(f"check_finite must be a bool, got {check_finite!r}")
    if check_finite:
        xp = namespace(x)
        if not bool(xp.all(xp.isfinite(x))):
            raise ValueError(f"x contains NaN or Inf values ({describe_array(x)})")
    return axis


def _validate_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be a real number, got {alpha!r}")
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be finite, got {alpha}")
    if alpha < 1.0:
        raise ValueError(
            f"alpha must be >= 1 (1: softmax, 2: sparsemax), got {alpha}; "
            "alpha < 1 gives a non-concave Tsallis entropy"
        )
    return alpha


def _validate_iter(n_iter: Any, tol: Any, method: Any) -> None:
    check_int(n_iter, "max_iter", minimum=1)
    if tol is not None:
        if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
            raise TypeError(f"tol must be None or a positive real number, got {tol!r}")
        if not (math.isfinite(tol) and tol > 0):
            raise ValueError(f"tol must be None or a positive finite number, got {tol!r}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")


# -------------------------------------------------------- array-API core (last axis)
def _arange1(x: Any, xp: Any) -> Any:
    """``[1, 2, ..., n]`` in ``x``'s dtype and device (``n = x.shape[-1]``)."""
    n = x.shape[-1]
    return xp.arange(1, n + 1, dtype=x.dtype, device=array_api_compat.device(x))


def _softmax_last(x: Any) -> Any:
    """Softmax along the last axis (max-shifted)."""
    xp = namespace(x)
    e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


def _sparsemax_last(x: Any) -> Any:
    """Sparsemax along the last axis by sorting.

    With ``z`` sorted in decreasing order, ``τ_k = (Σ_{j≤k} z_j - 1)/k`` satisfies
    ``Σ_i [z_i - τ_k]_+ ≥ 1``, hence ``τ_k ≤ τ*``, with equality at the support size;
    so ``τ* = max_k τ_k`` (no gather needed).
    """
    xp = namespace(x)
    z = x - xp.max(x, axis=-1, keepdims=True)
    zs = xp.sort(z, axis=-1, descending=True)
    tau = xp.max((xp.cumulative_sum(zs, axis=-1) - 1.0) / _arange1(x, xp), axis=-1, keepdims=True)
    return xp.clip(z - tau, min=0.0)


def _entmax15_last(x: Any) -> Any:
    """1.5-entmax along the last axis, exact sort-based threshold (Peters et al., 2019).

    With ``z = (x - max x)/2`` sorted decreasingly, ``τ_k`` is the smaller root of
    ``Σ_{j≤k} (z_j - τ)² = 1``; the support size ``K`` is the length of the leading run
    of ``τ_k ≤ z_k`` and ``τ* = τ_K``.
    """
    xp = namespace(x)
    z = (x - xp.max(x, axis=-1, keepdims=True)) / 2.0
    zs = xp.sort(z, axis=-1, descending=True)
    k = _arange1(x, xp)
    mean = xp.cumulative_sum(zs, axis=-1) / k
    mean_sq = xp.cumulative_sum(zs * zs, axis=-1) / k
    delta = (1.0 - k * (mean_sq - mean * mean)) / k
    tau_k = mean - xp.sqrt(xp.clip(delta, min=0.0))
    bad = xp.astype(tau_k > zs, x.dtype)
    # leading run of "τ_k ≤ z_k" (k = 1 always qualifies: τ_1 = z_1 - 1)
    lead = xp.astype(xp.cumulative_sum(bad, axis=-1) == 0, x.dtype)
    K = xp.sum(lead, axis=-1, keepdims=True)
    tau = xp.sum(xp.where(k == K, tau_k, xp.zeros_like(tau_k)), axis=-1, keepdims=True)
    p = xp.clip(z - tau, min=0.0)
    return p * p


def _bisect_plan(n: int, alpha: float, n_iter: int, tol: float) -> tuple[int, int, float]:
    """Bisection steps for ``τ ∈ [-1, -n^{1-α}]``: ``(steps, needed, final_width)``.

    The bracket width after ``s`` halvings is exactly ``w0 / 2^s`` for every row, so
    the number of steps needed to reach ``tol`` is known before iterating.
    """
    w0 = 1.0 - float(n) ** (1.0 - alpha)
    needed = 0 if w0 <= tol else math.ceil(math.log2(w0 / tol))
    steps = min(n_iter, needed)
    return steps, needed, w0 / 2.0**steps


def _entmax_bisect_last(x: Any, alpha: float, steps: int) -> Any:
    """α-entmax along the last axis by ``steps`` bisection halvings on ``τ``, renormalised.

    With ``z = (α-1)(x - max x)`` (so ``max z = 0``) the root lies in
    ``[-1, -n^{1-α}]``: at ``τ = -1`` the largest entry alone gives ``p = 1``, at
    ``τ = -n^{1-α}`` every entry is ``≤ 1/n``.
    """
    xp = namespace(x)
    am1 = alpha - 1.0
    inv = 1.0 / am1
    n = x.shape[-1]
    z = (x - xp.max(x, axis=-1, keepdims=True)) * am1
    lo = xp.full((*z.shape[:-1], 1), -1.0, dtype=x.dtype, device=array_api_compat.device(x))
    width = 1.0 - float(n) ** (-am1)
    for _ in range(steps):
        width /= 2.0
        mid = lo + width
        mass = xp.sum(xp.clip(z - mid, min=0.0) ** inv, axis=-1, keepdims=True)
        lo = xp.where(mass >= 1.0, mid, lo)
    p = xp.clip(z - (lo + width / 2.0), min=0.0) ** inv
    return p / xp.sum(p, axis=-1, keepdims=True)


# ---------------------------------------------------------------- dispatch
def _clamp_gaps(x: Any, alpha: float) -> Any:
    """``max(x - max x, -2/(α-1))`` along the last axis: the same map, at any magnitude.

    An entry with ``(α-1)(max x - x_j) >= 1`` is outside the support of α-entmax
    (``τ >= (α-1) max x - 1``), so raising it to ``max x - 2/(α-1)`` leaves every
    output and every gradient unchanged; afterwards all scores lie in
    ``[-2/(α-1), 0]`` and no square, power or cumulative sum can overflow, whatever
    the input magnitude (an overflowing ``x - max x`` is ``-inf``, clamped too).
    """
    xp = namespace(x)
    with np.errstate(over="ignore", invalid="ignore"):
        z = x - xp.max(x, axis=-1, keepdims=True)
        return xp.clip(z, min=-2.0 / (alpha - 1.0))


def _apply(x: Any, axis: int, kind: str, alpha: float = 1.0, steps: int | None = None) -> Any:
    """Upcast, move ``axis`` last, run the core (numpy) or the autograd Function (torch)."""
    in_dtype = dtype_name(x)
    xp = namespace(x)
    if in_dtype in _UPCAST:
        x = xp.astype(x, getattr(xp, _UPCAST[in_dtype]))
    x = xp.moveaxis(x, axis, -1)
    if kind != "softmax":
        x = _clamp_gaps(x, 2.0 if kind == "sparsemax" else alpha)
    if is_torch(x):
        from ._torch_simplex import simplex_map

        p = simplex_map(x, kind, alpha, steps)
    elif kind == "softmax":
        p = _softmax_last(x)
    elif kind == "sparsemax":
        p = _sparsemax_last(x)
    elif steps is None:
        p = _entmax15_last(x)
    else:
        p = _entmax_bisect_last(x, alpha, steps)
    p = xp.moveaxis(p, -1, axis)
    if in_dtype in _UPCAST:
        p = xp.astype(p, getattr(xp, in_dtype))
    return p


# ---------------------------------------------------------------- public API
def softmax(x: Any, axis: int = -1, *, check_finite: bool = True) -> Any:
    """Softmax along ``axis``: ``p = exp(x - max x) / Σ exp(x - max x)``.

    The maximizer of ``<x, p> + H(p)`` over the simplex (Shannon entropy ``H``).

    Parameters
    ----------
    x : numpy.ndarray or torch.Tensor, shape (..., n, ...)
        Scores; float16, bfloat16 (torch), float32 or float64.  Half precision is
        computed in float32 and cast back.
    axis : int
        Axis of length ``n`` to normalize over.
    check_finite : bool
        Reject NaN/Inf in ``x`` (one O(size) reduction).

    Returns
    -------
    p : same kind, shape, dtype and device as ``x``
        Nonnegative (strictly positive up to underflow), sums to 1 along ``axis``.

    Raises
    ------
    TypeError
        ``x`` not a numpy array / torch tensor, or of a non-floating dtype.
    ValueError
        ``axis`` out of range, zero length along ``axis``, or NaN/Inf in ``x``.

    Notes
    -----
    ``O(size)`` time and memory.  On torch tensors the backward is the closed form
    ``J v = p ⊙ (v - <p, v>)``, with ``J = diag(p) - p pᵀ`` symmetric PSD and ``J 1 = 0``;
    it is written with differentiable operations (twice differentiable).
    """
    axis = _validate_x(x, axis, check_finite)
    return _apply(x, axis, "softmax")


def sparsemax(x: Any, axis: int = -1, *, check_finite: bool = True) -> Any:
    """Sparsemax along ``axis``: the Euclidean projection of ``x`` onto the simplex.

    ``p = argmin_{p ∈ Δ_n} ||p - x||² = [x - τ]_+`` with ``τ`` the root of
    ``Σ_i [x_i - τ]_+ = 1``, found exactly by sorting.

    Parameters
    ----------
    x : numpy.ndarray or torch.Tensor, shape (..., n, ...)
        Scores; float16, bfloat16 (torch), float32 or float64 (half precision computed
        in float32 and cast back).
    axis : int
        Axis of length ``n`` to project along.
    check_finite : bool
        Reject NaN/Inf in ``x``.

    Returns
    -------
    p : same kind, shape, dtype and device as ``x``
        Nonnegative, sums to 1 along ``axis``, typically with exact zeros.

    Raises
    ------
    TypeError
        ``x`` not a numpy array / torch tensor, or of a non-floating dtype.
    ValueError
        ``axis`` out of range, zero length along ``axis``, or NaN/Inf in ``x``.

    Notes
    -----
    ``O(size · log n)`` time (one sort along ``axis``), ``O(size)`` memory.  On torch
    tensors the backward is ``J v = s ⊙ (v - <s, v>/|S|)`` (``s`` the indicator of the
    support ``S``); ``J`` is symmetric with ``J 1 = 0``.  It is piecewise constant in
    ``x``, so second derivatives are zero away from support changes (ties).
    """
    axis = _validate_x(x, axis, check_finite)
    return _apply(x, axis, "sparsemax")


def entmax(
    x: Any,
    alpha: float = 1.5,
    axis: int = -1,
    *,
    max_iter: int = 50,
    tol: float | None = None,
    method: str = "auto",
    check_finite: bool = True,
    **deprecated: Any,
) -> Any:
    """α-entmax along ``axis``: ``p_i = [(α-1) x_i - τ]_+^{1/(α-1)}`` with ``Σ p_i = 1``.

    The maximizer of ``<x, p> + H_α(p)`` over the simplex, with the Tsallis entropy
    ``H_α(p) = (Σ_i (p_i - p_i^α)) / (α(α-1))``.  ``alpha == 1`` is :func:`softmax`,
    ``alpha == 2`` is :func:`sparsemax`, ``alpha == 1.5`` uses the exact sort-based
    threshold; any other ``alpha > 1`` finds ``τ`` by bisection.

    Parameters
    ----------
    x : numpy.ndarray or torch.Tensor, shape (..., n, ...)
        Scores; float16, bfloat16 (torch), float32 or float64 (half precision computed
        in float32 and cast back).
    alpha : float
        Tsallis parameter, ``alpha >= 1`` and finite.
    axis : int
        Axis of length ``n`` to map along.
    max_iter : int
        Maximum number of bisection halvings (bisection path only).  The older name
        ``n_iter=`` still works, with a ``DeprecationWarning``.
    tol : float, optional
        Absolute tolerance on the threshold ``τ`` of the shifted, scaled scores
        ``(α-1)(x - max x)`` (where ``τ ∈ [-1, -n^{1-α}]``).  Default: 4 machine epsilons
        of the compute dtype, i.e. float precision, reached within the default ``max_iter``
        (at most 50 halvings in float64, 21 in float32).
    method : {"auto", "bisect"}
        ``"auto"``: the closed forms for ``alpha`` in {1, 1.5, 2}, bisection otherwise;
        ``"bisect"``: bisection for every ``alpha > 1`` (a check of the closed forms).
    check_finite : bool
        Reject NaN/Inf in ``x``.

    Returns
    -------
    p : same kind, shape, dtype and device as ``x``
        Nonnegative, sums to 1 along ``axis`` (the bisection result is renormalised).

    Raises
    ------
    TypeError
        ``x`` not a numpy array / torch tensor or of a non-floating dtype; ``alpha`` or
        ``tol`` not a real number.
    ValueError
        ``alpha < 1`` or non-finite, ``axis`` out of range, zero length along ``axis``,
        NaN/Inf in ``x``, ``max_iter < 1``, ``tol <= 0``, unknown ``method``.

    Warns
    -----
    ConvergenceWarning
        When ``max_iter`` halvings cannot shrink the bracket of ``τ`` below ``tol`` (the
        bracket width after ``s`` halvings is ``(1 - n^{1-α}) / 2^s`` for every row, so
        this is known before iterating; the result is then returned, renormalised).

    Notes
    -----
    Sort-based paths: ``O(size · log n)`` time.  Bisection: ``O(size · steps)`` time with
    ``steps = min(max_iter, ceil(log2((1 - n^{1-α}) / tol)))``, ``O(size)`` memory.
    For ``alpha`` close to 1 the map is ill-conditioned in ``τ`` (``p`` is a
    ``1/(α-1)``-th power): relative errors of ``p`` grow like ``eps/(α-1)``; use
    ``alpha=1`` for softmax itself.

    On torch tensors the backward is the closed form with ``g = p^{2-α}`` on the
    support: ``J v = g ⊙ v - g <g, v> / Σ g`` (``J`` symmetric, ``J 1 = 0``), written with
    differentiable operations so that double backward (``gradgradcheck``) works away
    from support changes.
    """
    n_iter = renamed_keyword(deprecated, "n_iter", "max_iter", max_iter, 50, "entmax")
    reject_unknown(deprecated, "entmax")
    axis = _validate_x(x, axis, check_finite)
    alpha = _validate_alpha(alpha)
    _validate_iter(n_iter, tol, method)
    if method == "auto":
        if alpha == 1.0:
            return _apply(x, axis, "softmax")
        if alpha == 2.0:
            return _apply(x, axis, "sparsemax")
        if alpha == 1.5:
            return _apply(x, axis, "entmax", alpha)
    elif alpha == 1.0:
        raise ValueError("method='bisect' needs alpha > 1 (alpha == 1 is softmax, no threshold)")
    compute = _UPCAST.get(dtype_name(x), dtype_name(x))
    tol_ = 4.0 * _EPS[compute] if tol is None else float(tol)
    n = int(x.shape[axis])
    steps, needed, width = _bisect_plan(n, alpha, int(n_iter), tol_)
    if steps < needed:
        warnings.warn(
            f"entmax bisection (alpha={alpha}, n={n}) stopped after max_iter={n_iter} "
            f"halvings with a threshold bracket of width {width:.3g} > tol={tol_:.3g}; "
            f"{needed} halvings reach tol: increase max_iter",
            ConvergenceWarning,
            stacklevel=2,
        )
    return _apply(x, axis, "entmax", alpha, steps)

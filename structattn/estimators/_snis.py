"""RFA / Performer positive random features read as self-normalised importance sampling."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import as_generator
from ..backends import resolve_backend
from ..features import gaussian_projection, orthogonal_gaussian
from . import _common as C

__all__ = ["rfa_snis"]


def key_side(ks: Any, v: Any | None, w: Any) -> tuple[Any, Any, Any | None]:
    """Query-independent parts of every estimator of this module.

    For samples ``w_s`` (``(..., S, d)`` or ``(S, d)``) and scaled keys ``ks`` ``(..., L, d)``:
    ``lse_s = log Σ_m ξ(k_m, w_s)`` ``(..., S)``, the key weights
    ``G_sm = softmax_m(w_s·k_m − |k_m|²/2)`` ``(..., S, L)`` and the integrand
    ``f(w_s) = G_s V`` ``(..., S, d_v)`` (None when ``v`` is None).  ``O(S·L·(d + d_v))``.
    """
    LK = C.transpose(C.log_xi(ks, w))  # (..., S, L)
    lse = C.logsumexp(LK, axis=-1)
    G = C.softmax(LK, axis=-1)
    return lse, G, (None if v is None else G @ v)


def snis_output(log_weights: Any, G: Any, F: Any | None) -> Any:
    """``softmax_s(log_weights) @ F`` (output) or ``@ G`` (implied matrix) when ``F`` is None."""
    weights = C.softmax(log_weights, axis=-1)
    return weights @ (G if F is None else F)


def _projection(num_samples: Any, seed: Any, projection: Any, orthogonal: bool, d: int):
    if projection is not None:
        if num_samples is not None or seed is not None:
            raise ValueError("give either projection= or num_samples= and seed=, not both")
        W = np.asarray(projection, dtype=np.float64)
        if W.ndim != 2 or W.shape[1] != d or W.shape[0] < 1:
            raise ValueError(
                f"projection must have shape (num_samples, d) with d = {d}, got {W.shape}"
            )
        if not np.all(np.isfinite(W)):
            raise ValueError("projection contains NaN or Inf values")
        return W
    if num_samples is None:
        raise TypeError("rfa_snis needs num_samples= and seed= (or an explicit projection=)")
    S = C.check_int(num_samples, "num_samples")
    rng = as_generator(seed)
    return orthogonal_gaussian(S, d, rng) if orthogonal else gaussian_projection(S, d, rng)


def rfa_snis_core(q, k, v, *, num_samples, seed, projection, orthogonal, scale,
                  backend, check_finite):
    """Output, or the implied ``(..., L_q, L_k)`` matrix when ``v`` is None."""
    if v is None:  # matrix mode: validate q, k with a zero-width stand-in
        _, _, _, d, _ = C.validated(q, k, k[..., :0], check_finite, values=False)
    else:
        _, _, _, d, _ = C.validated(q, k, v, check_finite)
    resolve_backend(backend, q, k, v)
    C.check_bool(orthogonal, "orthogonal")
    t = C.temperature(scale, d)
    empty = C.empty_result(q, k, v)
    if empty is not None:
        return empty
    W = C.draws_like(_projection(num_samples, seed, projection, orthogonal, d), q)
    qs, ks = C.scaled(q, t), C.scaled(k, t)
    lse, G, F = key_side(ks, v, W)
    log_w = C.log_xi(qs, W) + lse[..., None, :]  # (..., L_q, S)
    return snis_output(log_w, G, F)


def rfa_snis(
    q: Any,
    k: Any,
    v: Any,
    *,
    num_samples: int | None = None,
    seed: Any = None,
    projection: Any = None,
    orthogonal: bool = False,
    scale: float | None = None,
    backend: str = "auto",
    check_finite: bool = True,
) -> Any:
    """RFA / Performer (positive random features) as self-normalised importance sampling.

    With samples ``w_1 … w_S ~ N(0, I)`` shared by all queries, in the scaled space
    (``q_s = q·scale^{1/2}``, ``k_s = k·scale^{1/2}``; target kernel ``exp(q_s·k_s)``)::

        y_n = Σ_s softmax_s(log ξ(q_n, w_s) + log Σ_m ξ(k_m, w_s)) · f(w_s),
        f(w) = softmax_m(w·k_m − |k_m|²/2) V,       ξ(x, w) = exp(w·x − |x|²/2).

    This is algebraically the FAVOR+ estimator
    ``φ(q_n)ᵀ Σ_m φ(k_m) v_mᵀ / φ(q_n)ᵀ Σ_m φ(k_m)`` with
    ``φ(x) = S^{-1/2} exp(W x_s − |x_s|²/2)``: on the same draws (``projection=``)
    it equals ``kernel_attention(q, k, v, PositiveRandomFeatures(d, S, projection=W))``
    to rounding, but it is evaluated entirely in the log domain (log-sum-exp over keys,
    softmax over samples), so no feature can underflow and no epsilon is needed.

    Parameters
    ----------
    q : array, shape (..., L_q, d)
    k : array, shape (..., L_k, d)
    v : array, shape (..., L_k, d_v)
        numpy arrays or torch tensors (float32/float64, one device), identical leading
        dimensions.
    num_samples : int, optional
        Number of samples ``S`` (with ``seed``).
    seed : int or numpy.random.Generator, optional
        Source of the draws (required with ``num_samples``).
    projection : array, shape (S, d), optional
        Explicit samples ``w_s`` (rows), instead of ``num_samples``/``seed``.
    orthogonal : bool, default False
        Draw orthogonal blocks (:func:`~structattn.features.orthogonal_gaussian`)
        instead of i.i.d. Gaussian rows (the importance-sampling reading uses i.i.d.).
    scale : float, optional
        Softmax scale; default ``d**-0.5``.
    backend : {"auto", "numpy", "numba", "torch"}
        There is no hot loop: numpy and numba run the same numpy code.
    check_finite : bool, default True

    Returns
    -------
    array, shape (..., L_q, d_v)
        Consistent, biased (``O(1/S)``) estimate of softmax attention; numpy in → numpy
        out, torch in → torch out (autograd flows through ``q``, ``k``, ``v``).

    Notes
    -----
    ``O((L_q + L_k)·S·d + (L_q + L_k)·S·d_v)`` time, ``O((L_q + L_k)·S)`` memory.
    Non-causal only (causal FAVOR+ is :func:`~structattn.attention.kernel_attention`
    with ``causal=True``).

    Examples
    --------
    >>> import numpy as np
    >>> from structattn.estimators import rfa_snis
    >>> x = np.random.default_rng(0).standard_normal((2, 16, 8))
    >>> rfa_snis(x, x, x, num_samples=32, seed=0).shape
    (2, 16, 8)
    """
    out = rfa_snis_core(q, k, v, num_samples=num_samples, seed=seed, projection=projection,
                        orthogonal=orthogonal, scale=scale, backend=backend,
                        check_finite=check_finite)
    return C.checked_output(out, "rfa_snis", check_finite, q)



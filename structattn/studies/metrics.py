"""Error metrics between an approximation and the exact attention, on numpy arrays.

Every metric accepts numpy arrays or torch tensors (converted once by :func:`to_numpy`)
and computes in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import is_torch

__all__ = ["KL_FLOOR", "max_abs_error", "relative_error", "row_kl", "to_numpy"]

#: Floor applied to approximate probabilities in :func:`row_kl` (see there).
KL_FLOOR = 1e-12


def to_numpy(x: Any) -> np.ndarray:
    """``x`` as a float64 numpy array (torch tensors: ``detach().cpu().numpy()``)."""
    if is_torch(x):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _pair(approx: Any, exact: Any) -> tuple[np.ndarray, np.ndarray]:
    a, e = to_numpy(approx), to_numpy(exact)
    if a.shape != e.shape:
        raise ValueError(
            f"approx and exact must have the same shape, got {a.shape} and {e.shape}"
        )
    return a, e


def relative_error(approx: Any, exact: Any) -> float:
    """Normwise relative error ``‖approx − exact‖_F / ‖exact‖_F`` over the whole array.

    Parameters
    ----------
    approx, exact : array, shape (...)
        Same shape; all batch and head dimensions enter one Frobenius norm.

    Returns
    -------
    float
        0.0 when both are zero; ``inf`` when only ``exact`` is zero.

    Notes
    -----
    ``O(n)`` for ``n`` elements.
    """
    a, e = _pair(approx, exact)
    den = float(np.linalg.norm(e.ravel()))
    num = float(np.linalg.norm((a - e).ravel()))
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den


def max_abs_error(approx: Any, exact: Any) -> float:
    """``max |approx − exact|`` over all elements (0.0 for empty arrays)."""
    a, e = _pair(approx, exact)
    return float(np.max(np.abs(a - e))) if a.size else 0.0


def row_kl(P_exact: Any, P_approx: Any, *, floor: float = KL_FLOOR) -> float:
    """Mean over rows of ``KL(P_exact[i] ‖ P_approx[i])`` (natural log, nats).

    Parameters
    ----------
    P_exact : array, shape (..., L_q, L_k)
        Row-stochastic exact attention matrix.
    P_approx : array, shape (..., L_q, L_k)
        Approximate attention matrix with rows summing to 1.
    floor : float, default ``KL_FLOOR`` (1e-12)
        Entries of ``P_approx`` below ``floor`` — zeros, and the negative weights that
        signed random features can produce — are raised to ``floor`` and each row is
        renormalized to sum 1, so the KL is finite and ``>= 0`` (a rounding-level
        negative mean, for maps equal to the exact one, is returned as 0).  A key the exact
        attention weighs ``p`` but the approximation gives no weight then costs about
        ``p·log(p/floor) ≈ 27.6·p`` nats instead of infinity.

    Returns
    -------
    float
        The mean of the per-row KL over all rows of all batch/head dimensions.
        ``0·log 0 = 0``: keys with zero exact weight (e.g. masked) contribute nothing.

    Notes
    -----
    ``O(L_q·L_k)`` per batch element.
    """
    q, p = _pair(P_approx, P_exact)  # q: approximation, p: exact
    if p.ndim < 2:
        raise ValueError(f"attention matrices need at least 2 dimensions, got {p.shape}")
    if not (isinstance(floor, (int, float)) and 0 < floor < 1):
        raise ValueError(f"floor must be a number in (0, 1), got {floor!r}")
    q = np.maximum(q, floor)
    q = q / q.sum(axis=-1, keepdims=True)
    positive = p > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(positive, p * np.log(np.where(positive, p, 1.0) / q), 0.0)
    # KL >= 0; a map equal to the exact one up to rounding can sum to -1e-17: clamp
    return max(0.0, float(np.mean(terms.sum(axis=-1))))

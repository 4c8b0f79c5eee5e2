"""Error metrics between an approximation and the exact attention, on numpy arrays.

Every metric accepts numpy arrays or torch tensors (converted once by :func:`to_numpy`)
and computes in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import is_torch

__all__ = [
    "KL_FLOOR",
    "attention_entropy",
    "max_abs_error",
    "relative_error",
    "row_kl",
    "to_numpy",
]

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


def attention_entropy(
    q: Any,
    k: Any,
    *,
    causal: bool = False,
    scale: float | None = None,
    block_rows: int = 256,
) -> float:
    """Mean row entropy (nats) of the exact softmax attention map ``softmax(Q Kᵀ·scale)``.

    ``H_i = −Σ_j P_ij log P_ij = logsumexp_j(s_ij) − Σ_j P_ij s_ij``, evaluated in
    float64 by blocks of query rows, so no ``L x L`` matrix is held.  Low entropy means
    peaked rows (few keys matter); ``log L_k`` is the uniform map.  The study reports it
    next to every error: random-feature errors grow with the input norm, which lowers
    the entropy.

    Parameters
    ----------
    q : array, shape (..., L_q, d)
    k : array, shape (..., L_k, d)
    causal : bool, default False
        Row ``i`` sees keys ``j <= i`` (``L_q == L_k``).
    scale : float, optional
        Score scale; default ``d**-0.5``.
    block_rows : int, default 256
        Query rows per block (memory ``O(block_rows·L_k)``).

    Returns
    -------
    float
        The mean of ``H_i`` over all rows of all batch/head dimensions.

    Notes
    -----
    ``O(L_q·L_k·d)`` time.
    """
    qn, kn = to_numpy(q), to_numpy(k)
    if qn.ndim < 2 or kn.ndim < 2 or qn.shape[-1] != kn.shape[-1]:
        raise ValueError(f"q and k must be (..., L, d) with the same d, got {qn.shape} "
                         f"and {kn.shape}")
    L_q, L_k = qn.shape[-2], kn.shape[-2]
    if causal and L_q != L_k:
        raise ValueError(f"causal=True needs L_q == L_k, got {L_q} and {L_k}")
    t = qn.shape[-1] ** -0.5 if scale is None else float(scale)
    total, count = 0.0, 0
    kt = np.swapaxes(kn, -1, -2)
    for r0 in range(0, L_q, max(1, int(block_rows))):
        r1 = min(L_q, r0 + max(1, int(block_rows)))
        s = (qn[..., r0:r1, :] @ kt) * t
        if causal:
            s = np.where(np.arange(L_k)[None, :] <= np.arange(r0, r1)[:, None], s, -np.inf)
        m = s.max(axis=-1, keepdims=True)
        e = np.exp(s - m)
        z = e.sum(axis=-1, keepdims=True)
        p = e / z
        ps = p * np.where(p > 0, s - m, 0.0)  # 0·(-inf) = 0 for masked keys
        h = np.log(z[..., 0]) - ps.sum(axis=-1)
        total += float(h.sum())
        count += h.size
    return total / count

"""numba row recurrence for (decayed) causal masked kernel attention."""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["causal_masked_matmul"]


@numba.njit(parallel=True, cache=True, fastmath=False)
def _causal_rows(A, B, V, gamma, exclusive, out):  # pragma: no cover - compiled
    # A, B: (N, L, m); V, out: (N, L, dv); all C-contiguous and of one dtype.
    N, L, m = A.shape
    dv = V.shape[2]
    for n in numba.prange(N):
        S = np.zeros((m, dv), dtype=A.dtype)
        acc = np.zeros(dv, dtype=A.dtype)
        for i in range(L):
            acc[:] = 0
            for a in range(m):
                qa = A[n, i, a]
                ka = B[n, i, a]
                if exclusive:
                    for c in range(dv):
                        sd = gamma * S[a, c]
                        acc[c] += qa * sd
                        S[a, c] = sd + ka * V[n, i, c]
                else:
                    for c in range(dv):
                        s_new = gamma * S[a, c] + ka * V[n, i, c]
                        S[a, c] = s_new
                        acc[c] += qa * s_new
            for c in range(dv):
                out[n, i, c] = acc[c]


def causal_masked_matmul(
    A: np.ndarray,
    B: np.ndarray,
    V: np.ndarray,
    *,
    gamma: float = 1.0,
    exclusive: bool = False,
    chunk_size: int | None = None,
) -> np.ndarray:
    """``(M ⊙ A Bᵀ) V`` for the (decayed) causal mask, one row at a time.

    Same contract as :func:`structattn.backends.scan.causal_masked_matmul`
    (``chunk_size`` is accepted and ignored).  State: ``S_i = gamma S_{i-1} + B_i V_iᵀ``
    (``m x d_v``), output row ``A_i S_i``; parallel over the flattened batch dimensions.
    Time ``O(L·m·d_v)``, extra memory ``O(m·d_v)`` per thread.
    """
    batch = np.broadcast_shapes(A.shape[:-2], B.shape[:-2], V.shape[:-2])
    A, B, V = (np.broadcast_to(x, (*batch, *x.shape[-2:])) for x in (A, B, V))
    L, m = A.shape[-2:]
    dv = V.shape[-1]
    a = np.ascontiguousarray(A.reshape((-1, L, m)))
    b = np.ascontiguousarray(B.reshape((-1, L, m)))
    v = np.ascontiguousarray(V.reshape((-1, L, dv)))
    out = np.empty((a.shape[0], L, dv), dtype=A.dtype)
    _causal_rows(a, b, v, A.dtype.type(gamma), bool(exclusive), out)
    return out.reshape((*batch, L, dv))

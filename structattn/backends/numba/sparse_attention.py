"""numba row-parallel CSR sparse softmax attention with an online (streaming) softmax."""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["sparse_attention"]

_ROWS_PER_TASK = 64


@numba.njit(parallel=True, cache=True, fastmath=False)
def _csr_rows(q, k, v, indptr, indices, scale, out):  # pragma: no cover - compiled
    # q, k: (B, N, d); v, out: (B, N, dv); one dtype; C-contiguous.
    B, N, d = q.shape
    dv = v.shape[2]
    total = B * N
    ntasks = (total + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    for t in numba.prange(ntasks):
        acc = np.empty(dv, dtype=np.float64)
        stop = min(total, (t + 1) * _ROWS_PER_TASK)
        for flat in range(t * _ROWS_PER_TASK, stop):
            b = flat // N
            i = flat - b * N
            m = -np.inf
            den = 0.0
            for c in range(dv):
                acc[c] = 0.0
            for e in range(indptr[i], indptr[i + 1]):
                j = indices[e]
                s = 0.0
                for a in range(d):
                    s += q[b, i, a] * k[b, j, a]
                s *= scale
                if s > m:
                    corr = math.exp(m - s)  # exp(-inf) = 0 on the first key
                    den = den * corr + 1.0
                    for c in range(dv):
                        acc[c] = acc[c] * corr + v[b, j, c]
                    m = s
                else:
                    p = math.exp(s - m)
                    den += p
                    for c in range(dv):
                        acc[c] += p * v[b, j, c]
            if den > 0.0:
                inv = 1.0 / den
                for c in range(dv):
                    out[b, i, c] = acc[c] * inv
            else:  # empty row: zeros, never NaN
                for c in range(dv):
                    out[b, i, c] = 0.0


def sparse_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    scale: float,
) -> np.ndarray:
    """Softmax attention restricted to a CSR graph, one query row per step.

    Parameters
    ----------
    q, k : numpy.ndarray, shape (..., N, d)
    v : numpy.ndarray, shape (..., N, d_v)
        One float dtype, identical leading dimensions (validated by the caller).
    indptr, indices : numpy.ndarray of int64
        A validated CSR graph on ``N`` tokens (sorted unique columns).
    scale : float
        Score scale.

    Returns
    -------
    numpy.ndarray, shape (..., N, d_v)
        ``o_i = Σ_{j∈N(i)} softmax_j(scale·q_i·k_j) v_j``; zeros for empty rows.

    Notes
    -----
    Online softmax (running max, running normalizer, running ``d_v`` accumulator, all
    float64): time ``O(nnz·(d + d_v))`` per batch element, extra memory ``O(d_v)`` per
    thread besides the ``O(N·d_v)`` output.  Parallel over the flattened
    (batch, query) rows.
    """
    batch = q.shape[:-2]
    N, d = q.shape[-2:]
    dv = v.shape[-1]
    qf = np.ascontiguousarray(q.reshape((-1, N, d)))
    kf = np.ascontiguousarray(k.reshape((-1, N, d)))
    vf = np.ascontiguousarray(v.reshape((-1, N, dv)))
    out = np.empty(vf.shape, dtype=q.dtype)
    _csr_rows(qf, kf, vf, np.ascontiguousarray(indptr, dtype=np.int64),
              np.ascontiguousarray(indices, dtype=np.int64), float(scale), out)
    return out.reshape((*batch, N, dv))

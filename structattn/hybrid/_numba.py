"""numba kernel of the hybrid (imported lazily: numba compiles on first use, cached)."""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["hybrid_rows"]

_ROWS_PER_TASK = 64


@numba.njit(parallel=True, cache=True, fastmath=False)
def hybrid_rows(q, k, v1, pq, pk, rho, lr, indptr, indices, scale, maxdeg, out):  # pragma: no cover
    # q, k (BL, d); v1, lr (BL, dv+1); pq, pk (BL, m); rho (BL,); indptr (BL+1,);
    # indices: flattened key rows; out (BL, dv)
    BL, d = q.shape
    dv1 = v1.shape[1]
    m = pq.shape[1]
    ntasks = (BL + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    for task in numba.prange(ntasks):
        buf = np.empty(max(maxdeg, 1), dtype=np.float64)
        acc = np.empty(dv1, dtype=np.float64)
        stop = min(BL, (task + 1) * _ROWS_PER_TASK)
        for i in range(task * _ROWS_PER_TASK, stop):
            lo, hi = indptr[i], indptr[i + 1]
            t = 0.0
            for e in range(lo, hi):
                j = indices[e]
                s = 0.0
                for a in range(d):
                    s += q[i, a] * k[j, a]
                s = s * scale + rho[i]
                buf[e - lo] = s
                if s > t:
                    t = s
            et = math.exp(-t)
            for c in range(dv1):
                acc[c] = et * lr[i, c]
            for e in range(lo, hi):
                j = indices[e]
                lij = 0.0
                for r in range(m):
                    lij += pq[i, r] * pk[j, r]
                w = math.exp(buf[e - lo] - t) - et * lij
                for c in range(dv1):
                    acc[c] += w * v1[j, c]
            den = acc[dv1 - 1]
            if abs(den) >= 2.2250738585072014e-308:
                inv = 1.0 / den
                for c in range(dv1 - 1):
                    out[i, c] = acc[c] * inv
            else:
                for c in range(dv1 - 1):
                    out[i, c] = 0.0

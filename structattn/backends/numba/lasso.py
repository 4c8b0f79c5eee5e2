"""numba ISTA/FISTA for the column-wise lasso in Gram form, parallel over batch x columns."""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["lasso_prox"]


@numba.njit(parallel=True, cache=True, fastmath=False)
def _prox_columns(G, B, Z0, L, lam, fista, n_iter, tol_step, Z, iters):  # pragma: no cover
    # G (N, k, k), B/Z0/Z (N, k, c), L (N,), iters (N, c); one lasso per (n, column).
    N, k, c = B.shape
    for job in numba.prange(N * c):
        n = job // c
        j = job % c
        Ln = L[n]
        thr = lam / Ln
        scale = 0.0
        for i in range(k):
            scale = max(scale, abs(B[n, i, j]))
        scale = max(scale, 1e-300)
        z = np.empty(k, dtype=B.dtype)
        y = np.empty(k, dtype=B.dtype)
        zn = np.empty(k, dtype=B.dtype)
        for i in range(k):
            z[i] = Z0[n, i, j]
            y[i] = z[i]
        t = 1.0
        done = 0
        for it in range(1, n_iter + 1):
            done = it
            step = 0.0
            for i in range(k):
                gi = -B[n, i, j]
                for m in range(k):
                    gi += G[n, i, m] * y[m]
                u = y[i] - gi / Ln
                a = abs(u) - thr
                if a > 0.0:
                    zn[i] = a if u > 0.0 else -a
                else:
                    zn[i] = 0.0
                step = max(step, abs(zn[i] - y[i]))
            if fista:
                t_new = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
                beta = (t - 1.0) / t_new
                for i in range(k):
                    y[i] = zn[i] + beta * (zn[i] - z[i])
                    z[i] = zn[i]
                t = t_new
            else:
                for i in range(k):
                    z[i] = zn[i]
                    y[i] = zn[i]
            if tol_step > 0.0 and step * Ln / scale <= tol_step:
                break
        for i in range(k):
            Z[n, i, j] = z[i]
        iters[n, j] = done


def lasso_prox(
    G: np.ndarray,
    B: np.ndarray,
    Z0: np.ndarray,
    L: np.ndarray,
    lam: float,
    fista: bool,
    n_iter: int,
    tol_step: float,
) -> tuple[np.ndarray, int]:
    """ISTA (``fista=False``) or FISTA on every column of every batch element.

    Parameters
    ----------
    G : ndarray, shape (..., k, k)
        Gram matrix ``DᵀD``.
    B, Z0 : ndarray, shape (..., k, c)
        ``DᵀX`` and the starting codes.
    L : ndarray, shape (..., 1, 1)
        Step constants (step ``1/L``).
    lam : float
        ``λ >= 0``.
    n_iter : int
        Maximum iterations per column.
    tol_step : float
        Per-column stop when ``L·||Z_{t+1} - Y_t||_∞ / ||b||_∞ <= tol_step`` (0: never).

    Returns
    -------
    Z : ndarray, shape (..., k, c)
    n_iter : int
        Largest number of iterations run over the columns.
    """
    batch = B.shape[:-2]
    k, c = B.shape[-2:]
    g = np.ascontiguousarray(np.broadcast_to(G, (*batch, k, k)).reshape((-1, k, k)))
    b = np.ascontiguousarray(B.reshape((-1, k, c)))
    z0 = np.ascontiguousarray(np.broadcast_to(Z0, B.shape).reshape((-1, k, c)))
    Lf = np.ascontiguousarray(np.broadcast_to(L, (*batch, 1, 1)).reshape(-1), dtype=B.dtype)
    Z = np.empty_like(b)
    iters = np.zeros((b.shape[0], c), dtype=np.int64)
    _prox_columns(g, b, z0, Lf, B.dtype.type(lam), bool(fista), int(n_iter), float(tol_step), Z,
                  iters)
    return Z.reshape(B.shape), int(iters.max())

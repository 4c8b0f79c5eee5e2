"""numba summed-area-table kernel for ripple masks (Chebyshev-ring weights on a grid).

Precision: the prefix-sum table and every per-position accumulator are float64 for both
float32 and float64 inputs (box sums are differences of large prefix sums, masks.md
§2.7); results are cast back to the input dtype.  Extra memory: one float64
``(H + 1) x (W + 1) x F`` table per batch element.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["ripple_sat"]


#: Work (grid entries x columns x (radii + 4)) below which the serial kernel runs: on
#: small blocks waking numba's thread pool costs more than the work (measured on a busy
#: 2-core machine, 32 x 32 x 64 block, r̂ = 1: 0.7 ms serial against ~20 ms parallel).
PARALLEL_MIN_WORK = 1 << 20


@numba.njit(cache=True, fastmath=False)
def _table_row(X, T, n, i):  # pragma: no cover - compiled
    # row-wise prefix sums of grid row i into table row i + 1 (float64)
    W, F = X.shape[2], X.shape[3]
    for j in range(W):
        for f in range(F):
            T[n, i + 1, j + 1, f] = T[n, i + 1, j, f] + X[n, i, j, f]


@numba.njit(cache=True, fastmath=False)
def _table_column(T, n, j):  # pragma: no cover - compiled
    # column-wise prefix sums of table column j (after the row pass)
    H, F = T.shape[1] - 1, T.shape[3]
    for i in range(H):
        for f in range(F):
            T[n, i + 1, j, f] += T[n, i, j, f]


@numba.njit(cache=True, fastmath=False)
def _query_row(T, alpha, out, n, i, acc):  # pragma: no cover - compiled
    # y = Σ_{r<R} (α_r − α_{r+1}) B_r + ᾱ B_total for every position of grid row i, the
    # radius loop stopped at the first box that covers the whole grid (the remaining
    # terms telescope to α_r · B_total).
    H, W, F = T.shape[1] - 1, T.shape[2] - 1, T.shape[3]
    R = alpha.shape[1] - 1
    for j in range(W):
        for f in range(F):
            acc[f] = 0.0
        reach = max(max(i, H - 1 - i), max(j, W - 1 - j))
        stop = min(R, reach)
        for r in range(stop):
            w = alpha[n, r] - alpha[n, r + 1]
            if w == 0.0:
                continue
            i0 = max(i - r, 0)
            i1 = min(i + r + 1, H)
            j0 = max(j - r, 0)
            j1 = min(j + r + 1, W)
            for f in range(F):
                acc[f] += w * ((T[n, i1, j1, f] - T[n, i0, j1, f])
                               - (T[n, i1, j0, f] - T[n, i0, j0, f]))
        a = alpha[n, stop]
        for f in range(F):
            out[n, i, j, f] = acc[f] + a * T[n, H, W, f]


@numba.njit(parallel=True, cache=True, fastmath=False)
def _sat_parallel(X, T, alpha, out):  # pragma: no cover - compiled
    # X: (N, H, W, F); T: (N, H + 1, W + 1, F) float64 zeros; alpha: (N, R + 1) float64
    # (alpha[:, R] = tail weight); out: (N, H, W, F).  Parallel over grid rows / columns
    # of every batch element.
    N, H, W, F = X.shape
    for q in numba.prange(N * H):
        _table_row(X, T, q // H, q % H)
    for q in numba.prange(N * W):
        _table_column(T, q // W, q % W + 1)
    for q in numba.prange(N * H):
        acc = np.empty(F, dtype=np.float64)
        _query_row(T, alpha, out, q // H, q % H, acc)


@numba.njit(cache=True, fastmath=False)
def _sat_serial(X, T, alpha, out):  # pragma: no cover - compiled
    N, H, W, F = X.shape
    acc = np.empty(F, dtype=np.float64)
    for n in range(N):
        for i in range(H):
            _table_row(X, T, n, i)
        for j in range(1, W + 1):
            _table_column(T, n, j)
        for i in range(H):
            _query_row(T, alpha, out, n, i, acc)


def ripple_sat(X: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Ripple mask product by summed-area tables (numba, numpy arrays).

    Parameters
    ----------
    X : ndarray, shape (..., H, W, F)
        Grid block (float32 or float64).
    alpha : ndarray, shape (..., R + 1)
        Ring weights ``α_0 … α_{R−1}`` and the tail weight ``ᾱ`` (rings ``r >= R``);
        leading dims broadcast with those of ``X``.

    Returns
    -------
    ndarray, shape (broadcast(...), H, W, F)
        ``y_p = Σ_q α_{min(‖p − q‖_∞, R)} X_q`` in ``X``'s dtype.

    Notes
    -----
    ``O(H·W·F)`` to build the float64 table (parallel over grid rows, then columns) and
    ``O(H·W·min(R, reach)·F)`` for the box queries (parallel over grid rows of every
    batch element); blocks below :data:`PARALLEL_MIN_WORK` run a serial compiled loop.
    Compiled lazily on first call (``cache=True``).
    """
    H, W, F = X.shape[-3:]
    R1 = alpha.shape[-1]
    lead = tuple(np.broadcast_shapes(X.shape[:-3], alpha.shape[:-1]))
    x = np.ascontiguousarray(np.broadcast_to(X, (*lead, H, W, F)).reshape((-1, H, W, F)))
    a = np.ascontiguousarray(np.broadcast_to(alpha, (*lead, R1)).reshape((-1, R1)),
                             dtype=np.float64)
    T = np.zeros((x.shape[0], H + 1, W + 1, F), dtype=np.float64)
    out = np.empty(x.shape, dtype=X.dtype)
    work = x.size * (min(R1 - 1, max(H, W) - 1) + 4)
    # (numba.config, not numba.get_num_threads(): the latter starts the thread pool)
    parallel = work >= PARALLEL_MIN_WORK and numba.config.NUMBA_NUM_THREADS > 1
    run = _sat_parallel if parallel else _sat_serial
    run(x, T, a, out)
    return out.reshape((*lead, H, W, F))

"""numba kernels for the stabilized positive random features (FAVOR+) of attention.

The feature maps of causal kernel attention at ``L = 16384`` cost more than the scan
itself when written as whole-array numpy expressions: the projection GEMM, then one
pass each for ``- |x|²/2``, the key column maxima, the query row maxima, the shifts and
the exponential, most of them allocating a float32 temporary.  Here one parallel task
per (batch element, block of ``ROWS`` rows) issues the block's GEMM with BLAS
(``np.dot``) and, while the ``ROWS x F`` block is still in cache, applies the
row terms and reduces it (key column maxima, query row maxima) in the same pass.  The
exponential is left to numpy's vectorized ``exp`` (in place): numba's scalar ``expf``
measured about 6x slower per element on this machine.

The kernels take arrays and return arrays (the stabilizer *semantics* live in
:class:`structattn.features.PositiveRandomFeatures`); every output row depends on its
own input row and on per-batch-element vectors only, so causal prefix consistency is
kept bit for bit.
"""

from __future__ import annotations

import numba
import numpy as np

from .causal import _single_threaded_blas

__all__ = ["key_log_features", "query_log_features", "subtract_columns"]

#: Rows per parallel task: a ``ROWS x F`` float32 block (64 KiB at ``F = 64``) stays in
#: L2 between the GEMM and the elementwise pass.
ROWS = 256


@numba.njit(parallel=True, cache=True, fastmath=False)
def _key_pass(X, Wt, half_temp, out, colmax):  # pragma: no cover - compiled
    # X (N, L, d), Wt (d, F), out (N, L, F): out = X Wt - half_temp |x|² per row;
    # colmax[n, c] <- column maxima of block c of element n (NaN is kept)
    N, L, d = X.shape
    F = Wt.shape[1]
    T = colmax.shape[1]
    for t in numba.prange(N * T):
        n, c = t // T, t % T
        r0 = c * ROWS
        r1 = min(L, r0 + ROWS)
        P = np.dot(X[n, r0:r1], Wt)
        cm = colmax[n, c]
        cm[:] = -np.inf
        for i in range(r1 - r0):
            hs = half_temp * 0  # zero of the input dtype
            for a in range(d):
                hs += X[n, r0 + i, a] * X[n, r0 + i, a]
            hs *= half_temp
            for r in range(F):
                val = P[i, r] - hs
                out[n, r0 + i, r] = val
                if val > cm[r] or val != val:
                    cm[r] = val


@numba.njit(parallel=True, cache=True, fastmath=False)
def _query_pass(X, Wt, shift, log_norm, out):  # pragma: no cover - compiled
    # out[n, i] = (x_i Wt + shift[n]) - (max_r(x_i Wt + shift[n]) - log_norm)
    N, L = X.shape[0], X.shape[1]
    F = Wt.shape[1]
    T = (L + ROWS - 1) // ROWS
    for t in numba.prange(N * T):
        n, c = t // T, t % T
        r0 = c * ROWS
        r1 = min(L, r0 + ROWS)
        P = np.dot(X[n, r0:r1], Wt)
        s = shift[n]
        for i in range(r1 - r0):
            row = P[i]
            row += s
            m = row.max()  # NaN-propagating, as numpy's
            m2 = m - log_norm
            for r in range(F):
                out[n, r0 + i, r] = row[r] - m2


@numba.njit(parallel=True, cache=True, fastmath=False)
def _subtract_pass(out, shift):  # pragma: no cover - compiled
    # out[n, i, r] -= shift[n, r], in place
    N, L, F = out.shape
    T = (L + ROWS - 1) // ROWS
    for t in numba.prange(N * T):
        n, c = t // T, t % T
        s = shift[n]
        for i in range(c * ROWS, min(L, c * ROWS + ROWS)):
            for r in range(F):
                out[n, i, r] -= s[r]


def key_log_features(x: np.ndarray, wt: np.ndarray, half_temp: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Key log-features ``x Wt - half_temp·|x|²`` and their per-element column maxima.

    Parameters
    ----------
    x : ndarray, shape (N, L, d), C-contiguous, float32 or float64
    wt : ndarray, shape (d, F), C-contiguous, same dtype (the scaled projection, transposed)
    half_temp : float
        ``scale / 2``: the row term is ``half_temp · |x_i|²``.

    Returns
    -------
    logf : ndarray, shape (N, L, F)
    colmax : ndarray, shape (N, F)
        ``max_i logf[n, i, r]`` (NaN where a column holds NaN).

    Notes
    -----
    ``2·N·L·d·F`` flops (BLAS) plus one pass over the ``N x L x F`` output.
    """
    N, L, _ = x.shape
    out = np.empty((N, L, wt.shape[1]), dtype=x.dtype)
    T = max(1, -(-L // ROWS))
    partial = np.empty((N, T, wt.shape[1]), dtype=x.dtype)
    with _single_threaded_blas():
        _key_pass(x, wt, x.dtype.type(half_temp), out, partial)
    # NaN-propagating reduction of the T partial maxima (tiny: N x T x F)
    return out, np.max(partial, axis=1)


def query_log_features(x: np.ndarray, wt: np.ndarray, shift: np.ndarray,
                       log_norm: float) -> np.ndarray:
    """Row-stabilized query log-features ``l_i - (max_r l_ir - log_norm)``.

    ``l_i = x_i Wt + shift[n]``; the caller exponentiates (in place).

    Parameters
    ----------
    x : ndarray, shape (N, L, d), C-contiguous
    wt : ndarray, shape (d, F), C-contiguous, same dtype
    shift : ndarray, shape (N, F), same dtype
    log_norm : float

    Returns
    -------
    ndarray, shape (N, L, F)

    Notes
    -----
    ``2·N·L·d·F`` flops (BLAS) plus one pass over the output.
    """
    N, L, _ = x.shape
    out = np.empty((N, L, wt.shape[1]), dtype=x.dtype)
    with _single_threaded_blas():
        _query_pass(x, wt, np.ascontiguousarray(shift), x.dtype.type(log_norm), out)
    return out


def subtract_columns(out: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``out[n, i, r] -= shift[n, r]`` in place (one parallel pass); returns ``out``.

    Parameters
    ----------
    out : ndarray, shape (N, L, F), C-contiguous
    shift : ndarray, shape (N, F), same dtype
    """
    _subtract_pass(out, np.ascontiguousarray(shift))
    return out

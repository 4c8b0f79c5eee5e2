"""numba kernel of exponential tree-distance masks: the two-pass sibling-sum DP.

``y_i = Σ_s a_s Σ_j r_s^{dist(i, j)} x_j`` on a rooted tree, for every column of an
``(N, L, F)`` block (masks.md §2.5):

* up pass (leaves to root): ``U_v = X_v + Σ_{c child of v} α_c U_c`` with
  ``α_c = r^{w(c, parent)}`` (pulled from the already final children, one write per
  node);
* down pass (root to leaves): ``D_c = X_p + α_p D_p + Σ_{siblings s ≠ c} α_s U_s`` (the
  part of the tree outside ``subtree(c)`` seen from the parent ``p``), formed from a
  prefix and a suffix sum over the children of ``p`` — no subtraction, so no
  cancellation when ``α ≈ 1`` — and ``y_c = U_c + α_c D_c``, ``y_root = U_root``.

Every multiplier is one edge factor ``α ∈ [0, 1]``: no ``r^{depth}`` is ever formed, so
deep trees neither overflow nor underflow beyond the true entries (a contribution
underflows only when its own ``r^{dist}`` does).  Work arrays are float64 for float32
inputs too (the output is written in the input dtype; with several terms the sum over
terms accumulates there); time ``O(S·L·F)`` per batch element, extra memory ``2·L·F``
float64.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["tree_exp_dp"]

#: Work (batch x L x F x terms) below which the serial kernel runs (thread-pool wake-up
#: costs more than the work on small blocks).
PARALLEL_MIN_WORK = 1 << 20


@numba.njit(cache=True, fastmath=False)
def _one(X, n, order, ppos, child_ptr, alpha, amps, out, U, D, acc):
    # pragma: no cover - compiled
    # Node arrays are in BFS *position* space: position t holds node order[t]; parents
    # have smaller positions (ppos[t] < t, nondecreasing in t) and the children of
    # position t are the contiguous positions child_ptr[t] … child_ptr[t+1] - 1, so both
    # passes stream through U and D (one gather of X and one scatter of out).
    L, F = X.shape[1], X.shape[2]
    for s in range(alpha.shape[0]):
        a = amps[s]
        first = s == 0  # the first term assigns out, later terms add to it
        for t in range(L - 1, -1, -1):  # pull: children (larger positions) are final
            v = order[t]
            for f in range(F):
                acc[f] = X[n, v, f]
            for c in range(child_ptr[t], child_ptr[t + 1]):
                ac = alpha[s, c]
                for f in range(F):
                    acc[f] += ac * U[c, f]
            for f in range(F):
                U[t, f] = acc[f]
        r = order[0]
        for f in range(F):
            if first:
                out[n, r, f] = a * U[0, f]
            else:
                out[n, r, f] += a * U[0, f]
        for t in range(L):  # D of a parent is known before its children
            c0 = child_ptr[t]
            c1 = child_ptr[t + 1]
            if c0 == c1:
                continue
            v = order[t]
            if t == 0:
                for f in range(F):
                    acc[f] = X[n, v, f]
            else:
                at = alpha[s, t]
                for f in range(F):
                    acc[f] = X[n, v, f] + at * D[t, f]
            for c in range(c0, c1):  # prefix over earlier siblings
                ac = alpha[s, c]
                for f in range(F):
                    D[c, f] = acc[f]
                    acc[f] += ac * U[c, f]
            for f in range(F):
                acc[f] = 0.0
            for c in range(c1 - 1, c0 - 1, -1):  # suffix over later siblings
                ac = alpha[s, c]
                w = order[c]
                for f in range(F):
                    d = D[c, f] + acc[f]
                    D[c, f] = d
                    acc[f] += ac * U[c, f]
                    if first:
                        out[n, w, f] = a * (U[c, f] + ac * d)
                    else:
                        out[n, w, f] += a * (U[c, f] + ac * d)


@numba.njit(cache=True, fastmath=False)
def _dp_serial(X, order, ppos, child_ptr, alpha, amps, out):
    # pragma: no cover - compiled
    L, F = X.shape[1], X.shape[2]
    U = np.empty((L, F), dtype=np.float64)
    D = np.empty((L, F), dtype=np.float64)
    acc = np.empty(F, dtype=np.float64)
    for n in range(X.shape[0]):
        _one(X, n, order, ppos, child_ptr, alpha, amps, out, U, D, acc)


@numba.njit(parallel=True, cache=True, fastmath=False)
def _dp_parallel(X, order, ppos, child_ptr, alpha, amps, out):
    # pragma: no cover - compiled
    L, F = X.shape[1], X.shape[2]
    for n in numba.prange(X.shape[0]):
        U = np.empty((L, F), dtype=np.float64)
        D = np.empty((L, F), dtype=np.float64)
        acc = np.empty(F, dtype=np.float64)
        _one(X, n, order, ppos, child_ptr, alpha, amps, out, U, D, acc)


def tree_exp_dp(
    X: np.ndarray,
    order: np.ndarray,
    parent_pos: np.ndarray,
    level_ptr: np.ndarray,
    child_ptr: np.ndarray,
    alpha: np.ndarray,
    amps: np.ndarray,
) -> np.ndarray:
    """Exponential tree-distance mask product (numba, numpy arrays).

    Parameters
    ----------
    X : ndarray, shape (..., L, F)
        float32 or float64 block (rows indexed by node).
    order : ndarray of int64, shape (L,)
        Breadth-first order from the root: position ``t`` holds node ``order[t]``.
    parent_pos : ndarray of int64, shape (L,)
        Position of the parent of position ``t`` (``-1`` at the root, position 0).
    level_ptr : ndarray of int64
        Positions ``level_ptr[d] … level_ptr[d+1] - 1`` are at depth ``d`` (used by the
        level-wise array-API kernel, not here).
    child_ptr : ndarray of int64, shape (L + 1,)
        Children of position ``t`` are positions ``child_ptr[t] … child_ptr[t+1] - 1``.
    alpha : ndarray of float64, shape (S, L)
        Edge factor ``r_s^{w(v, parent(v))}`` at the position of ``v`` (root: unused).
    amps : ndarray of float64, shape (S,)
        Amplitudes ``a_s``.

    Returns
    -------
    ndarray, shape (..., L, F)
        ``Σ_s a_s Σ_j r_s^{dist(i, j)} X_j`` in ``X``'s dtype.
    """
    del level_ptr
    L, F = X.shape[-2:]
    lead = X.shape[:-2]
    x = np.ascontiguousarray(X.reshape((-1, L, F)))
    out = np.empty(x.shape, dtype=X.dtype)  # every row is written by the first term
    work = x.size * alpha.shape[0]
    parallel = (x.shape[0] > 1 and work >= PARALLEL_MIN_WORK
                and numba.config.NUMBA_NUM_THREADS > 1)
    run = _dp_parallel if parallel else _dp_serial
    run(x, order, parent_pos, child_ptr, np.ascontiguousarray(alpha),
        np.ascontiguousarray(amps), out)
    return out.reshape((*lead, L, F))

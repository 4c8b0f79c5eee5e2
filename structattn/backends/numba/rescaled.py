"""numba kernel: causal kernel attention in the log domain with a rescaled running state.

The fast causal scan (:mod:`structattn.backends.scan`) multiplies features that were
exponentiated with *one* shift per feature for the whole sequence.  When a later key's
log-features exceed that shift's reach (extreme magnitudes), the early rows'
normalizers underflow.  This kernel is the exact fallback: it takes the *log*-features
and keeps, for every feature ``r``, the running state in its own scale
``c_r = max_{s <= t} (log φ_r(k_s) + (t - s) log γ)``::

    S_true[r, :] = exp(c_r) · S[r, :]          z_true[r] = exp(c_r) · z[r]

Adding key ``t`` raises ``c_r`` to ``max(c_r, log φ_r(k_t))`` and multiplies row ``r``
of ``S`` and ``z`` by ``exp(c_old - c_new) <= 1`` (the online rescaling of flash
attention, per feature); the decay only lowers ``c`` by ``-log γ`` per step, so no
power of ``γ`` is ever formed.  Row ``i`` reads ``a_r = exp(log φ_r(q_i) + c_r - μ_i)``
with ``μ_i = max_r (log φ_r(q_i) + c_r)``.  The key that set ``c_{r*}`` (``r*`` the
maximizing feature) contributes exactly ``1`` to ``Σ_r a_r z[r]``, so a row with at
least one visible key has a normalizer ``>= 1``: it cannot underflow, at any input
magnitude.  Row ``i`` depends on keys ``<= i`` only (prefix consistent bit for bit).

Cost ``O(L·F·d_v)`` scalar work per batch element (rank-one updates, no GEMMs), in
float64: it is only run on the rows the fast path lost.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["rescaled_causal_attention"]


@numba.njit(parallel=True, cache=True, fastmath=False)
def _rescaled(lq, lk, v, log_gamma, exclusive, offset, out):  # pragma: no cover - compiled
    # lq (B, Lq, F), lk (B, Lk, F), v (B, Lk, dv), out (B, Lq, dv); all float64.
    # Query i sits at position p = i + offset and sees keys j <= p (j < p if exclusive)
    # with weight gamma**(p - j).
    B, Lq, F = lq.shape
    Lk = lk.shape[1]
    dv = v.shape[2]
    for b in numba.prange(B):
        S = np.zeros((F, dv))
        z = np.zeros(F)
        c = np.full(F, -np.inf)
        added = 0  # keys 0 .. added-1 are in the state
        tpos = 0  # the state is decayed to position tpos
        for i in range(Lq):
            p = i + offset
            last = p - 1 if exclusive else p
            if last > Lk - 1:
                last = Lk - 1
            while added <= last:
                j = added
                if log_gamma != 0.0 and j > tpos:
                    for r in range(F):
                        c[r] += (j - tpos) * log_gamma
                    tpos = j
                for r in range(F):
                    lkr = lk[b, j, r]
                    if lkr > c[r]:
                        if c[r] > -np.inf:
                            scale = np.exp(c[r] - lkr)
                            for e in range(dv):
                                S[r, e] *= scale
                            z[r] *= scale
                        c[r] = lkr
                    w = np.exp(lkr - c[r])
                    for e in range(dv):
                        S[r, e] += w * v[b, j, e]
                    z[r] += w
                added += 1
            if added == 0:
                for e in range(dv):
                    out[b, i, e] = 0.0
                continue
            if log_gamma != 0.0 and p > tpos:
                for r in range(F):
                    c[r] += (p - tpos) * log_gamma
                tpos = p
            mu = -np.inf
            for r in range(F):
                if c[r] > -np.inf:
                    t = lq[b, i, r] + c[r]
                    if t > mu:
                        mu = t
            den = 0.0
            for e in range(dv):
                out[b, i, e] = 0.0
            for r in range(F):
                if c[r] > -np.inf:
                    a = np.exp(lq[b, i, r] + c[r] - mu)
                    den += a * z[r]
                    for e in range(dv):
                        out[b, i, e] += a * S[r, e]
            for e in range(dv):
                out[b, i, e] /= den


def rescaled_causal_attention(
    log_q: np.ndarray,
    log_k: np.ndarray,
    v: np.ndarray,
    *,
    gamma: float = 1.0,
    exclusive: bool = False,
    offset: int = 0,
) -> np.ndarray:
    """Row-normalized ``(M ⊙ exp-kernel) V`` from log-features, never underflowing.

    Computes, for every query row ``i`` at position ``p = i + offset``,

    ``out_i = Σ_{j ∈ J_i} w_ij v_j / Σ_{j ∈ J_i} w_ij``,
    ``w_ij = γ^{p-j} Σ_r e^{lq_ir + lk_jr}``

    with ``J_i = {j <= p}`` (``j < p`` when ``exclusive``) — the output of causal
    kernel attention with features ``φ = exp(log-features)`` (any per-row or per-feature
    constant in the log-features cancels) — without ever forming a feature, a power of
    ``γ`` or a normalizer outside the float64 range (see the module notes).

    Parameters
    ----------
    log_q : ndarray, shape (B, L_q, F)
        Query log-features.
    log_k : ndarray, shape (B, L_k, F)
        Key log-features (finite).
    v : ndarray, shape (B, L_k, d_v)
        Values.
    gamma : float
        Decay in (0, 1]; 1 is the plain causal mask.
    exclusive : bool
        Exclude the diagonal (``j < p``).
    offset : int
        Position of query 0 (``L_k - L_q`` for the bottom-right aligned mask).

    Returns
    -------
    ndarray, shape (B, L_q, d_v), float64
        Rows with no visible key are zero.

    Notes
    -----
    ``O(B·L·F·d_v)`` time (rank-one updates), ``O(F·d_v)`` state per batch element,
    one parallel task per batch element.
    """
    lq = np.ascontiguousarray(log_q, dtype=np.float64)
    lk = np.ascontiguousarray(log_k, dtype=np.float64)
    vv = np.ascontiguousarray(v, dtype=np.float64)
    out = np.empty((lq.shape[0], lq.shape[1], vv.shape[2]))
    log_gamma = 0.0 if gamma == 1.0 else float(np.log(gamma))
    _rescaled(lq, lk, vv, log_gamma, bool(exclusive), int(offset), out)
    return out

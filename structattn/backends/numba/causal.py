"""numba kernels for (decayed) causal masked kernel attention: chunked GEMMs and rows.

Two methods compute ``(M ⊙ A Bᵀ) V`` for ``M[i, j] = gamma**(i-j) [j <= i]``:

``"chunked"`` (default)
    The chunked scan of :mod:`structattn.backends.scan` — same chunk length ``C``
    (:func:`~structattn.backends.scan.choose_chunk_size`), same decay tables, same
    groups and zero-padded last chunk — with its GEMMs issued from numba: one parallel
    task per (batch element, chunk) calls BLAS (``np.dot``) on the chunk's ``C x m``,
    ``C x C`` and ``m x d_v`` blocks.  On 2 cores this ran about 2x faster than numpy's
    ``matmul`` on the same stacked arrays (numpy loops over the stack serially and each
    small GEMM cannot use both cores), measured in one process, float32,
    ``8 x 4096 x 64``, ``d_v = 65``.
``normalizer=True``
    The normalizer of attention rides along as a ones column of the values, built per
    chunk and in cache by the chunked kernels (the recurrence concatenates it), so
    ``kernel_attention`` never copies ``V`` into an ``(..., L, d_v + 1)`` array: the
    same GEMMs, hence the same bits, as the product with ``[V | 1]``.  Measured in one
    process, float32, ``8 x 16384``, ``m = d_v = 64``: scan + division 0.87x the time
    of the concatenated form with 2 threads (0.95x CPU time on one thread; other jobs
    running).
``"recurrence"``
    The row recurrence ``S_i = gamma S_{i-1} + B_i V_iᵀ``, ``out_i = A_i S_i`` of rank-one
    updates (the former kernel; kept as a reference and for comparison).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import numba
import numpy as np

from ..scan import _decay_tables, _group_chunks, _resolve_chunk

__all__ = ["causal_masked_matmul", "causal_masked_matmul_recurrence"]

METHODS = ("chunked", "recurrence")


@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any:
    """threadpoolctl's controller of the loaded BLAS libraries, or None without it."""
    try:
        import scipy.linalg.cython_blas  # noqa: F401  (the BLAS numba's np.dot calls)
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return None
    return ThreadpoolController()


def _single_threaded_blas() -> Any:
    """Context: BLAS on one thread while numba's threads each call it (no nesting).

    Each parallel task issues its own small GEMMs; a multi-threaded BLAS inside them
    oversubscribes the cores (measured: 6x slower at C = 128 on 2 cores).  Without
    threadpoolctl this is a no-op.
    """
    ctl = _blas_controller()
    if ctl is None:  # pragma: no cover
        return contextlib.nullcontext()
    return ctl.limit(limits=1, user_api="blas")


# ----------------------------------------------------------------------- chunked
@numba.njit(cache=True, fastmath=False)
def _with_ones(Vk):  # pragma: no cover - compiled
    # [V_k | 1]: the chunk's values with the normalizer's ones column (C x (dv + 1))
    C, dv = Vk.shape
    out = np.empty((C, dv + 1), dtype=Vk.dtype)
    for t in range(C):
        for c in range(dv):
            out[t, c] = Vk[t, c]
        out[t, dv] = 1
    return out


@numba.njit(parallel=True, cache=True, fastmath=False)
def _chunk_contribs(Bw, V, g0, G, contrib, ones):  # pragma: no cover - compiled
    # Bw (decay-weighted B): (N, nc, C, m); V: (N, nc, C, dv); contrib[n, j] <- Bw_kᵀ V_k
    # (Bw_kᵀ [V_k | 1] when ones: the normalizer's column is built per chunk, in cache)
    N = Bw.shape[0]
    for t in numba.prange(N * G):
        n, j = t // G, t % G
        if ones:
            contrib[n, j] = np.dot(Bw[n, g0 + j].T, _with_ones(V[n, g0 + j]))
        else:
            contrib[n, j] = np.dot(Bw[n, g0 + j].T, V[n, g0 + j])


@numba.njit(parallel=True, cache=True, fastmath=False)
def _state_scan(contrib, G, state, g_chunk, plain):  # pragma: no cover - compiled
    # In place: contrib[n, k] <- state entering chunk k; state[n] <- state after the group
    N, _, m, dv = contrib.shape
    for n in numba.prange(N):
        for k in range(G):
            for a in range(m):
                for c in range(dv):
                    s = state[n, a, c]
                    x = contrib[n, k, a, c]
                    contrib[n, k, a, c] = s
                    state[n, a, c] = x + (s if plain else s * g_chunk)


@numba.njit(parallel=True, cache=True, fastmath=False)
def _chunk_outputs(A, Aw, B, V, S, decay, g0, G, out, den, ones):  # pragma: no cover
    # out[n, k] = ((A_k B_kᵀ) ⊙ D) V_k + Aw_k S_j for k = g0 + j (Aw: decay-weighted A);
    # when ones, V_k is [V_k | 1]: its last column goes to den[n, k], the rest to out
    N = A.shape[0]
    dv = out.shape[3]
    for t in numba.prange(N * G):
        n, j = t // G, t % G
        k = g0 + j
        P = np.dot(A[n, k], B[n, k].T)
        P *= decay
        if ones:
            y = np.dot(P, _with_ones(V[n, k]))
        else:
            y = np.dot(P, V[n, k])
        y += np.dot(Aw[n, k], S[n, j])
        if ones:
            out[n, k] = y[:, :dv]
            den[n, k] = y[:, dv]
        else:
            out[n, k] = y


def _chunked(a: np.ndarray, b: np.ndarray, v: np.ndarray, gamma: float, exclusive: bool,
             chunk_size: int | None, normalizer: bool = False) -> Any:
    """The chunked scan on flattened C-contiguous ``(N, L, ·)`` arrays of one dtype.

    With ``normalizer`` the values get a virtual ones column (built per chunk, in cache,
    never as an ``(N, L, d_v + 1)`` copy) and the result is ``(num (N, L, d_v), den
    (N, L))``: the same GEMMs, chunk length and groups as on ``[v | 1]``, so the same
    bits.
    """
    N, L, m = a.shape
    dv = v.shape[2]
    dv1 = dv + 1 if normalizer else dv  # the width of the product's values
    dt = a.dtype
    C = _resolve_chunk(chunk_size, L, m, dv1, dt.itemsize)
    nc = -(-L // C)
    pad = nc * C - L
    if pad:
        a, b, v = (np.concatenate([x, np.zeros((N, pad, x.shape[2]), dt)], axis=1)
                   for x in (a, b, v))
    A4, B4, V4 = (x.reshape((N, nc, C, x.shape[2])) for x in (a, b, v))
    decay_np, powers = _decay_tables(gamma, exclusive, C)
    decay = decay_np.astype(dt)
    plain = float(gamma) == 1.0
    # the decay's per-chunk scalings, applied once up front (gamma**(t+1) on the query
    # side of the carried state, gamma**(C-1-s) on the key side of its contribution)
    Aw = A4 if plain else A4 * powers[1 : C + 1, None].astype(dt)
    Bw = B4 if plain else B4 * powers[C - 1 :: -1, None].astype(dt)
    g_chunk = dt.type(float(gamma) ** C)
    out = np.empty((N, nc, C, dv), dtype=dt)
    den = np.empty((N, nc, C) if normalizer else (1, 1, 1), dtype=dt)
    state = np.zeros((N, m, dv1), dtype=dt)
    G = _group_chunks(C, m, dv1)
    contrib = np.empty((N, min(G, nc), m, dv1), dtype=dt)
    with _single_threaded_blas():
        for g0 in range(0, nc, G):
            n_g = min(G, nc - g0)
            _chunk_contribs(Bw, V4, g0, n_g, contrib, normalizer)
            _state_scan(contrib, n_g, state, g_chunk, plain)
            _chunk_outputs(A4, Aw, B4, V4, contrib, decay, g0, n_g, out, den, normalizer)
    out = out.reshape((N, nc * C, dv))
    if pad:
        out = out[:, :L]
    if not normalizer:
        return out
    den = den.reshape((N, nc * C))
    return out, (den[:, :L] if pad else den)


# -------------------------------------------------------------------- recurrence
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


# ------------------------------------------------------------------------ public
def _flatten(A: np.ndarray, B: np.ndarray, V: np.ndarray
             ) -> tuple[tuple[int, ...], np.ndarray, np.ndarray, np.ndarray]:
    batch = np.broadcast_shapes(A.shape[:-2], B.shape[:-2], V.shape[:-2])
    A, B, V = (np.broadcast_to(x, (*batch, *x.shape[-2:])) for x in (A, B, V))
    L, m = A.shape[-2:]
    dv = V.shape[-1]
    a = np.ascontiguousarray(A.reshape((-1, L, m)))
    b = np.ascontiguousarray(B.reshape((-1, L, m)))
    v = np.ascontiguousarray(V.reshape((-1, L, dv)))
    return tuple(batch), a, b, v


def causal_masked_matmul(
    A: np.ndarray,
    B: np.ndarray,
    V: np.ndarray,
    *,
    gamma: float = 1.0,
    exclusive: bool = False,
    chunk_size: int | None = None,
    method: str = "chunked",
    normalizer: bool = False,
) -> Any:
    """``(M ⊙ A Bᵀ) V`` for the (decayed) causal mask on numpy arrays, compiled.

    Same contract as :func:`structattn.backends.scan.causal_masked_matmul`.

    Parameters
    ----------
    A, B : ndarray, shape (..., L, m)
        Query-side and key-side factors (float32 or float64, one dtype).
    V : ndarray, shape (..., L, d_v)
        Values; leading dimensions broadcast.
    gamma : float
        Decay in (0, 1].
    exclusive : bool
        Exclude the diagonal.
    chunk_size : int or None
        Chunk length ``C`` of the chunked method (None: the cost model's); ignored by
        the recurrence.
    method : {"chunked", "recurrence"}
        Chunked GEMMs (default) or the row recurrence (the reference).
    normalizer : bool
        Also return the normalizer ``(M ⊙ A Bᵀ) 1``: the product with ``[V | 1]``, whose
        ones column the chunked method builds per chunk (no ``(..., L, d_v + 1)`` copy).

    Returns
    -------
    ndarray, shape (..., L, d_v)
        Or, with ``normalizer``, ``(num (..., L, d_v), den (..., L, 1))``: bit for bit
        the columns of the product with ``[V | 1]``.

    Notes
    -----
    ``"chunked"``: ``2·L·C·(m + d_v) + 4·L·m·d_v`` flops in BLAS GEMMs, parallel over
    (batch element, chunk); extra memory ``O(min(L, GROUP_TOKENS)·m·d_v / C)`` states
    per batch element (plus decay-scaled copies of ``A`` and ``B`` when ``gamma < 1``,
    and a padded copy when ``C`` does not divide ``L``).  ``"recurrence"``:
    ``4·L·m·d_v`` flops as rank-one updates, parallel over the batch elements,
    ``O(m·d_v)`` state per thread.  Both keep row ``i`` independent of the rows after it.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if normalizer and method == "recurrence":
        V = np.concatenate([V, np.ones_like(V[..., :1])], axis=-1)
        out = causal_masked_matmul(A, B, V, gamma=gamma, exclusive=exclusive,
                                   method=method)
        return out[..., :-1], out[..., -1:]
    batch, a, b, v = _flatten(A, B, V)
    L, dv = a.shape[1], v.shape[2]
    if method == "recurrence":
        out = np.empty((a.shape[0], L, dv), dtype=a.dtype)
        _causal_rows(a, b, v, a.dtype.type(gamma), bool(exclusive), out)
    elif normalizer:
        num, den = _chunked(a, b, v, float(gamma), bool(exclusive), chunk_size, True)
        return num.reshape((*batch, L, dv)), den.reshape((*batch, L, 1))
    else:
        out = _chunked(a, b, v, float(gamma), bool(exclusive), chunk_size)
    return out.reshape((*batch, L, dv))


def causal_masked_matmul_recurrence(
    A: np.ndarray, B: np.ndarray, V: np.ndarray, *, gamma: float = 1.0,
    exclusive: bool = False, chunk_size: Any = None,
) -> np.ndarray:
    """The row recurrence (``method="recurrence"``): the reference of the chunked scan.

    ``S_i = gamma S_{i-1} + B_i V_iᵀ`` (``m x d_v``), output row ``A_i S_i``
    (``A_i S_{i-1}`` scaled by ``gamma`` when exclusive); ``chunk_size`` is ignored.
    Time ``O(L·m·d_v)``, extra memory ``O(m·d_v)`` per thread.
    """
    return causal_masked_matmul(A, B, V, gamma=gamma, exclusive=exclusive,
                                method="recurrence")

"""numba kernel of MRA-2 / MRA-2-s: block-sparse softmax rows merged with the coarse part.

``mra_block_sparse`` runs one task per (batch x head, block row) — the BSR layout of the
selection gives each task the list of its blocks, so no two tasks write the same output
rows and no atomics are needed (mra.md §2.4).  A task owns its ``b`` output rows and, for
every selected block ``(I, J)``:

1. computes the ``b x b`` score tile ``Q_I K_Jᵀ · scale`` (one small BLAS ``gemm`` on
   the contiguous blocks, or BLAS-free loops sized for the block, see
   ``TILE_PRODUCTS``);
2. updates each row's running maximum (online softmax: the previous sums are rescaled
   when the maximum grows, so the final reference is the exact row maximum over all
   selected blocks);
3. accumulates the row sums of ``exp`` of the tile and ``exp(tile) @ V_J`` (same
   choice of product) into the numerators;

then merges with the coarse row of block row ``I`` by log-sum-exp rescaling and divides.
Padded keys (``valid`` False) carry no weight; padded rows and rows with a zero
denominator output 0.  Arithmetic is in the input dtype (float32 or float64); extra
memory per task is one tile and the ``b x d_v`` accumulators.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["mra_block_sparse"]

#: How the two per-tile products (``Q_I K_Jᵀ``, ``P V_J``) are computed inside the kernel:
#: ``"blas"`` — one small ``np.dot`` per tile (numba calls the BLAS gemm of scipy);
#: ``"loops"`` — BLAS-free loops sized for the block.  Measured on this project's Xeon
#: (AVX-512, no SVML, one thread), L = 4096, 8 blocks per row, 8 heads: 0.22–0.24 s per
#: call with BLAS tiles, 0.30–0.32 s with the loops (docs/mra.rst), hence the default.
TILE_PRODUCTS = "blas"

#: Tiles x b² x d below which the serial variant runs (waking the thread pool costs more).
PARALLEL_MIN_WORK = 1 << 21


@numba.njit(cache=True, fastmath=True)
def _tile_loops(qI, kJ, tile, vJ, nrow, use_pv):  # pragma: no cover - compiled
    # BLAS-free products sized for the block; use_pv False: tile = qI @ kJᵀ (dot products
    # over d contiguous features; fastmath lets LLVM vectorise the reductions);
    # True: nrow += tile @ vJ (inner loop over d_v contiguous values)
    b, d = qI.shape
    if not use_pv:
        for r in range(b):
            for c in range(b):
                acc = tile.dtype.type(0.0)
                for dd in range(d):
                    acc += qI[r, dd] * kJ[c, dd]
                tile[r, c] = acc
    else:
        dv = vJ.shape[1]
        for r in range(b):
            for c in range(b):
                w = tile[r, c]
                if w != 0.0:
                    for e in range(dv):
                        nrow[r, e] += w * vJ[c, e]


@numba.njit(cache=True, fastmath=False)
def _block_row(t, qb, kb, vb, valid, indptr, indices, scale, Nc, Zc, mc, out,
               tile, mrow, zrow, nrow, pv, blas):  # pragma: no cover - compiled
    n, b = qb.shape[1], qb.shape[2]
    dv = vb.shape[3]
    bi = t // n
    I = t - bi * n
    neg = -np.inf
    qI = qb[bi, I]
    for r in range(b):
        mrow[r] = neg
        zrow[r] = 0.0
        for e in range(dv):
            nrow[r, e] = 0.0
    for p in range(indptr[bi, I], indptr[bi, I + 1]):
        J = indices[bi, p]
        kJ = kb[bi, J]
        vJ = vb[bi, J]
        vaJ = valid[bi, J]
        if blas:
            np.dot(qI, kJ.T, tile)
        else:
            _tile_loops(qI, kJ, tile, vJ, nrow, False)
        # exact running row max, rescale earlier sums, exponentiate (padded keys -> 0)
        for r in range(b):
            tmax = neg
            for c in range(b):
                if vaJ[c]:
                    x = tile[r, c] * scale
                    tile[r, c] = x
                    if x > tmax:
                        tmax = x
                else:
                    tile[r, c] = neg
            if tmax == neg:
                for c in range(b):
                    tile[r, c] = 0.0
                continue
            if tmax > mrow[r]:
                if mrow[r] != neg:
                    alpha = math.exp(mrow[r] - tmax)
                    zrow[r] *= alpha
                    for e in range(dv):
                        nrow[r, e] *= alpha
                mrow[r] = tmax
            m = mrow[r]
            z = zrow[r]
            for c in range(b):
                w = math.exp(tile[r, c] - m)
                tile[r, c] = w
                z += w
            zrow[r] = z
        if blas:
            np.dot(tile, vJ, pv)
            for r in range(b):
                for e in range(dv):
                    nrow[r, e] += pv[r, e]
        else:
            _tile_loops(qI, kJ, tile, vJ, nrow, True)
    # merge with the coarse row of block I and divide
    cm = mc[bi, I]
    for r in range(b):
        if not valid[bi, I, r]:
            for e in range(dv):
                out[bi, I, r, e] = 0.0
            continue
        fm = mrow[r]
        ref = fm if fm > cm else cm
        af = math.exp(fm - ref) if fm != neg else 0.0
        ac = math.exp(cm - ref) if cm != neg else 0.0
        den = zrow[r] * af + Zc[bi, I] * ac
        if den > 0.0:
            inv = 1.0 / den
            for e in range(dv):
                out[bi, I, r, e] = (nrow[r, e] * af + Nc[bi, I, e] * ac) * inv
        else:
            for e in range(dv):
                out[bi, I, r, e] = 0.0


@numba.njit(cache=True, parallel=True, fastmath=False)
def _run_parallel(qb, kb, vb, valid, indptr, indices, scale, Nc, Zc, mc, out,
                  blas):  # pragma: no cover - compiled
    B, n, b = qb.shape[0], qb.shape[1], qb.shape[2]
    dv = vb.shape[3]
    for t in numba.prange(B * n):
        tile = np.empty((b, b), dtype=qb.dtype)
        mrow = np.empty(b, dtype=qb.dtype)
        zrow = np.empty(b, dtype=qb.dtype)
        nrow = np.empty((b, dv), dtype=qb.dtype)
        pv = np.empty((b, dv), dtype=qb.dtype)
        _block_row(t, qb, kb, vb, valid, indptr, indices, scale, Nc, Zc, mc, out,
                   tile, mrow, zrow, nrow, pv, blas)


@numba.njit(cache=True, fastmath=False)
def _run_serial(qb, kb, vb, valid, indptr, indices, scale, Nc, Zc, mc, out,
                blas):  # pragma: no cover - compiled
    B, n, b = qb.shape[0], qb.shape[1], qb.shape[2]
    dv = vb.shape[3]
    tile = np.empty((b, b), dtype=qb.dtype)
    mrow = np.empty(b, dtype=qb.dtype)
    zrow = np.empty(b, dtype=qb.dtype)
    nrow = np.empty((b, dv), dtype=qb.dtype)
    pv = np.empty((b, dv), dtype=qb.dtype)
    for t in range(B * n):
        _block_row(t, qb, kb, vb, valid, indptr, indices, scale, Nc, Zc, mc, out,
                   tile, mrow, zrow, nrow, pv, blas)


def mra_block_sparse(
    qb: np.ndarray,
    kb: np.ndarray,
    vb: np.ndarray,
    valid: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    scale: float,
    Nc: np.ndarray,
    Zc: np.ndarray,
    mc: np.ndarray,
) -> np.ndarray:
    """Fine (selected-block) softmax rows merged with the coarse part.

    Parameters
    ----------
    qb : (B, n_b, b, d)
        Query blocks (padded tokens zero).
    kb : (B, n_b, b, d)
        Key blocks.
    vb : (B, n_b, b, d_v)
        Value blocks.
    valid : (B, n_b, b) bool
        Real (unpadded) tokens.
    indptr : (B, n_b + 1) int64
    indices : (B, k) int64
        BSR selection (block columns per block row).
    scale : float
        Logit scale.
    Nc : (B, n_b, d_v)
    Zc : (B, n_b)
    mc : (B, n_b)
        Coarse numerator, denominator and their shift (``-inf``: no coarse part).

    Returns
    -------
    numpy.ndarray, shape (B, n_b, b, d_v)
        Output rows, input dtype.  Cost ``O(k b² (d + d_v))`` per head.
    """
    dtype = qb.dtype
    out = np.empty(vb.shape, dtype=dtype)
    b, d = qb.shape[2], qb.shape[3]
    work = indices.size * b * b * (d + vb.shape[-1])
    run = _run_parallel if work >= PARALLEL_MIN_WORK else _run_serial
    run(qb, kb, vb, valid.astype(np.bool_, copy=False), indptr.astype(np.int64, copy=False),
        indices.astype(np.int64, copy=False), dtype.type(scale), Nc.astype(dtype, copy=False),
        Zc.astype(dtype, copy=False), mc.astype(dtype, copy=False), out,
        TILE_PRODUCTS == "blas")
    return out

"""numba kernel of MRA-2 / MRA-2-s: block-sparse softmax rows merged with the coarse part.

``mra_block_sparse`` runs one task per (batch x head, block row) — the BSR layout of the
selection gives each task the list of its blocks, so no two tasks write the same output
rows and no atomics are needed (mra.md §2.4).  Tasks are dealt out interleaved to one
worker per thread (``prange`` over workers), each worker allocating its scratch once.
A task owns its ``b`` output rows; with ``s`` selected blocks in its block row it

1. scales its query block once, ``Q_s = scale · Q_I``;
2. builds the *transposed* score block ``Sᵀ`` (``s b`` keys x ``b`` queries): block
   ``J``'s slice ``K_J Q_sᵀ`` is one product written to contiguous rows (BLAS ``gemm``
   through ``np.dot``, or BLAS-free loops, see ``TILE_PRODUCTS``) — no key block is
   copied or gathered; a per-task key-validity buffer records the padded keys;
3. takes the exact maximum of every query column over the *valid* selected keys (no
   sentinel value: a task with no valid key has no fine part, whatever the magnitude of
   the scores), exponentiates (float32: a vectorised ``exp``, see below; float64:
   ``math.exp``; padded keys get weight exactly 0) and sums the columns;
4. accumulates ``Σ_J (Sᵀ_J)ᵀ V_J`` (one product per block);

then merges with the coarse row of block row ``I`` by log-sum-exp rescaling and divides.
Padded keys (``valid`` False) carry no weight; padded rows and rows with a zero
denominator output 0.  Arithmetic is in the input dtype (float32 or float64).  Scratch
per worker: the ``s_max b x b`` score block (and its int32 exponent buffer for float32),
a ``b x d`` query block and two ``b x d_v`` accumulators, ``s_max`` the longest block
row.

Vectorised float32 ``exp``: numba has no SVML here, so ``math.exp`` is a scalar libm
call (≈4 ns).  :func:`_exp_shifted_f32` uses the classical Cody–Waite reduction
``x = n ln2 + r`` (``|r| <= ln2/2``, ``ln2`` split in two parts), a degree-7 Taylor
polynomial for ``exp(r)`` and ``2^n`` built from its exponent bits; every step is plain
arithmetic that LLVM vectorises (AVX-512: 16 lanes).  Relative error ≤ 2.5e-7 (about two
float32 ulps) for arguments in ``[-87, 0]``; arguments below ``-87`` give exactly 0
(their true value is below 1.7e-38 while every row holds a weight 1 at its maximum).
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["mra_block_sparse"]

#: How the two products per selected block (``K_J Q_sᵀ``, ``(Sᵀ_J)ᵀ V_J``) are computed
#: inside the kernel: ``"blas"`` — one ``np.dot`` each (numba calls the BLAS gemm of
#: scipy); ``"panel"`` — the block row's key / value blocks copied into one contiguous
#: ``(s b, d)`` panel, then one gemm per product for the whole row (measured ~15% slower
#: than ``"blas"``: the copies cost more than the saved calls; L = 4096, 8 heads, d = 64,
#: float32, 8 blocks per row, one thread, CPU time in one process on a loaded machine);
#: ``"loops"`` — BLAS-free loops (about 1.4x slower, kept as the independent variant the
#: tests compare).  Measurements: docs/mra.rst.
TILE_PRODUCTS = "blas"

#: Total tiles x b² x d below which the serial variant runs (waking the thread pool costs
#: more).
PARALLEL_MIN_WORK = 1 << 21


@numba.njit(cache=True, fastmath=True)
def _exp_shifted_f32(ST, m, ibuf, z, kval=None):  # pragma: no cover - compiled
    """``ST[c, r] = exp(ST[c, r] - m[r])`` (float32, vectorised) in place; ``z`` = sums.

    Keys with ``kval[c]`` False (when given) get weight exactly 0 (their ``ST`` row must
    be finite).
    """
    nk, b = ST.shape
    lo = np.float32(-87.0)
    log2e = np.float32(1.4426950408889634)
    ln2_hi = np.float32(0.693145751953125)
    ln2_lo = np.float32(1.428606765330187e-06)
    c7 = np.float32(1.0 / 5040.0)
    c6 = np.float32(1.0 / 720.0)
    c5 = np.float32(1.0 / 120.0)
    c4 = np.float32(1.0 / 24.0)
    c3 = np.float32(1.0 / 6.0)
    c2 = np.float32(0.5)
    one = np.float32(1.0)
    for c in range(nk):
        for r in range(b):
            x = ST[c, r] - m[r]
            keep = x >= lo
            x = max(x, lo)
            n = math.floor(x * log2e + np.float32(0.5))
            y = x - n * ln2_hi
            y = y - n * ln2_lo
            p = c7 * y + c6
            p = p * y + c5
            p = p * y + c4
            p = p * y + c3
            p = p * y + c2
            p = p * y + one
            p = p * y + one
            ST[c, r] = p
            ibuf[c, r] = ((np.int32(n) + np.int32(127)) << np.int32(23)) if keep else \
                np.int32(0)
        if kval is not None and not kval[c]:  # padded key: 2^n = 0
            for r in range(b):
                ibuf[c, r] = np.int32(0)
    two_n = ibuf[:nk].view(np.float32)
    for r in range(b):
        z[r] = 0.0
    for c in range(nk):
        for r in range(b):
            w = ST[c, r] * two_n[c, r]
            ST[c, r] = w
            z[r] += w


@numba.njit(cache=True, fastmath=False)
def _exp_shifted_libm(ST, m, kval, z):  # pragma: no cover - compiled
    """``ST[c, r] = exp(ST[c, r] - m[r])`` with ``math.exp`` (float64 path); ``z`` = sums.

    Keys with ``kval[c]`` False get weight exactly 0.
    """
    nk, b = ST.shape
    for r in range(b):
        z[r] = 0.0
    for c in range(nk):
        if kval[c]:
            for r in range(b):
                w = math.exp(ST[c, r] - m[r])
                ST[c, r] = w
                z[r] += w
        else:
            for r in range(b):
                ST[c, r] = 0.0


@numba.njit(cache=True, fastmath=True)
def _column_max(ST, kval, m):  # pragma: no cover - compiled
    """``m[r] = max(ST[c, r] for valid keys c)``; returns the number of valid keys.

    Only valid keys are read (their scores are finite), so no sentinel value is needed;
    ``m`` is left unset when there is no valid key.
    """
    nk, b = ST.shape
    nv = 0
    for c in range(nk):
        if kval[c]:
            if nv == 0:
                for r in range(b):
                    m[r] = ST[c, r]
            else:
                for r in range(b):
                    m[r] = max(m[r], ST[c, r])
            nv += 1
    return nv


@numba.njit(cache=True, fastmath=True)
def _loops_kq(kJ, qs, out):  # pragma: no cover - compiled
    # BLAS-free out = kJ @ qsᵀ (dot products over d contiguous features)
    bk, d = kJ.shape
    bq = qs.shape[0]
    for c in range(bk):
        for r in range(bq):
            acc = out.dtype.type(0.0)
            for dd in range(d):
                acc += kJ[c, dd] * qs[r, dd]
            out[c, r] = acc


@numba.njit(cache=True, fastmath=True)
def _loops_pv(P, vJ, acc):  # pragma: no cover - compiled
    # BLAS-free acc += Pᵀ @ vJ, P (keys x queries) (inner loop over d_v contiguous values)
    bk, bq = P.shape
    dv = vJ.shape[1]
    for c in range(bk):
        for r in range(bq):
            w = P[c, r]
            if w != 0.0:
                for e in range(dv):
                    acc[r, e] += w * vJ[c, e]


@numba.njit(cache=True, fastmath=False)
def _block_row(t, qb, kb, vb, valid, indptr, indices, scale, Nc, Zc, mc, out,
               qs, sbuf, ibuf, kval, acc, tmp, mrow, zrow, masked, blas,
               fast_exp, panel, kpan, vpan):  # pragma: no cover - compiled
    n, b, d = qb.shape[1], qb.shape[2], qb.shape[3]
    dv = vb.shape[3]
    bi = t // n
    I = t - bi * n
    p0, p1 = indptr[bi, I], indptr[bi, I + 1]
    nk = (p1 - p0) * b
    cm = mc[bi, I]
    has_coarse = cm != -np.inf
    if nk > 0:
        # scores transposed, ST[key, query] = (K_J (scale Q_I)ᵀ): every block's product
        # writes a contiguous row slice (no gather), the softmax runs over columns
        qI = qb[bi, I]
        for r in range(b):
            for x in range(d):
                qs[r, x] = qI[r, x] * scale
        ST = sbuf[:nk * b].reshape((nk, b))
        if panel:  # gather the row's key / value blocks, one gemm per product
            for p in range(p0, p1):
                J = indices[bi, p]
                o = (p - p0) * b
                kpan[o:o + b] = kb[bi, J]
                vpan[o:o + b] = vb[bi, J]
            np.dot(kpan[:nk], qs.T, ST)
        for p in range(p0, p1):
            J = indices[bi, p]
            o = (p - p0) * b
            if panel:
                pass
            elif blas:
                np.dot(kb[bi, J], qs.T, ST[o:o + b])
            else:
                _loops_kq(kb[bi, J], qs, ST[o:o + b])
            for x in range(b):
                kval[o + x] = valid[bi, J, x] if masked else True
        nv = _column_max(ST, kval[:nk], mrow)
        if nv == 0:  # no valid key among the selected blocks: no fine part
            for r in range(b):
                mrow[r] = 0.0
                zrow[r] = 0.0
        else:
            if nv < nk:  # padded keys: finite placeholders (x = 0), weight 0 in the exp
                for c in range(nk):
                    if not kval[c]:
                        for r in range(b):
                            ST[c, r] = mrow[r]
            if fast_exp:
                _exp_shifted_f32(ST, mrow, ibuf, zrow, kval[:nk])
            else:
                _exp_shifted_libm(ST, mrow, kval[:nk], zrow)
            if panel:
                np.dot(ST.T, vpan[:nk], acc)
            for p in range(p0, p1):
                if panel:
                    break
                J = indices[bi, p]
                o = (p - p0) * b
                if blas:
                    if p == p0:
                        np.dot(ST[o:o + b].T, vb[bi, J], acc)
                    else:
                        np.dot(ST[o:o + b].T, vb[bi, J], tmp)
                        for r in range(b):
                            for e in range(dv):
                                acc[r, e] += tmp[r, e]
                else:
                    if p == p0:
                        acc[:, :] = 0.0
                    _loops_pv(ST[o:o + b], vb[bi, J], acc)
    # merge with the coarse row of block I and divide
    for r in range(b):
        if not valid[bi, I, r]:
            for e in range(dv):
                out[bi, I, r, e] = 0.0
            continue
        fine = nk > 0 and zrow[r] > 0.0
        if fine and has_coarse:
            fm = mrow[r]
            ref = fm if fm > cm else cm
            af = math.exp(fm - ref)
            ac = math.exp(cm - ref)
            den = zrow[r] * af + Zc[bi, I] * ac
        elif fine:
            af, ac = 1.0, 0.0
            den = zrow[r]
        elif has_coarse:
            af, ac = 0.0, 1.0
            den = Zc[bi, I]
        else:
            af, ac = 0.0, 0.0
            den = 0.0
        if den > 0.0:
            inv = 1.0 / den
            if fine and has_coarse:
                for e in range(dv):
                    out[bi, I, r, e] = (acc[r, e] * af + Nc[bi, I, e] * ac) * inv
            elif fine:
                for e in range(dv):
                    out[bi, I, r, e] = acc[r, e] * inv
            else:
                for e in range(dv):
                    out[bi, I, r, e] = Nc[bi, I, e] * inv
        else:
            for e in range(dv):
                out[bi, I, r, e] = 0.0


@numba.njit(cache=True, fastmath=False)
def _worker(w, nw, max_nk, qb, kb, vb, valid, indptr, indices, scale, Nc, Zc, mc, out,
            masked, blas, fast_exp, panel):  # pragma: no cover - compiled
    B, n, b, d = qb.shape
    dv = vb.shape[3]
    dt = qb.dtype
    qs = np.empty((b, d), dtype=dt)
    sbuf = np.empty(max_nk * b, dtype=dt)
    ibuf = np.empty((max_nk, b), dtype=np.int32)
    kval = np.empty(max_nk, dtype=np.bool_)
    acc = np.empty((b, dv), dtype=dt)
    tmp = np.empty((b, dv), dtype=dt)
    mrow = np.empty(b, dtype=dt)
    zrow = np.empty(b, dtype=dt)
    pk = max_nk if panel else 1
    kpan = np.empty((pk, d), dtype=dt)
    vpan = np.empty((pk, dv), dtype=dt)
    for t in range(w, B * n, nw):  # interleaved: balances rows of different lengths
        _block_row(t, qb, kb, vb, valid, indptr, indices, scale, Nc, Zc, mc, out,
                   qs, sbuf, ibuf, kval, acc, tmp, mrow, zrow, masked, blas, fast_exp,
                   panel, kpan, vpan)


@numba.njit(cache=True, parallel=True, fastmath=False)
def _run_parallel(nw, max_nk, qb, kb, vb, valid, indptr, indices, scale, Nc, Zc, mc, out,
                  masked, blas, fast_exp, panel):  # pragma: no cover - compiled
    for w in numba.prange(nw):
        _worker(w, nw, max_nk, qb, kb, vb, valid, indptr, indices, scale, Nc, Zc, mc, out,
                masked, blas, fast_exp, panel)


@numba.njit(cache=True, fastmath=False)
def _run_serial(nw, max_nk, qb, kb, vb, valid, indptr, indices, scale, Nc, Zc, mc, out,
                masked, blas, fast_exp, panel):  # pragma: no cover - compiled
    _worker(0, 1, max_nk, qb, kb, vb, valid, indptr, indices, scale, Nc, Zc, mc, out,
            masked, blas, fast_exp, panel)


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
        Output rows, input dtype.  Cost ``O(k b² (d + d_v))`` per head; scratch
        ``O(s_max b (d + d_v + b))`` per thread, ``s_max`` the longest block row.
    """
    dtype = qb.dtype
    out = np.empty(vb.shape, dtype=dtype)
    B, n, b, d = qb.shape
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    counts = np.diff(indptr, axis=-1)
    max_nk = max(int(counts.max()) if counts.size else 0, 1) * b
    valid = np.ascontiguousarray(valid, dtype=np.bool_)
    masked = not bool(valid.all())
    work = indices.size * b * b * (d + vb.shape[-1])
    parallel = work >= PARALLEL_MIN_WORK
    nw = min(numba.get_num_threads(), B * n) if parallel else 1
    run = _run_parallel if parallel else _run_serial
    run(nw, max_nk, qb, kb, vb, valid, indptr,
        np.ascontiguousarray(indices, dtype=np.int64), dtype.type(scale),
        Nc.astype(dtype, copy=False), Zc.astype(dtype, copy=False),
        mc.astype(dtype, copy=False), out, masked, TILE_PRODUCTS != "loops",
        dtype == np.float32, TILE_PRODUCTS == "panel")
    return out

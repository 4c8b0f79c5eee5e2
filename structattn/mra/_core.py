"""MRA numerics independent of how blocks were selected: coarse part, fine part, merge.

Given the blocked inputs (:class:`~structattn.mra._layout._Blocks`) and a selection
(host :class:`~structattn.mra.selection.BlockSelection` or device
``_DeviceSelection``), computes MRA-2 / MRA-2-s outputs (mra.md §2.1–§2.4):

* coarse numerator/denominator ``C (Uᵀ V)``, ``C c`` (BLAS, ``O(n_b² d)``);
* fine part over the selected ``b x b`` blocks, either the numba kernel
  ``"mra_block_sparse"`` (per-block BLAS gemm calls) or, for numpy without numba and for
  torch (autograd), a batched-GEMM core (:func:`_fine_rows`: each block row's selected
  key/value blocks gathered into one ``(s b, d)`` panel, one batched matmul per product,
  exact row softmax) or the per-tile segment core (:func:`_fine_core`);
* log-sum-exp merge and division.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat
import numpy as np

from .._array import detach, is_torch, namespace
from ..backends import kernel
from ._layout import _block_mask, _Blocks, _flat_ids, _matmul
from .selection import BlockSelection


# ------------------------------------------------------------------ coarse part
def _coarse(blk: _Blocks, mask: Any) -> tuple[Any, Any, Any]:
    """Coarse numerator ``(B, n_b, d_v)``, denominator ``(B, n_b)``, shift ``(B, n_b)``.

    ``C_IJ = exp(Ŝ_IJ - m̂_I)`` on unselected valid pairs, ``m̂_I`` their maximum
    (``-inf`` if none); numerator ``C (Uᵀ V)``, denominator ``C c`` (valid counts).
    """
    xp = namespace(blk.scores)
    col_valid = blk.counts > 0
    keep = xp.logical_and(xp.logical_not(mask), col_valid[:, None, :])
    neg = xp.asarray(-math.inf, dtype=blk.scores.dtype, device=array_api_compat.device(mask))
    masked = xp.where(keep, blk.scores, neg)
    mc = xp.max(detach(masked), axis=-1)
    mc_fin = xp.where(xp.isfinite(mc), mc, xp.zeros_like(mc))
    C = xp.exp(xp.where(keep, blk.scores - mc_fin[..., None], neg))
    num = _matmul(C, blk.vsum)
    den = xp.sum(C * blk.counts[:, None, :], axis=-1)
    return num, den, mc


# ------------------------------------------------------------- fine part (core)
def _segment_max(values: Any, flat: Any, size: int) -> Any:
    """``out[i] = max(values[j] for flat[j] == i)``, ``-inf`` where empty; ``(size, b)``."""
    b = values.shape[-1]
    if is_torch(values):
        import torch

        out = torch.full((size, b), -math.inf, dtype=values.dtype, device=values.device)
        return out.scatter_reduce(0, flat[:, None].expand(-1, b), values, reduce="amax",
                                  include_self=True)
    out = np.full((size, b), -np.inf, dtype=values.dtype)
    np.maximum.at(out, flat, values)
    return out


def _segment_sum(values: Any, flat: Any, size: int) -> Any:
    """``out[i] = sum(values[j] for flat[j] == i)``, shape ``(size, *values.shape[1:])``."""
    if is_torch(values):
        import torch

        out = torch.zeros((size, *values.shape[1:]), dtype=values.dtype, device=values.device)
        return out.index_add(0, flat, values)
    out = np.zeros((size, *values.shape[1:]), dtype=values.dtype)
    np.add.at(out, flat, values)
    return out


def _gather_tiles(blk: _Blocks, sel: BlockSelection) -> tuple[Any, Any, Any]:
    """Selected score tiles ``(B, k, b, b)`` (padded keys ``-inf``), flat rows and cols.

    Blocks are gathered with ``take`` on the flattened ``(B·n_b, b, ·)`` layout (flat ids
    ``batch·n_b + block``), which both numpy and torch do as one contiguous copy.
    """
    xp = namespace(blk.qb)
    B, n, b, k = math.prod(blk.batch), blk.n, blk.b, sel.num_blocks
    d = int(blk.qb.shape[-1])
    flat_rows, flat_cols = _flat_ids(blk, sel)
    Qs = xp.reshape(xp.take(xp.reshape(blk.qb, (B * n, b, d)), flat_rows, axis=0),
                    (B, k, b, d))
    Ks = xp.reshape(xp.take(xp.reshape(blk.kb, (B * n, b, d)), flat_cols, axis=0),
                    (B, k, b, d))
    T = (Qs @ xp.matrix_transpose(Ks)) * blk.scale
    if blk.masked:
        neg = xp.asarray(-math.inf, dtype=T.dtype, device=array_api_compat.device(T))
        kv = xp.reshape(xp.take(xp.reshape(blk.valid, (B * n, b)), flat_cols, axis=0),
                        (B, k, 1, b))
        T = xp.where(kv, T, neg)
    return T, flat_rows, flat_cols


def _fine_core(blk: _Blocks, sel: BlockSelection) -> tuple[Any, Any, Any]:
    """Fine numerator ``(B, n_b, b, d_v)``, denominator and row max ``(B, n_b, b)``."""
    xp = namespace(blk.qb)
    B, n, b, k = math.prod(blk.batch), blk.n, blk.b, sel.num_blocks
    dv = int(blk.vb.shape[-1])
    T, flat_rows, flat_cols = _gather_tiles(blk, sel)
    tile_max = xp.reshape(xp.max(detach(T), axis=-1), (B * k, b))
    m = _segment_max(tile_max, flat_rows, B * n)  # (B n, b), -inf where empty
    m_fin = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    P = xp.exp(T - xp.reshape(xp.take(m_fin, flat_rows, axis=0), (B, k, b))[..., None])
    Z = _segment_sum(xp.reshape(xp.sum(P, axis=-1), (B * k, b)), flat_rows, B * n)
    Vs = xp.reshape(xp.take(xp.reshape(blk.vb, (B * n, b, dv)), flat_cols, axis=0),
                    (B, k, b, dv))
    N = _segment_sum(xp.reshape(P @ Vs, (B * k, b, dv)), flat_rows, B * n)
    return (xp.reshape(N, (B, n, b, dv)), xp.reshape(Z, (B, n, b)), xp.reshape(m, (B, n, b)))


#: Row-panel widths are rounded up to a multiple of this many blocks; rows of equal
#: width form one batched GEMM (padding <= ROW_PANEL_GROUP - 1 blocks per row).
ROW_PANEL_GROUP = 4

#: numpy: at most this many gathered key rows (``rows x width x b``) per batched call,
#: keeping each call's gathered panels a few MiB (cache-sized pieces).
ROW_PANEL_CHUNK_KEYS = 1 << 14


def _row_buckets(blk: _Blocks, sel: BlockSelection
                 ) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], np.ndarray]:
    """Block rows grouped by padded width, for the row-panel GEMM core.

    Row ``I`` of batch ``h`` (flat row ``h n_b + I``) with ``s_I`` selected blocks gets
    width ``w = ceil(s_I / g) g`` (``g`` = :data:`ROW_PANEL_GROUP`).  Returns
    ``[(rows (R,), table (R, w) flat key-block ids, slot (R, w) bool)]`` per width
    ``w > 0`` and ``order``: the flat rows in bucket order followed by the empty rows
    (its inverse permutation puts the concatenated results back).  Host ``O(B n_b)``.
    """
    B, n, k = math.prod(blk.batch), blk.n, sel.num_blocks
    g = max(1, ROW_PANEL_GROUP)
    indptr = np.asarray(sel.indptr).reshape(B, n + 1)
    indices = np.asarray(sel.indices).reshape(B, k)
    counts = np.diff(indptr, axis=-1).reshape(-1)  # (B n,)
    start = (indptr[:, :-1] + (np.arange(B) * k)[:, None]).reshape(-1)  # flat row starts
    cols = (indices + (np.arange(B) * n)[:, None]).reshape(-1)  # flat key-block ids
    width = -(-counts // g) * g
    buckets = []
    order = []
    for w in np.unique(width[width > 0]):
        rows = np.flatnonzero(width == w)
        slot = np.arange(w)[None, :] < counts[rows, None]
        pos = np.minimum(start[rows, None] + np.arange(w)[None, :], B * k - 1)
        table = np.where(slot, cols[pos], 0)
        buckets.append((rows, table, slot))
        order.append(rows)
    order.append(np.flatnonzero(width == 0))
    return buckets, np.concatenate(order)


def _panel(blk: _Blocks, rows: Any, table: Any, kv: Any) -> tuple[Any, Any, Any]:
    """Fine ``(N, Z, m)`` of the block rows ``rows`` over their gathered key panels.

    ``table (R, w)`` flat key-block ids, ``kv (R, w b)`` key validity.  Two batched
    matmuls ``(R, b, d) x (R, d, w b)`` and ``(R, b, w b) x (R, w b, d_v)`` and one
    exact row softmax; row max detached.
    """
    xp = namespace(blk.qb)
    B, n, b = math.prod(blk.batch), blk.n, blk.b
    d, dv = int(blk.qb.shape[-1]), int(blk.vb.shape[-1])
    R, w = int(table.shape[0]), int(table.shape[1])
    dev = array_api_compat.device(blk.qb)
    t = xp.reshape(table, (R * w,))
    Kp = xp.reshape(xp.take(xp.reshape(blk.kb, (B * n, b, d)), t, axis=0), (R, w * b, d))
    Vp = xp.reshape(xp.take(xp.reshape(blk.vb, (B * n, b, dv)), t, axis=0), (R, w * b, dv))
    Q = xp.take(xp.reshape(blk.qb, (B * n, b, d)), rows, axis=0) * blk.scale
    S = Q @ xp.matrix_transpose(Kp)  # (R, b, w b)
    S = xp.where(xp.reshape(kv, (R, 1, w * b)), S,
                 xp.asarray(-math.inf, dtype=S.dtype, device=dev))
    m = xp.max(detach(S), axis=-1)  # (R, b), -inf where no valid key
    m_fin = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    P = xp.exp(S - m_fin[..., None])
    return P @ Vp, xp.sum(P, axis=-1), m


def _fine_rows(blk: _Blocks, sel: BlockSelection) -> tuple[Any, Any, Any]:
    """Fine part as batched GEMMs over row panels; same outputs as :func:`_fine_core`.

    Every block row's selected key/value blocks are gathered into one ``(w b, d)``
    panel (:func:`_row_buckets`: width rounded up to :data:`ROW_PANEL_GROUP` blocks,
    padded slots masked); rows of equal width form one batched matmul per product
    (:func:`_panel`), with an exact row softmax — no per-tile segment max / sum.
    Cost ``O(Σ_I w_I b² (d + d_v))`` flops (``w_I < s_I + g``), gathered panels
    ``O(Σ_I w_I b (d + d_v))`` (numpy: in chunks of :data:`ROW_PANEL_CHUNK_KEYS` keys).
    torch: differentiable (gather, matmul, exp, one inverse permutation).
    """
    xp = namespace(blk.qb)
    B, n, b = math.prod(blk.batch), blk.n, blk.b
    dv = int(blk.vb.shape[-1])
    dev = array_api_compat.device(blk.qb)
    buckets, order = _row_buckets(blk, sel)
    valid = xp.reshape(blk.valid, (B * n, b))
    torch_in = is_torch(blk.qb)
    parts_n, parts_z, parts_m = [], [], []
    for rows, table, slot in buckets:
        R, w = table.shape
        step = R if torch_in else max(1, ROW_PANEL_CHUNK_KEYS // (w * b))
        for i in range(0, R, step):
            r_, t_, s_ = rows[i:i + step], table[i:i + step], slot[i:i + step]
            if torch_in:
                import torch

                r_, t_ = torch.as_tensor(r_, device=dev), torch.as_tensor(t_, device=dev)
                s_ = torch.as_tensor(s_, device=dev)
            kv = xp.reshape(xp.broadcast_to(s_[:, :, None], (*s_.shape, b)), (-1, w * b))
            if blk.masked:
                kv = xp.logical_and(kv, xp.reshape(xp.take(valid, xp.reshape(t_, (-1,)),
                                                           axis=0), (-1, w * b)))
            N, Z, m = _panel(blk, r_, t_, kv)
            parts_n.append(N)
            parts_z.append(Z)
            parts_m.append(m)
    empty = int(order.shape[0]) - sum(int(r.shape[0]) for r, _, _ in buckets)
    if empty:
        dt = blk.qb.dtype
        parts_n.append(xp.zeros((empty, b, dv), dtype=dt, device=dev))
        parts_z.append(xp.zeros((empty, b), dtype=dt, device=dev))
        parts_m.append(xp.full((empty, b), -math.inf, dtype=dt, device=dev))
    inv = np.empty_like(order)
    inv[order] = np.arange(order.shape[0])
    if torch_in:
        import torch

        inv = torch.as_tensor(inv, device=dev)

    def cat(xs: list[Any], shape: tuple[int, ...]) -> Any:
        x = xs[0] if len(xs) == 1 else xp.concat(xs, axis=0)
        return xp.reshape(xp.take(x, inv, axis=0), shape)

    return cat(parts_n, (B, n, b, dv)), cat(parts_z, (B, n, b)), cat(parts_m, (B, n, b))


def _fine(blk: _Blocks, sel: Any) -> tuple[Any, Any, Any]:
    """Fine part (array-API): row-panel GEMMs (:func:`_fine_rows`) for host selections,
    the per-tile segment core (:func:`_fine_core`) for torch's device selections (their
    row lengths live on the device; reading them back would synchronize, which the
    default torch path never does — tests/torch/test_no_sync.py; on CPU tensors the
    row panels measured 2.2x faster, so pass ``selection=`` to get them)."""
    if isinstance(sel, BlockSelection) and sel.num_blocks > 0:
        return _fine_rows(blk, sel)
    return _fine_core(blk, sel)


def _merge(blk: _Blocks, fine: tuple[Any, Any, Any], coarse: tuple[Any, Any, Any] | None
           ) -> Any:
    """Log-sum-exp merge of the fine and coarse parts; ``(B, n_b, b, d_v)``."""
    xp = namespace(blk.qb)
    Nf, Zf, mf = fine
    neg_inf = -math.inf
    if coarse is None:
        num, den = Nf, Zf
    else:
        Nc, Zc, mc = coarse
        ref = xp.maximum(mf, mc[..., None])
        ref = xp.where(xp.isfinite(ref), ref, xp.zeros_like(ref))
        neg = xp.full_like(ref, neg_inf)
        af = xp.exp(xp.where(xp.isfinite(mf), mf - ref, neg))
        ac = xp.exp(xp.where(xp.isfinite(mc)[..., None], mc[..., None] - ref, neg))
        num = Nf * af[..., None] + Nc[:, :, None, :] * ac[..., None]
        den = Zf * af + Zc[..., None] * ac
    ok = den > 0
    if blk.masked:
        ok = xp.logical_and(ok, blk.valid)
    safe = xp.where(ok, den, xp.ones_like(den))
    return xp.where(ok[..., None], num / safe[..., None], xp.zeros_like(num))


def _output(blk: _Blocks, out: Any) -> Any:
    xp = namespace(out)
    B, dv = math.prod(blk.batch), int(out.shape[-1])
    out = xp.reshape(out, (B, blk.n * blk.b, dv))[:, : blk.L, :]
    return xp.reshape(out, (*blk.batch, blk.L, dv))


def _run(blk: _Blocks, sel: BlockSelection, mode: str, backend: str) -> Any:
    xp = namespace(blk.qb)
    B = math.prod(blk.batch)
    if B == 0 or blk.L == 0:
        return _output(blk, xp.reshape(blk.vb, (B, blk.n, blk.b, -1)))
    mask = None
    if mode == "full" or backend != "numba":
        mask = _block_mask(blk, sel)
    coarse = _coarse(blk, mask) if mode == "full" else None
    if backend == "numba":
        dtype = blk.qb.dtype
        dv = int(blk.vb.shape[-1])
        if coarse is None:
            Nc = np.zeros((B, blk.n, dv), dtype=dtype)
            Zc = np.zeros((B, blk.n), dtype=dtype)
            mc = np.full((B, blk.n), -np.inf, dtype=dtype)
        else:
            Nc, Zc, mc = (np.ascontiguousarray(a, dtype=dtype) for a in coarse)
        out = kernel("mra_block_sparse", "numba")(
            np.ascontiguousarray(blk.qb), np.ascontiguousarray(blk.kb),
            np.ascontiguousarray(blk.vb), np.ascontiguousarray(blk.valid),
            np.ascontiguousarray(sel.indptr.reshape(B, blk.n + 1)),
            np.ascontiguousarray(sel.indices.reshape(B, -1)), blk.scale, Nc, Zc, mc,
        )
        return _output(blk, out)
    return _output(blk, _merge(blk, _fine(blk, sel), coarse))

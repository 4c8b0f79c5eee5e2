"""Block-sparse graph attention as batched GEMMs (block layouts ``A ⊗ 1_{b×b}``).

A token graph built by a pattern with ``block_size=b`` (``window``, ``hypercube``,
``bigbird``, ... — :meth:`AttentionGraph.block_expand`) is a block layout ``A`` on
``n = N / b`` blocks expanded to ``b x b`` dense blocks.  Softmax attention on it needs
no token-level gather: for block row ``I`` with ``s_I`` block columns, its ``b`` queries
attend exactly the ``s_I b`` keys of those blocks, so

    S_I = scale · Q_I [K_J1; …; K_Js]ᵀ   (b x s_I b),   O_I = softmax(S_I) [V_J1; …; V_Js],

two GEMMs per block row.  Block rows are grouped by their width rounded up to
:data:`GROUP` blocks (padded slots masked with ``-inf``), and each group runs as one
batched matmul over ``(batch, rows)`` — numpy's BLAS or torch (differentiable by
autograd; the row max is detached).

* :func:`detect_block_layout` finds ``A`` and ``b`` from the CSR arrays (``O(nnz)``
  vectorized, cached for the last few graphs);
* :func:`block_sparse_attention` computes the output; ``O(Σ_I w_I b² (d + d_v))``
  flops per batch element (``w_I < s_I + GROUP``, i.e. ``nnz (d + d_v)`` up to the
  padding), gathered panels ``O(Σ_I w_I b (d + d_v))`` per chunk.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import numpy as np

from .._array import detach, is_torch, namespace
from .graph import AttentionGraph

__all__ = ["BLOCK_SIZES", "GROUP", "block_sparse_attention", "detect_block_layout"]

#: Block sizes tried by :func:`detect_block_layout`, largest first.
BLOCK_SIZES = (128, 64, 32, 16, 8)

#: Row-panel widths are rounded up to a multiple of this many blocks.
GROUP = 2

#: numpy: at most this many gathered keys (``batch x rows x width x b``) per batched call.
CHUNK_KEYS = 1 << 15

_CACHE: OrderedDict[int, tuple[AttentionGraph, Any]] = OrderedDict()
_CACHE_SIZE = 8


def _layout_for(graph: AttentionGraph, b: int) -> AttentionGraph | None:
    """The block layout ``A`` with ``graph == A.block_expand(b)``, or None."""
    N = graph.num_nodes
    if N % b or graph.nnz % (b * b):
        return None
    deg = graph.degrees.reshape(N // b, b)
    if np.any(deg % b) or np.any(deg != deg[:, :1]):
        return None
    # candidate block columns from each block row's first token row
    indptr, cols = graph.indptr, graph.indices
    first = indptr[:-1:b]
    nblk = deg[:, 0] // b
    bptr = np.zeros(N // b + 1, dtype=np.int64)
    np.cumsum(nblk, out=bptr[1:])
    take = np.repeat(first, nblk) + (np.arange(bptr[-1]) - np.repeat(bptr[:-1], nblk)) * b
    bcols = cols[take]
    if np.any(bcols % b):
        return None
    layout = AttentionGraph(bptr, bcols // b, N // b)
    return layout if layout.block_expand(b) == graph else None


def detect_block_layout(graph: AttentionGraph,
                        block_sizes: tuple[int, ...] = BLOCK_SIZES
                        ) -> tuple[AttentionGraph, int] | None:
    """``(A, b)`` with ``graph == A.block_expand(b)`` for the largest ``b`` tried, or None.

    Parameters
    ----------
    graph : AttentionGraph
        Token graph on ``N`` nodes.
    block_sizes : tuple of int
        Candidate block sizes, tried in order (the first match wins).

    Returns
    -------
    (AttentionGraph, int) or None
        The block layout on ``N / b`` blocks and ``b``.  ``O(nnz)`` per candidate that
        passes the degree test; the last few results are cached per graph object.
    """
    key = id(graph)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is graph:
        _CACHE.move_to_end(key)
        return hit[1]
    found = None
    if graph.nnz:
        for b in block_sizes:
            if b > 1:
                layout = _layout_for(graph, b)
                if layout is not None:
                    found = (layout, b)
                    break
    _CACHE[key] = (graph, found)
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return found


def _buckets(layout: AttentionGraph) -> tuple[list[tuple[np.ndarray, np.ndarray,
                                                        np.ndarray]], np.ndarray]:
    """Block rows grouped by padded width: ``[(rows, table (R, w), slot (R, w))]`` and
    the row order (buckets, then empty rows) whose inverse restores the layout order."""
    g = max(1, GROUP)
    counts = layout.degrees
    width = -(-counts // g) * g
    start = layout.indptr[:-1]
    cols = layout.indices
    buckets, order = [], []
    for w in np.unique(width[width > 0]):
        rows = np.flatnonzero(width == w)
        slot = np.arange(w)[None, :] < counts[rows, None]
        pos = np.minimum(start[rows, None] + np.arange(w)[None, :], max(cols.size - 1, 0))
        buckets.append((rows, np.where(slot, cols[pos], 0), slot))
        order.append(rows)
    order.append(np.flatnonzero(width == 0))
    return buckets, np.concatenate(order)


def block_sparse_attention(q: Any, k: Any, v: Any, layout: AttentionGraph, b: int,
                           scale: float) -> Any:
    """Softmax attention on ``layout.block_expand(b)`` by batched GEMMs.

    Parameters
    ----------
    q, k : array, shape (..., N, d)
    v : array, shape (..., N, d_v)
        numpy or torch, one dtype; ``N = layout.num_nodes · b``.
    layout : AttentionGraph
        Block layout on ``N / b`` blocks (from :func:`detect_block_layout`).
    b : int
        Block size.
    scale : float
        Score scale.

    Returns
    -------
    array, shape (..., N, d_v)
        Equal to :func:`~structattn.graphs.sparse_attention` on the expanded graph (rows
        of empty block rows are zero).  Cost: see the module docstring.
    """
    xp = namespace(q)
    batch = tuple(q.shape[:-2])
    N, d = int(q.shape[-2]), int(q.shape[-1])
    dv = int(v.shape[-1])
    B, n = math.prod(batch), N // b
    qb = xp.reshape(q, (B, n, b, d)) * scale
    kb = xp.reshape(k, (B, n, b, d))
    vb = xp.reshape(v, (B, n, b, dv))
    torch_in = is_torch(q)
    dev = q.device if torch_in else None
    buckets, order = _buckets(layout)
    parts = []
    for rows, table, slot in buckets:
        R, w = table.shape
        step = R if torch_in else max(1, CHUNK_KEYS // max(1, B * w * b))
        for i in range(0, R, step):
            r_, t_, s_ = rows[i:i + step], table[i:i + step], slot[i:i + step]
            m_ = int(r_.shape[0])
            if torch_in:
                import torch

                r_, t_ = torch.as_tensor(r_, device=dev), torch.as_tensor(t_, device=dev)
                s_ = torch.as_tensor(s_, device=dev)
            tf = xp.reshape(t_, (-1,))
            Kp = xp.reshape(xp.take(kb, tf, axis=1), (B, m_, w * b, d))
            Vp = xp.reshape(xp.take(vb, tf, axis=1), (B, m_, w * b, dv))
            S = xp.take(qb, r_, axis=1) @ xp.matrix_transpose(Kp)  # (B, m, b, w b)
            if not bool(np.all(slot[i:i + step])):
                ok = xp.reshape(xp.broadcast_to(s_[:, :, None], (m_, w, b)), (m_, 1, w * b))
                S = xp.where(ok, S, xp.asarray(-math.inf, dtype=S.dtype, device=dev))
            mx = xp.max(detach(S), axis=-1, keepdims=True)
            P = xp.exp(S - mx)
            parts.append((P @ Vp) / xp.sum(P, axis=-1, keepdims=True))
    empty = int(order.shape[0]) - sum(int(r.shape[0]) for r, _, _ in buckets)
    if empty:
        parts.append(xp.zeros((B, empty, b, dv), dtype=q.dtype, device=dev))
    out = parts[0] if len(parts) == 1 else xp.concat(parts, axis=1)
    if not np.array_equal(order, np.arange(n)):
        inv = np.empty_like(order)
        inv[order] = np.arange(n)
        if torch_in:
            import torch

            inv = torch.as_tensor(inv, device=dev)
        out = xp.take(out, inv, axis=1)
    return xp.reshape(out, (*batch, N, dv))

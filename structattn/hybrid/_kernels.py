"""Hot loops of the hybrid: the exact part and the low-rank correction on the support.

For every stored pair ``(i, j)`` of the support the kernels form, in the common scale
``exp(-t_i)`` (``t_i = max(0, max_{j∈S_i} s̃_ij)``, ``s̃_ij = scale·q_i·k_j + ρ_i``),

    w_ij = exp(s̃_ij − t_i) − exp(−t_i) · φ̃(q_i)·φ̃(k_j),

and return ``exp(−t_i)·LR_i + Σ_{j∈S_i} w_ij [v_j | 1]`` (``LR = φ̃(Q) φ̃(K)ᵀ [V | 1]``
computed once, globally or by a causal scan) divided by its last column.  ``t_i`` is a
pure stabilizer (every term of row ``i`` carries ``exp(−t_i)``), so it is detached.

* numba (numpy inputs): one fused, row-parallel pass with an ``O(max degree)`` buffer per
  task: ``O(nnz·(d + m + d_v))`` time, no per-pair array in memory;
* numpy / torch: gather + segment reductions (``ufunc.reduceat`` / ``scatter_reduce`` and
  ``index_add``), ``O(nnz·(d + m + d_v))`` memory, torch differentiable by autograd.

The structure follows :mod:`structattn.graphs.sparse_attention` (same CSR conventions);
those kernels return normalized outputs only, while the hybrid needs each row's
unnormalized exact mass in the low-rank part's scale, hence a kernel of its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .support import Support

__all__ = ["edge_index", "hybrid_combine"]

def edge_index(sup: Support, B: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flattened ``(B·L)`` row, column of every pair in CSR order, and row pointers."""
    L = sup.length
    deg = np.diff(sup.indptr, axis=1)  # (H, L)
    if sup.num_heads == 1:
        rows = np.repeat(np.arange(L, dtype=np.int64), deg[0])
        off = (np.arange(B, dtype=np.int64) * L)[:, None]
        rows_f = (rows[None, :] + off).ravel()
        cols_f = (sup.indices[None, :] + off).ravel()
        counts = np.tile(deg[0], B)
    else:
        heads = np.repeat(np.arange(B, dtype=np.int64), deg.sum(axis=1))
        rows_f = np.repeat(np.arange(B * L, dtype=np.int64), deg.ravel())
        cols_f = sup.indices + heads * L
        counts = deg.ravel()
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return rows_f, cols_f, indptr


def _numba(qf, kf, v1, pq, pk, rho, lr, indptr, cols, scale) -> np.ndarray:
    from ._numba import hybrid_rows

    out = np.empty((qf.shape[0], v1.shape[1] - 1), dtype=qf.dtype)
    maxdeg = int(np.max(np.diff(indptr))) if indptr.size > 1 else 0
    c = np.ascontiguousarray
    hybrid_rows(c(qf), c(kf), c(v1), c(pq), c(pk), c(rho), c(lr), indptr, cols,
                     float(scale), maxdeg, out)
    return out


def _numpy(qf, kf, v1, pq, pk, rho, lr, rows, cols, indptr, scale) -> np.ndarray:
    BL = qf.shape[0]
    s = np.einsum("ed,ed->e", qf[rows], kf[cols]) * scale + rho[rows]
    t = np.zeros(BL, dtype=qf.dtype)
    nonempty = np.flatnonzero(np.diff(indptr) > 0)
    if rows.size:
        t[nonempty] = np.maximum(np.maximum.reduceat(s, indptr[nonempty]), 0.0)
    et = np.exp(-t)
    lij = np.einsum("em,em->e", pq[rows], pk[cols])
    w = np.exp(s - t[rows]) - et[rows] * lij
    acc = et[:, None] * lr
    if rows.size:
        acc[nonempty] += np.add.reduceat(w[:, None] * v1[cols], indptr[nonempty], axis=0)
    num, den = acc[:, :-1], acc[:, -1:]
    ok = np.abs(den) >= np.finfo(qf.dtype).tiny
    return np.where(ok, num / np.where(ok, den, 1.0), 0.0)


def _torch(qf, kf, v1, pq, pk, rho, lr, rows, cols, scale) -> Any:
    import torch

    dev = qf.device
    r = torch.as_tensor(rows, device=dev)
    c = torch.as_tensor(cols, device=dev)
    BL = qf.shape[0]
    s = (qf.index_select(0, r) * kf.index_select(0, c)).sum(-1) * scale + rho.index_select(0, r)
    t = torch.zeros(BL, dtype=qf.dtype, device=dev)
    t = t.scatter_reduce(0, r, s.detach(), reduce="amax", include_self=True)
    et = torch.exp(-t)
    lij = (pq.index_select(0, r) * pk.index_select(0, c)).sum(-1)
    w = torch.exp(s - t.index_select(0, r)) - et.index_select(0, r) * lij
    acc = (et[:, None] * lr).index_add(0, r, w[:, None] * v1.index_select(0, c))
    num, den = acc[:, :-1], acc[:, -1:]
    ok = den.abs() >= torch.finfo(qf.dtype).tiny
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)),
                       torch.zeros_like(num))


def hybrid_combine(q: Any, k: Any, v1: Any, pq: Any, pk: Any, rho: Any, lr: Any,
                   sup: Support, scale: float, backend: str) -> Any:
    """Normalized hybrid output ``(B·L, d_v)`` from flattened ``(B·L, ·)`` inputs.

    Parameters
    ----------
    q, k : (B·L, d);  v1, lr : (B·L, d_v + 1);  pq, pk : (B·L, m);  rho : (B·L,)
    sup : Support on ``L`` tokens (1 or ``B`` heads)
    scale : float
    backend : {"numpy", "numba", "torch"}
    """
    B = q.shape[0] // max(sup.length, 1)
    rows, cols, indptr = edge_index(sup, B)
    if backend == "numba":
        return _numba(q, k, v1, pq, pk, rho, lr, indptr, cols, scale)
    if backend == "torch":
        return _torch(q, k, v1, pq, pk, rho, lr, rows, cols, scale)
    return _numpy(q, k, v1, pq, pk, rho, lr, rows, cols, indptr, scale)

"""Sparse supports ``S`` of the hybrid operator, as one per-head CSR structure.

Every support the library builds — an :class:`~structattn.graphs.AttentionGraph` (window,
BigBird, hypercube, …), a block pattern, an MRA-2 :class:`~structattn.mra.BlockSelection`,
an LSH bucketing, or a boolean ``(…, L, L)`` array — is converted to a :class:`Support`:
row pointers per head and column indices, so that one kernel serves them all.  A support
shared by every head (a graph) is stored once (``num_heads == 1``); adaptive supports
(MRA selection, LSH) hold one CSR per head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._array import is_torch, to_numpy
from .._validate import check_int
from ..graphs import AttentionGraph
from ..mra.selection import BlockSelection, check_block_size, num_block_rows, select_blocks

__all__ = [
    "BlockPattern",
    "Support",
    "as_support",
    "lsh_support",
    "mra_support",
]


@dataclass(frozen=True, eq=False)
class Support:
    """A sparse ``L x L`` support per head, in CSR form.

    Attributes
    ----------
    indptr : numpy.ndarray of int64, shape (H, L + 1)
        ``indptr[h, i]`` points into ``indices`` (global offsets: head ``h``'s rows are
        ``indices[indptr[h, i]:indptr[h, i + 1]]``).
    indices : numpy.ndarray of int64, shape (nnz_total,)
        Key index of every stored pair, strictly increasing within a row.
    length : int
        ``L``.

    Notes
    -----
    ``H == 1`` means one support shared by every batch/head element; otherwise ``H`` is
    the flattened batch size of the inputs it was built for.
    """

    indptr: np.ndarray
    indices: np.ndarray
    length: int

    @property
    def num_heads(self) -> int:
        """``H``: 1 for a shared support."""
        return int(self.indptr.shape[0])

    @property
    def nnz(self) -> int:
        """Stored pairs per head, averaged over heads."""
        return round(self.indices.size / self.num_heads)

    def density(self) -> float:
        """``nnz / L²``."""
        return self.indices.size / (self.num_heads * max(self.length, 1) ** 2)

    def causal(self) -> Support:
        """The support intersected with ``j <= i``."""
        rows = self._rows_local()
        keep = self.indices <= rows
        return _from_pairs(np.repeat(np.arange(self.num_heads), self._counts()),
                           rows, self.indices, keep, self.num_heads, self.length)

    def union(self, other: Any) -> Support:
        """Pairs in either support (``other``: any accepted support on ``L`` tokens)."""
        if isinstance(other, np.ndarray) or is_torch(other):
            H = max(self.num_heads, math.prod(other.shape[:-2]))
        elif isinstance(other, BlockPattern):
            H = max(self.num_heads, math.prod(other.blocks.shape[:-2]))
        else:
            H = max(self.num_heads, getattr(other, "num_heads", 1))
        other = as_support(other, self.length, H)
        H = max(self.num_heads, other.num_heads)
        parts = []
        for sup in (self, other):
            heads = np.repeat(np.arange(sup.num_heads), sup._counts())
            rows, cols = sup._rows_local(), sup.indices
            if sup.num_heads == 1 and H > 1:
                n = rows.size
                heads, rows, cols = (np.repeat(np.arange(H), n), np.tile(rows, H),
                                     np.tile(cols, H))
            parts.append((heads, rows, cols))
        h, r, c = (np.concatenate([a[i] for a in parts]) for i in range(3))
        return _from_pairs(h, r, c, np.ones(h.size, dtype=bool), H, self.length)

    def _counts(self) -> np.ndarray:
        return self.indptr[:, -1] - self.indptr[:, 0]

    def _rows_local(self) -> np.ndarray:
        deg = np.diff(self.indptr, axis=1).ravel()
        return np.repeat(np.tile(np.arange(self.length), self.num_heads), deg)

    def to_dense(self) -> np.ndarray:
        """Boolean ``(H, L, L)`` membership matrix (tests, small problems)."""
        H, L = self.num_heads, self.length
        out = np.zeros((H, L * L), dtype=bool)
        heads = np.repeat(np.arange(H), self._counts())
        out[heads, self._rows_local() * L + self.indices] = True
        return out.reshape(H, L, L)


def _from_pairs(heads: np.ndarray, rows: np.ndarray, cols: np.ndarray, keep: np.ndarray,
                H: int, L: int) -> Support:
    heads, rows, cols = heads[keep], rows[keep], cols[keep]
    order = np.lexsort((cols, rows, heads))
    heads, rows, cols = heads[order], rows[order], cols[order]
    key = (heads * L + rows) * max(L, 1) + cols
    if key.size:
        uniq = np.concatenate([[True], key[1:] != key[:-1]])
        heads, rows, cols = heads[uniq], rows[uniq], cols[uniq]
    counts = np.bincount(heads * L + rows, minlength=H * L).reshape(H, L)
    flat = np.concatenate([[0], np.cumsum(counts.ravel())]).astype(np.int64)
    indptr = np.empty((H, L + 1), dtype=np.int64)
    indptr[:, :L] = flat[:-1].reshape(H, L)
    indptr[:, L] = flat[1:].reshape(H, L)[:, -1] if L else flat[:-1].reshape(H, 1)[:, 0]
    return Support(indptr, cols.astype(np.int64), int(L))


@dataclass(frozen=True, eq=False)
class BlockPattern:
    """A block-sparse support: ``b x b`` blocks of ``L x L`` marked True are exact.

    Parameters
    ----------
    blocks : bool array, shape (n_b, n_b) or (..., n_b, n_b)
        Selected blocks; a 2-D pattern is shared by every head.
    block_size : int
        ``b`` (a power of two); ``n_b = ceil(L / b)``, the last block may be partial.
    """

    blocks: Any
    block_size: int

    def __post_init__(self) -> None:
        check_block_size(self.block_size)
        blocks = np.asarray(self.blocks)
        if blocks.dtype != bool or blocks.ndim < 2 or blocks.shape[-1] != blocks.shape[-2]:
            raise ValueError(
                f"blocks must be a boolean array of shape (..., n_b, n_b), got "
                f"dtype {blocks.dtype} and shape {blocks.shape}"
            )
        object.__setattr__(self, "blocks", blocks)

    @classmethod
    def from_selection(cls, selection: BlockSelection, block_size: int) -> BlockPattern:
        """The pattern of an MRA-2 :class:`~structattn.mra.BlockSelection`."""
        if not isinstance(selection, BlockSelection):
            raise TypeError(
                f"selection must be a BlockSelection, got {type(selection).__name__}")
        return cls(selection.mask, block_size)

    def to_support(self, length: int) -> Support:
        """Token-level CSR of the pattern for sequences of ``length`` tokens."""
        b = int(self.block_size)
        n = num_block_rows(length, b)
        if self.blocks.shape[-1] != n:
            raise ValueError(
                f"blocks has {self.blocks.shape[-1]} block rows but L={length} with "
                f"block_size={b} needs n_b={n}")
        blocks = self.blocks.reshape(-1, n, n)
        H = blocks.shape[0]
        h, bi, bj = np.nonzero(blocks)
        t = np.arange(b)
        i = (bi[:, None, None] * b + t[None, :, None]) + 0 * t[None, None, :]
        j = (bj[:, None, None] * b + t[None, None, :]) + 0 * t[None, :, None]
        h = np.broadcast_to(h[:, None, None], i.shape)
        keep = (i < length) & (j < length)
        return _from_pairs(h.ravel(), i.ravel(), j.ravel(), keep.ravel(), H, length)


def mra_support(q: Any, k: Any, *, block_size: int = 32, blocks_per_row: int = 4,
                prior_diag: int = 0) -> BlockPattern:
    """MRA-2's adaptive block selection as a support (one pattern per head).

    Coarse scores ``Ŝ = Q̄ K̄ᵀ`` of block means (padded tokens excluded) rank the
    ``n_b²`` blocks; :func:`~structattn.mra.select_blocks` keeps ``n_b·blocks_per_row``
    (coverage of every block row first, deterministic, nested in the budget).

    Parameters
    ----------
    q, k : array, shape (..., L, d)
    block_size : int, default 32
    blocks_per_row : int, default 4
        Mean number of exact blocks per block row, in ``[1, n_b]``.
    prior_diag : int, default 0
        Always keep the band ``|I - J| <= prior_diag // 2`` (after coverage).

    Returns
    -------
    BlockPattern
        With ``blocks`` of shape ``(*batch, n_b, n_b)``.  Cost ``O(L·d + n_b²·d)``.
    """
    b = check_block_size(block_size)
    qh, kh = to_numpy(q).astype(np.float64), to_numpy(k).astype(np.float64)
    batch, L, d = qh.shape[:-2], qh.shape[-2], qh.shape[-1]
    n = num_block_rows(L, b)
    r = check_int(blocks_per_row, "blocks_per_row", minimum=1)
    if r > n:
        raise ValueError(f"blocks_per_row must be <= n_b = {n} (L={L}, block_size={b}), "
                         f"got {r}")

    def means(x: np.ndarray) -> np.ndarray:
        pad = np.zeros((*batch, n * b - L, d))
        xb = np.concatenate([x, pad], axis=-2).reshape(*batch, n, b, d).sum(axis=-2)
        counts = np.minimum(b, L - np.arange(n) * b)
        return xb / counts[:, None]

    scores = means(qh) @ np.swapaxes(means(kh), -1, -2) / math.sqrt(d)
    sel = select_blocks(scores, n * r, prior_diag=prior_diag)
    return BlockPattern.from_selection(sel, b)


def lsh_support(q: Any, k: Any, keys_per_row: int, *, num_projections: int = 8,
                seed: Any = 0) -> Support:
    """Angular LSH support: each query attends the keys hashed next to it.

    Queries and keys (each normalized to unit length) are hashed by the same random
    rotation ``R`` (``d x num_projections``, Gaussian, from ``seed``) to the bucket
    ``argmax [xR, -xR]`` (angular LSH, ``2·num_projections`` buckets, Andoni et al. 2015
    as in Reformer).  Keys are sorted by (bucket, position); query ``i`` attends the
    ``keys_per_row`` keys of the sorted order centred on where its own bucket starts —
    its bucket-mates first, exactly ``keys_per_row`` keys per row (the budget is exact).

    Parameters
    ----------
    q, k : array, shape (..., L, d)
    keys_per_row : int
        ``r`` in ``[1, L]``.
    num_projections : int, default 8
    seed : int or numpy.random.Generator, default 0

    Returns
    -------
    Support
        One CSR per head, ``L·r`` pairs each.  Cost ``O(L·d·p + L log L)``.
    """
    rng = np.random.default_rng(seed)
    qh, kh = to_numpy(q).astype(np.float64), to_numpy(k).astype(np.float64)
    L, d = qh.shape[-2:]
    qh, kh = qh.reshape(-1, L, d), kh.reshape(-1, L, d)
    r = check_int(keys_per_row, "keys_per_row", minimum=1)
    if r > L:
        raise ValueError(f"keys_per_row must be <= L = {L}, got {r}")
    p = check_int(num_projections, "num_projections", minimum=1)
    R = rng.standard_normal((d, p))

    def bucket(x: np.ndarray) -> np.ndarray:
        x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-300)
        proj = x @ R
        return np.argmax(np.concatenate([proj, -proj], axis=-1), axis=-1)

    bq, bk = bucket(qh), bucket(kh)
    H = qh.shape[0]
    heads, rows, cols = [], [], []
    offs = np.arange(r) - r // 2
    for h in range(H):
        order = np.lexsort((np.arange(L), bk[h]))
        sorted_b = bk[h][order]
        lo = np.searchsorted(sorted_b, bq[h], side="left")
        hi = np.searchsorted(sorted_b, bq[h], side="right")
        centre = (lo + hi) // 2
        start = np.clip(centre - r // 2, 0, L - r)
        pos = start[:, None] + offs[None, :] + r // 2
        heads.append(np.full(L * r, h))
        rows.append(np.repeat(np.arange(L), r))
        cols.append(order[pos].ravel())
    heads_a, rows_a, cols_a = (np.concatenate(a) for a in (heads, rows, cols))
    return _from_pairs(heads_a, rows_a, cols_a, np.ones(heads_a.size, dtype=bool), H, L)


def as_support(support: Any, length: int, batch: int) -> Support:
    """Convert any accepted support to a :class:`Support` for ``length`` tokens.

    Accepted: :class:`Support`, :class:`~structattn.graphs.AttentionGraph`,
    :class:`BlockPattern`, boolean arrays ``(L, L)`` or ``(..., L, L)``, or ``None``
    (the empty support: pure kernel attention).

    Raises
    ------
    TypeError
        For any other type.
    ValueError
        If the support is built for another length or batch size.
    """
    if support is None:
        sup = Support(np.zeros((1, length + 1), dtype=np.int64), np.zeros(0, np.int64),
                      length)
    elif isinstance(support, Support):
        sup = support
    elif isinstance(support, AttentionGraph):
        sup = Support(support.indptr[None, :].copy(), support.indices.copy(),
                      support.num_nodes)
    elif isinstance(support, BlockPattern):
        sup = support.to_support(length)
    elif isinstance(support, BlockSelection):
        raise TypeError("a BlockSelection needs its block size: pass "
                        "BlockPattern.from_selection(selection, block_size)")
    elif (isinstance(support, np.ndarray) or is_torch(support)) and \
            to_numpy(support).dtype == bool:
        dense = to_numpy(support)
        if dense.ndim < 2:
            raise ValueError(f"a boolean support must be (..., L, L), got {dense.shape}")
        dense = dense.reshape(-1, *dense.shape[-2:])
        h, i, j = np.nonzero(dense)
        sup = _from_pairs(h, i, j, np.ones(h.size, dtype=bool), dense.shape[0],
                          dense.shape[-1])
    else:
        raise TypeError(
            "support must be an AttentionGraph, a BlockPattern, a Support, a boolean "
            f"(..., L, L) array or None, got {type(support).__name__}")
    if sup.length != length:
        raise ValueError(f"support is built for L={sup.length} tokens but the inputs have "
                         f"L={length}")
    if sup.num_heads not in (1, batch):
        raise ValueError(f"support holds {sup.num_heads} per-head patterns but the inputs "
                         f"have {batch} batch/head elements (expected 1 or {batch})")
    return sup

"""Block geometry, budgets and the deterministic, nested block selection of MRA-2 (mra.md §2.1).

The coarse (block-mean) scores ``Ŝ = Q̄ K̄ᵀ/√d`` of one head form an ``n_b x n_b``
matrix; the budget ``k`` is the number of ``b x b`` blocks that are computed exactly.
:func:`select_blocks` ranks all ``n_b²`` blocks by a fixed total order and keeps the
first ``k``, so that

* the selection is deterministic (no dependence on a sort's stability or a GPU's
  scheduling: ties are broken by the flat block index ``I·n_b + J``, ascending);
* selections are nested in ``k`` (invariant E2): the top-``k`` set is a prefix of one
  ranking, so ``k₁ < k₂`` implies ``selected(k₁) ⊂ selected(k₂)``;
* every block row with at least one valid token gets a block as soon as ``k`` is at
  least the number of such rows (coverage, invariant E4), ties included.

The total order, from first to last (within a tier: score descending, then flat index
ascending):

1. *coverage* — the best block of every valid block row (its first argmax of ``Ŝ_I·``
   among valid block columns);
2. *priors* — the first ``prior_first`` block rows and block columns and the band
   ``|I - J| <= prior_diag // 2`` (valid pairs only);
3. every other valid pair, ranked by ``Ŝ_IJ - max_J Ŝ_IJ`` (the official ranking);
4. pairs with a fully padded block row or column (they carry no weight).

The official code ranks priors above everything with a ``+5e3`` bonus and relies on the
row-best score being 0 for coverage ("ties aside"); putting coverage first makes E4 hold
without exception and changes nothing when there are no priors and no ties.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._array import to_numpy

__all__ = [
    "BlockSelection",
    "check_block_size",
    "num_block_rows",
    "resolve_budget",
    "select_blocks",
    "select_flat_torch",
]


def check_block_size(block_size: Any) -> int:
    """Validate ``block_size``: a positive power of two (1, 2, 4, …, 32, 64, …).

    Raises
    ------
    TypeError
        If it is not an integer.
    ValueError
        If it is not a positive power of two.
    """
    if isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral):
        raise TypeError(f"block_size must be an int (a power of two), got {block_size!r}")
    b = int(block_size)
    if b < 1 or b & (b - 1):
        raise ValueError(
            f"block_size must be a positive power of two (e.g. 16, 32, 64), got {b}"
        )
    return b


def num_block_rows(length: int, block_size: int) -> int:
    """``n_b = ceil(L / b)``: block rows after padding ``L`` up to a multiple of ``b``."""
    return -(-int(length) // int(block_size))


def resolve_budget(
    n_blocks: int, blocks_per_row: Any = 8, num_blocks: Any = None, *, length: int | None = None,
    block_size: int | None = None,
) -> int:
    """The total number ``k`` of exactly computed blocks per head.

    ``num_blocks`` (when given) is the total budget and must lie in ``[1, n_b²]``;
    otherwise ``k = n_b · blocks_per_row`` with ``blocks_per_row`` in ``[1, n_b]``.

    Raises
    ------
    TypeError
        If a budget is not an integer.
    ValueError
        If the budget is below one block or above the number of blocks.
    """
    where = ""
    if length is not None and block_size is not None:
        where = f" (L={length}, block_size={block_size}: n_b={n_blocks} block rows)"
    if num_blocks is not None:
        if isinstance(num_blocks, bool) or not isinstance(num_blocks, numbers.Integral):
            raise TypeError(f"num_blocks must be an int or None, got {num_blocks!r}")
        k = int(num_blocks)
        if not 1 <= k <= n_blocks * n_blocks:
            raise ValueError(
                f"num_blocks must be between 1 and the number of blocks n_b**2 = "
                f"{n_blocks * n_blocks}{where}, got {k}"
            )
        return k
    if isinstance(blocks_per_row, bool) or not isinstance(blocks_per_row, numbers.Integral):
        raise TypeError(f"blocks_per_row must be an int, got {blocks_per_row!r}")
    r = int(blocks_per_row)
    if not 1 <= r <= n_blocks:
        raise ValueError(
            f"blocks_per_row must be between 1 and the number of block columns "
            f"n_b = {n_blocks}{where}, got {r}; use a smaller blocks_per_row or block_size"
        )
    return r * n_blocks


@dataclass(frozen=True, eq=False)
class BlockSelection:
    """The selected blocks of every head, in BSR (block compressed sparse row) order.

    Attributes
    ----------
    indptr : numpy.ndarray of int64, shape ``(*batch, n_b + 1)``
        Block row ``I`` owns ``indices[..., indptr[..., I]:indptr[..., I + 1]]``.
    indices : numpy.ndarray of int64, shape ``(*batch, k)``
        Block column of each selected block, ascending within a block row.
    num_block_rows : int
        ``n_b``.

    Notes
    -----
    Every head holds exactly ``k`` blocks (the ranking of :func:`select_blocks` is a total
    order, so ties never change the count).  The same object can be passed to
    :func:`~structattn.mra.mra_attention` and
    :func:`~structattn.mra.mra_dense_reference` (``selection=``) to compare backends or
    references on an identical selection.
    """

    indptr: np.ndarray
    indices: np.ndarray
    num_block_rows: int

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """Leading (batch, head) dimensions."""
        return tuple(self.indices.shape[:-1])

    @property
    def num_blocks(self) -> int:
        """``k``: selected blocks per head."""
        return int(self.indices.shape[-1])

    @property
    def rows(self) -> np.ndarray:
        """Block row of each selected block, shape ``(*batch, k)`` (non-decreasing)."""
        n = self.num_block_rows
        counts = np.diff(self.indptr.reshape(-1, n + 1), axis=-1)
        rows = np.stack([np.repeat(np.arange(n), c) for c in counts]) if counts.size else \
            np.zeros((0, self.num_blocks), dtype=np.int64)
        return rows.reshape(self.indices.shape).astype(np.int64)

    @property
    def mask(self) -> np.ndarray:
        """Dense selected-block mask ``M``, boolean, shape ``(*batch, n_b, n_b)``."""
        n = self.num_block_rows
        flat = (self.rows * n + self.indices).reshape(-1, self.num_blocks)
        out = np.zeros((flat.shape[0], n * n), dtype=bool)
        np.put_along_axis(out, flat, True, axis=-1)
        return out.reshape(*self.batch_shape, n, n)

    def flat(self) -> np.ndarray:
        """Flat block indices ``I·n_b + J`` (ascending), shape ``(*batch, k)``."""
        return self.rows * self.num_block_rows + self.indices


def _top_in_order(cand: np.ndarray, vals: np.ndarray, m: int) -> np.ndarray:
    """The ``m`` candidates first in (value descending, index ascending) order.

    ``cand`` ascending flat indices, ``vals`` their values; O(len) by a partition.
    """
    if m >= cand.size:
        return cand
    t = -np.partition(-vals, m - 1)[m - 1]  # the m-th largest value
    greater = cand[vals > t]
    ties = cand[vals == t]
    return np.concatenate([greater, ties[: m - greater.size]])


def _select_one(scores: np.ndarray, valid: np.ndarray, k: int, prior_first: int,
                prior_diag: int) -> np.ndarray:
    n = scores.shape[0]
    pair_valid = valid[:, None] & valid[None, :]
    s = np.where(pair_valid, scores, -np.inf)
    rowmax = s.max(axis=1)
    rank = np.where(pair_valid, s - np.where(np.isfinite(rowmax), rowmax, 0.0)[:, None],
                    scores)
    tier = np.where(pair_valid, 1, 0).astype(np.int8)
    if prior_first > 0 or prior_diag > 0:
        idx = np.arange(n)
        prior = (idx[:, None] < prior_first) | (idx[None, :] < prior_first)
        if prior_diag > 0:
            prior |= np.abs(idx[:, None] - idx[None, :]) <= prior_diag // 2
        tier[prior & pair_valid] = 2
    rows_valid = np.flatnonzero(valid)
    if rows_valid.size:
        best = np.argmax(s[rows_valid], axis=1)  # first argmax: lowest column on ties
        tier[rows_valid, best] = 3
    tier, rank = tier.ravel(), rank.ravel()
    chosen = []
    remaining = k
    for t in (3, 2, 1, 0):
        if remaining == 0:
            break
        cand = np.flatnonzero(tier == t)
        if cand.size == 0:
            continue
        top = _top_in_order(cand, rank[cand], remaining)
        chosen.append(top)
        remaining -= top.size
    return np.sort(np.concatenate(chosen))


def select_blocks(
    scores: Any,
    num_blocks: int,
    *,
    prior_first: int = 0,
    prior_diag: int = 0,
    block_valid: Any = None,
) -> BlockSelection:
    """Select ``num_blocks`` blocks per head from coarse scores (deterministic, nested).

    Parameters
    ----------
    scores : array, shape ``(*batch, n_b, n_b)``
        Coarse block scores ``Ŝ`` (numpy array or torch tensor; read as float64 on the
        host, no gradient).
    num_blocks : int
        ``k``, between 1 and ``n_b²``.
    prior_first : int, default 0
        Always refine (after coverage) the first ``prior_first`` block rows and columns.
    prior_diag : int, default 0
        Always refine (after coverage) the band ``|I - J| <= prior_diag // 2``.
    block_valid : array of bool, shape ``(*batch, n_b)``, optional
        False for block rows/columns without any valid (unpadded) token.

    Returns
    -------
    BlockSelection
        Exactly ``num_blocks`` blocks per head in BSR order.

    Raises
    ------
    ValueError
        On a non-square score matrix, a budget outside ``[1, n_b²]``, negative priors or a
        ``block_valid`` of the wrong shape.

    Notes
    -----
    The ranking is described in :mod:`structattn.mra.selection`.  Cost per head:
    ``O(n_b²)`` (a partition, no full sort).
    """
    s = _host_float64(scores, "scores")
    if s.ndim < 2 or s.shape[-1] != s.shape[-2]:
        raise ValueError(f"scores must have shape (..., n_b, n_b), got {s.shape}")
    n = s.shape[-1]
    k = resolve_budget(n, num_blocks=num_blocks)
    for name, val in (("prior_first", prior_first), ("prior_diag", prior_diag)):
        if isinstance(val, bool) or not isinstance(val, numbers.Integral) or val < 0:
            raise ValueError(f"{name} must be a non-negative int, got {val!r}")
    batch = s.shape[:-2]
    if block_valid is None:
        valid = np.ones((*batch, n), dtype=bool)
    else:
        valid = np.asarray(to_numpy(block_valid), dtype=bool)
        if valid.shape != (*batch, n):
            raise ValueError(
                f"block_valid must have shape {(*batch, n)} (scores.shape[:-1]), "
                f"got {valid.shape}"
            )
    flat_s = s.reshape(-1, n, n)
    flat_v = valid.reshape(-1, n)
    sel = np.empty((flat_s.shape[0], k), dtype=np.int64)
    for h in range(flat_s.shape[0]):
        sel[h] = _select_one(flat_s[h], flat_v[h], k, int(prior_first), int(prior_diag))
    rows, cols = sel // n, sel % n
    indptr = np.empty((flat_s.shape[0], n + 1), dtype=np.int64)
    for h in range(flat_s.shape[0]):
        indptr[h] = np.searchsorted(rows[h], np.arange(n + 1), side="left")
    return BlockSelection(indptr.reshape(*batch, n + 1), cols.reshape(*batch, k), n)


def _host_float64(x: Any, name: str) -> np.ndarray:
    a = np.asarray(to_numpy(x), dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or Inf values")
    return a


def select_flat_torch(scores: Any, block_valid: Any, num_blocks: int, prior_first: int = 0,
                      prior_diag: int = 0) -> Any:
    """The selection of :func:`select_blocks` computed on the scores' device (torch).

    Parameters
    ----------
    scores : torch.Tensor, shape ``(B, n_b, n_b)``
        Coarse block scores (read as float64, no gradient).
    block_valid : torch.Tensor of bool, shape ``(B, n_b)``, or None
        False for block rows/columns without any valid token.
    num_blocks : int
        ``k`` (already validated, ``1 <= k <= n_b²``).
    prior_first, prior_diag : int
        Validated priors (see :func:`select_blocks`).

    Returns
    -------
    torch.Tensor of int64, shape ``(B, k)``
        Flat block indices ``I·n_b + J``, ascending: the same blocks as
        :func:`select_blocks` (same float64 ranking, same total order).

    Notes
    -----
    Static shapes only, no host synchronization: the total order (tier descending, rank
    descending, flat index ascending) is two stable sorts of the ``n_b²`` blocks,
    ``O(n_b² log n_b)`` per head on the device.  Non-finite scores are not checked here
    (the inputs are checked under ``check_finite=True`` / ``structattn.debug()``).
    """
    import torch

    s64 = scores.detach().to(torch.float64)
    B, n = int(s64.shape[0]), int(s64.shape[-1])
    dev = s64.device
    if block_valid is None:
        valid = torch.ones((B, n), dtype=torch.bool, device=dev)
    else:
        valid = block_valid.to(device=dev, dtype=torch.bool)
    pair_valid = valid[:, :, None] & valid[:, None, :]
    neg = torch.full_like(s64, -np.inf)
    s = torch.where(pair_valid, s64, neg)
    rowmax = s.amax(dim=-1)
    rowmax = torch.where(torch.isfinite(rowmax), rowmax, torch.zeros_like(rowmax))
    rank = torch.where(pair_valid, s - rowmax[:, :, None], s64)
    tier = pair_valid.to(torch.int64)
    if prior_first > 0 or prior_diag > 0:
        idx = torch.arange(n, device=dev)
        prior = (idx[:, None] < prior_first) | (idx[None, :] < prior_first)
        if prior_diag > 0:
            prior = prior | ((idx[:, None] - idx[None, :]).abs() <= prior_diag // 2)
        tier = torch.where(prior[None] & pair_valid, torch.full_like(tier, 2), tier)
    best = torch.argmax(s, dim=-1)  # first argmax: lowest column on ties
    cover = (torch.arange(n, device=dev)[None, None, :] == best[:, :, None]) & valid[:, :, None]
    tier = torch.where(cover, torch.full_like(tier, 3), tier)
    order = torch.sort(rank.reshape(B, n * n), dim=-1, descending=True, stable=True).indices
    by_tier = torch.sort(tier.reshape(B, n * n).gather(-1, order), dim=-1, descending=True,
                         stable=True).indices
    chosen = order.gather(-1, by_tier)[:, :num_blocks]
    return torch.sort(chosen, dim=-1).values

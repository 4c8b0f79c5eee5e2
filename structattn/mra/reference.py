"""Dense O(L²) float64 reference of MRA-2 / MRA-2-s (mra.md §3.1).

Built independently of the fast path: the full score matrix ``S`` is formed, the coarse
scores ``Ŝ`` are the block means of ``S`` itself (not ``Q̄ K̄ᵀ``; their agreement is the
block-mean identity), the approximate kernel ``Ê`` is materialised with one global shift
per head, normalised and applied to ``V``.  It also returns the exact kernel and output
and the tree-projection oracle (mean of ``exp`` instead of ``exp`` of the mean on the
unselected blocks, mra.md §1.6 / §1.7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._array import is_torch, validate_attention_inputs
from .attention import _check_mode, _check_prior, _check_scale
from .selection import (
    BlockSelection,
    check_block_size,
    num_block_rows,
    resolve_budget,
    select_blocks,
)

__all__ = ["MRAReference", "block_mean", "mra_dense_reference"]


def block_mean(X: np.ndarray, block_size: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Means of ``X (..., n_b·b, n_b·b)`` over its ``b x b`` blocks, ``(..., n_b, n_b)``.

    With ``weights`` (same shape, 0/1) the weighted mean over the weighted entries (0 for
    a block with zero total weight).
    """
    b = int(block_size)
    *batch, R, C = X.shape
    shape = (*batch, R // b, b, C // b, b)
    if weights is None:
        return X.reshape(shape).mean(axis=(-3, -1))
    w = np.broadcast_to(weights, X.shape).reshape(shape)
    tot = w.sum(axis=(-3, -1))
    s = (X.reshape(shape) * w).sum(axis=(-3, -1))
    return np.where(tot > 0, s / np.where(tot > 0, tot, 1.0), 0.0)


def _expand(Y: np.ndarray, b: int) -> np.ndarray:
    return np.repeat(np.repeat(Y, b, axis=-2), b, axis=-1)


@dataclass(frozen=True, eq=False)
class MRAReference:
    """Dense float64 quantities of one MRA configuration (``L x L`` unless stated).

    Attributes
    ----------
    output : ndarray ``(*batch, L, d_v)``
        ``Ŷ = Â V``.
    matrix : ndarray ``(*batch, L, L)``
        ``Â = diag(Ê 1)⁻¹ Ê``.
    kernel : ndarray ``(*batch, L, L)``
        Unnormalised ``Ê`` with the global shift :attr:`shift`.
    exact_kernel : ndarray ``(*batch, L, L)``
        ``E = exp(S - shift)`` on valid pairs.
    exact_output : ndarray ``(*batch, L, d_v)``
        Exact (masked) softmax attention.
    tree_kernel : ndarray ``(*batch, L, L)``
        Tree projection of ``E``: block means of ``E`` on unselected blocks (``"full"``;
        zero in ``"sparse"``), exact entries on selected blocks.
    scores : ndarray ``(*batch, L, L)``
        ``S = Q Kᵀ · scale``.
    block_scores : ndarray ``(*batch, n_b, n_b)``
        Block means of ``S`` over valid pairs.
    selected : ndarray of bool ``(*batch, n_b, n_b)``
        ``M``.
    selection : BlockSelection
    shift : ndarray ``(*batch,)``
        Global shift per head (maximum valid score).
    """

    output: np.ndarray
    matrix: np.ndarray
    kernel: np.ndarray
    exact_kernel: np.ndarray
    exact_output: np.ndarray
    tree_kernel: np.ndarray
    scores: np.ndarray
    block_scores: np.ndarray
    selected: np.ndarray
    selection: BlockSelection
    shift: np.ndarray


def _normalise(E: np.ndarray) -> np.ndarray:
    den = E.sum(axis=-1, keepdims=True)
    return np.where(den > 0, E / np.where(den > 0, den, 1.0), 0.0)


def mra_dense_reference(
    q: Any,
    k: Any,
    v: Any,
    *,
    block_size: int = 32,
    blocks_per_row: int = 8,
    num_blocks: int | None = None,
    mode: str = "full",
    prior_first: int = 0,
    prior_diag: int = 0,
    key_padding_mask: Any = None,
    scale: float | None = None,
    selection: BlockSelection | None = None,
) -> MRAReference:
    """Dense float64 MRA reference with every intermediate (for tests and studies).

    Parameters
    ----------
    q, k : array, shape (..., L, d)
    v : array, shape (..., L, d_v)
        numpy arrays or torch tensors (copied to float64 numpy).
    block_size : int, default 32
    blocks_per_row : int, default 8
    num_blocks : int, optional
    mode : {"full", "sparse"}, default "full"
    prior_first, prior_diag : int, default 0
    key_padding_mask : bool array, shape (..., L), optional
        True marks padding.
    scale : float, optional
    selection : BlockSelection, optional
        As in :func:`~structattn.mra.mra_attention`; a given selection is used as is,
        otherwise blocks are selected from the block means of ``S``.

    Returns
    -------
    MRAReference

    Notes
    -----
    Cost ``O(L² d)`` time and ``O(L²)`` memory per head.
    """
    q, k, v = (x.detach().cpu().numpy() if is_torch(x) else np.asarray(x) for x in (q, k, v))
    validate_attention_inputs(q, k, v)
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"MRA attention is self-attention: q and k must have the same length; got "
            f"q.shape={q.shape}, k.shape={k.shape}"
        )
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    b = check_block_size(block_size)
    mode = _check_mode(mode)
    pf, pd = _check_prior(prior_first, "prior_first"), _check_prior(prior_diag, "prior_diag")
    batch, L, d = q.shape[:-2], q.shape[-2], q.shape[-1]
    scl = _check_scale(scale, d)
    n = num_block_rows(L, b)
    Lp = n * b
    valid = np.ones((*batch, L), dtype=bool)
    if key_padding_mask is not None:
        m = key_padding_mask.detach().cpu().numpy() if is_torch(key_padding_mask) else \
            np.asarray(key_padding_mask)
        if m.dtype != np.bool_:
            raise TypeError(f"key_padding_mask must have dtype bool, got {m.dtype}")
        valid = ~np.broadcast_to(m, (*batch, L))
    pad = [(0, 0)] * len(batch)
    qp = np.pad(q, [*pad, (0, Lp - L), (0, 0)])
    kp = np.pad(k, [*pad, (0, Lp - L), (0, 0)])
    vp = np.pad(v, [*pad, (0, Lp - L), (0, 0)])
    vt = np.pad(valid, [*pad, (0, Lp - L)])
    pair = vt[..., :, None] & vt[..., None, :]
    S = np.einsum("...id,...jd->...ij", qp, kp) * scl
    S_hat = block_mean(S, b, pair.astype(np.float64))
    block_valid = vt.reshape(*batch, n, b).any(axis=-1)
    if selection is None:
        kk = resolve_budget(n, blocks_per_row, num_blocks, length=L, block_size=b)
        selection = select_blocks(S_hat, kk, prior_first=pf, prior_diag=pd,
                                  block_valid=block_valid)
    elif selection.num_block_rows != n or selection.batch_shape != tuple(batch):
        raise ValueError(
            f"selection is for batch {selection.batch_shape} and {selection.num_block_rows} "
            f"block rows; inputs have batch {tuple(batch)} and n_b = {n}"
        )
    M = selection.mask
    Mx = _expand(M, b)
    shift = np.where(pair, S, -np.inf).reshape(*batch, -1).max(axis=-1)
    shift = np.where(np.isfinite(shift), shift, 0.0)
    c = shift[..., None, None]
    E = np.where(pair, np.exp(np.where(pair, S, 0.0) - c), 0.0)
    if mode == "full":
        coarse = np.where(pair & ~Mx, np.exp(_expand(S_hat, b) - c), 0.0)
        E_blk = _expand(block_mean(E, b, pair.astype(np.float64)), b)
        tree = np.where(Mx, E, np.where(pair, E_blk, 0.0))
    else:
        coarse = np.zeros_like(E)
        tree = np.where(Mx, E, 0.0)
    E_hat = np.where(Mx, E, 0.0) + coarse
    A_hat = _normalise(E_hat)
    Y_hat = A_hat @ vp
    Y = _normalise(E) @ vp
    crop = (..., slice(0, L), slice(0, L))
    return MRAReference(
        output=Y_hat[..., :L, :], matrix=A_hat[crop], kernel=E_hat[crop],
        exact_kernel=E[crop], exact_output=Y[..., :L, :], tree_kernel=tree[crop],
        scores=S[crop], block_scores=S_hat, selected=M, selection=selection, shift=shift,
    )


"""torch CSR sparse softmax attention: gather + segment reduce, differentiable by autograd."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["sparse_attention", "sparse_attention_probs"]


def _edges(indptr: np.ndarray, indices: np.ndarray, batch: int, device: Any
           ) -> tuple[Any, Any]:
    """Row and column of every edge of every batch element, in the flattened
    ``(batch·N)`` node numbering (so gathers and scatters run along dimension 0)."""
    n = indptr.size - 1
    deg = np.diff(indptr)
    rows = np.repeat(np.arange(n, dtype=np.int64), deg)
    offset = (np.arange(batch, dtype=np.int64) * n)[:, None]
    return (torch.as_tensor((rows[None, :] + offset).reshape(-1), device=device),
            torch.as_tensor((indices[None, :].astype(np.int64) + offset).reshape(-1),
                            device=device))


def _segment_softmax(
    q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stabilized ``exp(s_e − m_row(e))`` per edge and the row normalizers.

    ``q, k (B·N, d)`` → ``e (B·nnz,)``, ``den (B·N,)``.  The row maxima are detached:
    softmax does not depend on the shift, so gradients stay exact.
    """
    M = q.shape[0]
    s = (q.index_select(0, rows) * k.index_select(0, cols)).sum(-1) * scale
    m = torch.full((M,), -torch.inf, dtype=s.dtype, device=s.device)
    m = m.scatter_reduce(0, rows, s.detach(), reduce="amax", include_self=True)
    e = torch.exp(s - m.index_select(0, rows))
    den = torch.zeros((M,), dtype=s.dtype, device=s.device).index_add(0, rows, e)
    return e, den


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    indptr: np.ndarray,
    indices: np.ndarray,
    scale: float,
) -> torch.Tensor:
    """Softmax attention restricted to a CSR graph (torch, autograd through every step).

    Parameters
    ----------
    q, k : torch.Tensor, shape (..., N, d)
    v : torch.Tensor, shape (..., N, d_v)
    indptr, indices : numpy.ndarray of int64
        A validated CSR graph on ``N`` tokens.
    scale : float
        Score scale.

    Returns
    -------
    torch.Tensor, shape (..., N, d_v)
        Zeros for empty rows (no NaN, finite gradients).

    Notes
    -----
    Gathers ``K[indices]`` and ``V[indices]`` (``O(nnz·(d + d_v))`` memory per batch
    element), segment max by ``scatter_reduce(amax)``, segment sums by ``index_add``;
    time ``O(nnz·(d + d_v))``.  The backward pass is the autograd of these ops
    (scatter-add for ``dK``, ``dV``).
    """
    batch = q.shape[:-2]
    N, d = q.shape[-2:]
    dv = v.shape[-1]
    qf, kf, vf = q.reshape(-1, d), k.reshape(-1, d), v.reshape(-1, dv)
    rows, cols = _edges(indptr, indices, qf.shape[0] // max(N, 1), q.device)
    e, den = _segment_softmax(qf, kf, rows, cols, scale)
    num = torch.zeros_like(vf).index_add(0, rows, e[:, None] * vf.index_select(0, cols))
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return (num / safe[:, None]).reshape(*batch, N, dv)


def sparse_attention_probs(
    q: torch.Tensor, k: torch.Tensor, indptr: np.ndarray, indices: np.ndarray, scale: float
) -> torch.Tensor:
    """Attention probabilities of every stored edge, shape ``(..., nnz)`` (CSR order)."""
    batch = q.shape[:-2]
    N, d = q.shape[-2:]
    qf, kf = q.reshape(-1, d), k.reshape(-1, d)
    rows, cols = _edges(indptr, indices, qf.shape[0] // max(N, 1), q.device)
    e, den = _segment_softmax(qf, kf, rows, cols, scale)
    return (e / den.index_select(0, rows)).reshape(*batch, indices.size)

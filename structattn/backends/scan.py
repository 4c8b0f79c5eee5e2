"""Chunked causal scan written once against the array API (numpy and torch).

This is the math core of causal (and decayed-causal) masked kernel attention.  The numpy
backend calls it directly; the torch backend wraps it in a custom autograd Function
(:mod:`structattn.backends.torch.causal`) whose backward pass is three more scans, so
neither direction stores per-position ``m x d_v`` states.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import as_like, is_torch, namespace

__all__ = ["DEFAULT_CHUNK_SIZE", "causal_masked_matmul"]

#: Default chunk length of the scan (quadratic work inside a chunk, carried state across).
DEFAULT_CHUNK_SIZE = 128


def _decay_tables(gamma: float, exclusive: bool, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Intra-chunk mask ``D[t, s] = gamma**(t-s) [s <= t]`` and powers ``gamma**0..c``."""
    idx = np.arange(c)
    diff = idx[:, None] - idx[None, :]
    keep = diff > 0 if exclusive else diff >= 0
    with np.errstate(under="ignore"):
        decay = np.where(keep, float(gamma) ** np.maximum(diff, 0), 0.0)
        powers = float(gamma) ** np.arange(c + 1, dtype=np.float64)
    return decay, powers


def _torch_tables(gamma: float, exclusive: bool, c: int, like: Any) -> tuple[Any, Any, Any]:
    """The tables of :func:`_decay_tables` built on ``like``'s device with torch ops.

    No numpy and no host → device copy: traceable by ``torch.compile`` and free of
    transfers on a GPU.  Powers are formed in float64 and rounded once, as on numpy.
    """
    import torch

    idx = torch.arange(c, device=like.device, dtype=torch.float64)
    diff = idx[:, None] - idx[None, :]
    keep = diff > 0 if exclusive else diff >= 0
    g = torch.tensor(gamma, dtype=torch.float64, device=like.device)
    decay = torch.where(keep, torch.pow(g, diff.clamp(min=0)), torch.zeros_like(diff))
    powers = torch.pow(g, torch.arange(c + 1, device=like.device, dtype=torch.float64))
    w_in = powers[1 : c + 1, None]
    w_out = torch.flip(powers[:c], dims=(0,))[:, None]
    return decay.to(like.dtype), w_in.to(like.dtype), w_out.to(like.dtype)


def causal_masked_matmul(
    A: Any,
    B: Any,
    V: Any,
    *,
    gamma: float = 1.0,
    exclusive: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Any:
    """``(M ⊙ A Bᵀ) V`` for the (decayed) causal mask by a chunked scan.

    ``M[i, j] = gamma**(i - j)`` for ``j <= i`` (``j < i`` when ``exclusive``), else 0.

    Parameters
    ----------
    A : array, shape (..., L, m)
        Query-side factor (feature map of the queries).
    B : array, shape (..., L, m)
        Key-side factor (feature map of the keys).
    V : array, shape (..., L, d_v)
        Values.  Leading dimensions of ``A``, ``B``, ``V`` must be equal.
    gamma : float
        Decay in (0, 1]; 1 is the plain causal mask.
    exclusive : bool
        Exclude the diagonal.
    chunk_size : int
        Chunk length ``C``.

    Returns
    -------
    array, shape (..., L, d_v)

    Notes
    -----
    Time ``O(L·C·(m + d_v) + L·m·d_v)``; extra memory ``O(C² + C·(m + d_v) + m·d_v)``
    per batch element: one carried ``m x d_v`` state, never one per position.
    """
    xp = namespace(A, B, V)
    L = A.shape[-2]
    C = max(1, min(int(chunk_size), L))
    plain = float(gamma) == 1.0
    if is_torch(A):
        decay, w_in, w_out = _torch_tables(float(gamma), bool(exclusive), C, A)
    else:
        decay_np, powers_np = _decay_tables(gamma, exclusive, C)
        decay = as_like(decay_np, A)
        w_in = as_like(powers_np[1 : C + 1, None], A)  # gamma**(t+1): state -> row t
        w_out = as_like(powers_np[C - 1 :: -1, None], B)  # gamma**(C-1-t): row -> chunk end
    state = None
    outs = []
    for s in range(0, L, C):
        e = min(s + C, L)
        c = e - s
        a, b, v = A[..., s:e, :], B[..., s:e, :], V[..., s:e, :]
        scores = a @ xp.matrix_transpose(b)
        y = (scores * decay[:c, :c]) @ v
        if state is not None:
            a_in = a if plain else a * w_in[:c]
            y = y + a_in @ state
        if e < L:  # carry the state to the next chunk
            b_out = b if plain else b * w_out[C - c :]
            contrib = xp.matrix_transpose(b_out) @ v
            if state is None:
                state = contrib
            else:
                state = contrib + (state if plain else state * float(gamma) ** c)
        outs.append(y)
    if len(outs) == 1:
        return outs[0]
    return xp.concat(outs, axis=-2)



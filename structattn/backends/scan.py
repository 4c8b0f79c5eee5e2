"""Chunked causal scan written once against the array API (numpy and torch).

This is the math core of causal (and decayed-causal) masked kernel attention.  The numpy
and numba backends call it directly on numpy arrays (its products are batched BLAS
GEMMs); the torch backend wraps it in a custom autograd Function
(:mod:`structattn.backends.torch.causal`) whose backward pass is three more scans, so
neither direction stores per-position ``m x d_v`` states.

Algorithm
---------
The sequence is cut into chunks of ``C`` tokens (the last one zero-padded to ``C``).
For chunk ``k`` with rows ``A_k``, ``B_k``, ``V_k`` (``C x m``, ``C x m``, ``C x d_v``)::

    Y_k   = ((A_k B_kᵀ) ⊙ D) V_k  +  (w_in ⊙ A_k) S_k          (intra + inter)
    S_k+1 = gamma**C S_k  +  (w_out ⊙ B_k)ᵀ V_k                 (carried m x d_v state)

with ``D[t, s] = gamma**(t-s) [s <= t]`` (``s < t`` when exclusive), ``w_in[t] =
gamma**(t+1)`` and ``w_out[s] = gamma**(C-1-s)``: the decay enters as per-chunk scalings,
never as a growing power.  Chunks are processed in groups (a few thousand tokens each):
inside a group all intra-chunk products and state contributions are *batched* GEMMs
over the group's chunks, and only the ``m x d_v`` state recursion is a loop over chunks.

Prefix consistency
------------------
Every chunk — the zero-padded last one included — goes through GEMMs of the same shapes
(``C x m @ m x C``, ``C x C @ C x d_v``, ``C x m @ m x d_v``, ``m x C @ C x d_v``), and
group boundaries do not depend on ``L``.  Row ``i`` of the output is therefore *bit for
bit* the same whether the inputs stop at row ``i`` or go on, for every length ``>= C``
(lengths below ``C`` use one chunk of their own length: the same values up to rounding).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._array import as_like, is_torch, namespace
from .._validate import check_int

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "GROUP_TOKENS",
    "causal_masked_matmul",
    "choose_chunk_size",
]

#: Largest chunk the cost model picks (and the old fixed default).
DEFAULT_CHUNK_SIZE = 128

#: Tokens per group of chunks: bounds the batched temporaries of one step.
GROUP_TOKENS = 4096

# Cost-model constants (see choose_chunk_size): the fixed cost of one chunk (kernel and
# BLAS call overheads, ~1 µs) in GEMM flops, and the flops a GEMM does in the time one
# byte crosses the memory bus (~100 GFLOP/s small-GEMM speed / ~25 GB/s on 2 cores).
_CHUNK_OVERHEAD_FLOPS = 1.0e5
_FLOPS_PER_BYTE = 4.0
_MIN_CHUNK = 16


def choose_chunk_size(m: int, d_v: int, itemsize: int = 4) -> int:
    """Chunk length ``C`` of the scan from a small cost model (independent of ``L``).

    Per token the scan does ``2·C·(m + d_v)`` flops inside its chunk (score block and
    masked product, half of them on masked-out zeros) and ``4·m·d_v`` on the state
    (contribution and read-out, independent of ``C``); per chunk it pays a fixed cost
    ``c0 + 3·m·d_v·itemsize·r`` — kernel and BLAS call overheads (``c0 = 1e5`` flops,
    about 1 µs) plus the state recursion's read-modify-write of ``m x d_v`` values, ``r
    = 4`` being the flops a small GEMM does per byte of memory traffic (~100 GFLOP/s
    against ~25 GB/s on the 2-core development machine) — shared by its ``C`` tokens.
    The time per token, ``2·C·(m + d_v) + overhead / C`` (in GEMM flops), is smallest at

        ``C* = sqrt(overhead / (2·(m + d_v)))``

    which is rounded to a power of two (in log scale) and clipped to ``[16, 128]``
    (below 16 the GEMMs are too small to run near peak; above 128 the wasted masked
    half of the score block dominates).  For ``m = 64``, ``d_v = 65`` (values plus the
    normalizer column): ``C* ≈ 34``, so ``C = 32`` in float32 and float64 — measured in
    one process on 2 cores, numba, ``8 x 16384``: C = 32 46 ms, 64 50 ms, 16 54 ms,
    128 65 ms (minimum of 7 interleaved repeats, other jobs running).

    Parameters
    ----------
    m : int
        Feature dimension of ``A`` and ``B``.
    d_v : int
        Value dimension.
    itemsize : int
        Bytes per element (4 for float32, 8 for float64).

    Returns
    -------
    int
        A power of two in ``[16, 128]``.  It does not depend on ``L``, so that the same
        ``C`` (and bit-identical rows) serve every prefix of a sequence.
    """
    overhead = _CHUNK_OVERHEAD_FLOPS + 3.0 * m * d_v * itemsize * _FLOPS_PER_BYTE
    c_star = math.sqrt(overhead / (2.0 * max(1, m + d_v)))
    c = 2 ** round(math.log2(max(c_star, 1.0)))
    return int(min(DEFAULT_CHUNK_SIZE, max(_MIN_CHUNK, c)))


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


def _tables(gamma: float, exclusive: bool, c: int, like: Any) -> tuple[Any, Any, Any]:
    """``D`` (c x c), ``w_in`` (c x 1) and ``w_out`` (c x 1) in ``like``'s kind and dtype."""
    if is_torch(like):
        return _torch_tables(gamma, exclusive, c, like)
    decay, powers = _decay_tables(gamma, exclusive, c)
    return (as_like(decay, like), as_like(powers[1 : c + 1, None], like),
            as_like(powers[c - 1 :: -1, None], like))


def _resolve_chunk(chunk_size: int | None, L: int, m: int, d_v: int, itemsize: int) -> int:
    """``C``: the cost model's (never dependent on ``L``: a sequence shorter than ``C`` is
    one zero-padded chunk, so that every prefix of a sequence is computed with the same
    GEMM shapes and rounds identically), or ``chunk_size`` (validated; one chunk of
    length ``L`` when ``chunk_size >= L``)."""
    if chunk_size is None:
        return choose_chunk_size(m, d_v, itemsize)
    return max(1, min(check_int(chunk_size, "chunk_size", minimum=1), L))


def _group_chunks(C: int, m: int, d_v: int) -> int:
    """Chunks per group: the group's temporaries stay within ``~GROUP_TOKENS·(m + d_v)``."""
    per_chunk = C * C + m * d_v + C * (m + d_v)
    return max(1, (GROUP_TOKENS * (m + d_v)) // per_chunk)


def causal_masked_matmul(
    A: Any,
    B: Any,
    V: Any,
    *,
    gamma: float = 1.0,
    exclusive: bool = False,
    chunk_size: int | None = None,
    normalizer: bool = False,
) -> Any:
    """``(M ⊙ A Bᵀ) V`` for the (decayed) causal mask by a chunked GEMM scan.

    ``M[i, j] = gamma**(i - j)`` for ``j <= i`` (``j < i`` when ``exclusive``), else 0.

    Parameters
    ----------
    A : array, shape (..., L, m)
        Query-side factor (feature map of the queries).
    B : array, shape (..., L, m)
        Key-side factor (feature map of the keys).
    V : array, shape (..., L, d_v)
        Values.  Leading dimensions of ``A``, ``B``, ``V`` broadcast.
    gamma : float
        Decay in (0, 1]; 1 is the plain causal mask.
    exclusive : bool
        Exclude the diagonal.
    chunk_size : int or None
        Chunk length ``C``; None picks it by :func:`choose_chunk_size` (independent of
        ``L``; a shorter sequence is one zero-padded chunk, so rows are bit-identical
        for every prefix length).  An explicit ``C >= L`` means one chunk of length
        ``L``.
    normalizer : bool
        Also return the normalizer ``(M ⊙ A Bᵀ) 1``: the product with ``[V | 1]``, the
        ones column appended per group of chunks (never as an ``(..., L, d_v + 1)``
        copy of ``V``).

    Returns
    -------
    array, shape (..., L, d_v)
        Or, with ``normalizer``, ``(num (..., L, d_v), den (..., L, 1))``: bit for bit
        the columns of the product with ``[V | 1]``.

    Notes
    -----
    Flops ``2·L·C·(m + d_v)`` (intra-chunk) ``+ 4·L·m·d_v`` (state), all in batched
    GEMMs; extra memory ``O(min(L, GROUP_TOKENS)·(m + d_v) + C² + m·d_v)`` per batch
    element besides the output: one carried ``m x d_v`` state, never one per position.
    Row ``i`` is bit-for-bit independent of the rows after it (see the module notes).
    """
    xp = namespace(A, B, V)
    batch = tuple(np.broadcast_shapes(tuple(A.shape[:-2]), tuple(B.shape[:-2]),
                                      tuple(V.shape[:-2])))
    L, m = A.shape[-2], A.shape[-1]
    dv = V.shape[-1] + (1 if normalizer else 0)  # the width of the product's values
    A, B, V = (xp.broadcast_to(x, (*batch, *x.shape[-2:])) for x in (A, B, V))
    itemsize = 8 if "64" in str(A.dtype) else 4
    C = _resolve_chunk(chunk_size, L, m, dv, itemsize)
    nc = -(-L // C)
    pad = nc * C - L
    if pad:
        def _pad(x: Any) -> Any:
            z = xp.zeros_like(x[..., :1, :])
            return xp.concat([x, xp.broadcast_to(z, (*batch, pad, x.shape[-1]))], axis=-2)

        A, B, V = _pad(A), _pad(B), _pad(V)
    A4 = xp.reshape(A, (*batch, nc, C, m))
    B4 = xp.reshape(B, (*batch, nc, C, m))
    V4 = xp.reshape(V, (*batch, nc, C, V.shape[-1]))
    plain = float(gamma) == 1.0
    decay, w_in, w_out = _tables(float(gamma), bool(exclusive), C, A)
    g_chunk = float(gamma) ** C
    G = _group_chunks(C, m, dv)
    state = None
    outs = []
    for g0 in range(0, nc, G):
        g1 = min(g0 + G, nc)
        a, b, v = A4[..., g0:g1, :, :], B4[..., g0:g1, :, :], V4[..., g0:g1, :, :]
        if is_torch(a):  # one copy of the group's slices, not one per batched matmul
            a, b = a.contiguous(), b.contiguous()
            v = v if normalizer else v.contiguous()
        if normalizer:  # [V | 1] for this group only (padded rows meet zero factors)
            v = xp.concat([v, xp.ones_like(v[..., :1])], axis=-1)
        bt = xp.matrix_transpose(b)
        y = ((a @ bt) * decay) @ v  # intra-chunk: batched GEMMs over the group's chunks
        contrib = xp.matrix_transpose(b if plain else b * w_out) @ v  # (..., G, m, dv)
        if state is None:
            state = xp.zeros_like(contrib[..., 0, :, :])
        prev = []
        for k in range(g1 - g0):  # the state recursion: S_{k+1} = gamma**C S_k + contrib_k
            prev.append(state)
            state = contrib[..., k, :, :] + (state if plain else state * g_chunk)
        S = xp.stack(prev, axis=-3)  # the state entering each chunk, (..., G, m, dv)
        y = y + (a if plain else a * w_in) @ S
        outs.append(xp.reshape(y, (*batch, (g1 - g0) * C, dv)))
    if normalizer:  # the columns of each group apart: one concat per output
        nums = [y[..., :-1] for y in outs]
        dens = [y[..., -1:] for y in outs]
        num = nums[0] if len(nums) == 1 else xp.concat(nums, axis=-2)
        den = dens[0] if len(dens) == 1 else xp.concat(dens, axis=-2)
        return (num[..., :L, :], den[..., :L, :]) if pad else (num, den)
    out = outs[0] if len(outs) == 1 else xp.concat(outs, axis=-2)
    return out[..., :L, :] if pad else out

"""MRA block layout: padding, blocking, block means, coarse scores, selection forms.

Internal to :mod:`structattn.mra` (one job: turn ``(q, k, v, mask)`` into the padded,
blocked :class:`_Blocks` of one call and express a selection as flat ids / masks).
Shapes: ``B = prod(batch)``, ``n_b = ceil(L / b)`` block rows, ``b`` the block size.
Cost ``O(L d + n_b² d)`` per head (block sums and the coarse score product).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from .._array import as_like, index_like, is_torch, namespace
from .selection import num_block_rows


def _key_mask(key_mask: Any, key_padding_mask: Any, where: str) -> tuple[Any, bool]:
    """One boolean mask and its convention: ``(mask, True)`` when True = attend.

    ``key_mask`` (True = real token, the package convention) is preferred;
    ``key_padding_mask`` (True = padding, as in ``torch.nn.MultiheadAttention``) still
    works with a ``DeprecationWarning``.
    """
    if key_padding_mask is None:
        return key_mask, True
    if key_mask is not None:
        raise TypeError(f"{where}: pass key_mask= only (key_padding_mask= is deprecated)")
    warnings.warn(
        f"{where}: key_padding_mask= (True = padding) is deprecated; pass "
        "key_mask=~key_padding_mask (True = attend, the convention of every structattn mask)",
        DeprecationWarning,
        stacklevel=4,
    )
    return key_padding_mask, False


def _valid_tokens(key_padding_mask: Any, q: Any, batch: tuple[int, ...], L: int,
                  attend: bool = False) -> Any:
    """Boolean ``(*batch, L)`` array, True for real tokens (same kind/device as ``q``).

    ``attend=True``: the given mask is already True = real token (``key_mask``).
    """
    if key_padding_mask is None:
        return None
    m = key_padding_mask
    name = "key_mask" if attend else "key_padding_mask"
    conv = "True = attend" if attend else "True = padding"
    if is_torch(q):
        import torch

        if not isinstance(m, torch.Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor for torch inputs, got "
                f"{type(m).__name__}"
            )
        if m.dtype != torch.bool:
            raise TypeError(
                f"{name} must have dtype bool ({conv}), got {m.dtype}"
            )
        m = m.to(q.device)
    else:
        if not isinstance(m, np.ndarray):
            raise TypeError(
                f"{name} must be a numpy.ndarray for numpy inputs, got "
                f"{type(m).__name__}"
            )
        if m.dtype != np.bool_:
            raise TypeError(
                f"{name} must have dtype bool ({conv}), got {m.dtype}"
            )
    shape = tuple(m.shape)
    target = (*batch, L)
    try:
        ok = len(shape) >= 1 and np.broadcast_shapes(shape, target) == target
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"{name} must have shape (*batch, L) = {target} or one that "
            f"broadcasts to it (e.g. (batch, 1, L) for (batch, heads, L, d) inputs); got "
            f"{shape}; L_q = L_k = {L} (self-attention: the mask pads queries and keys)"
        )
    xp = namespace(q)
    m = xp.broadcast_to(m, target)
    return m if attend else xp.logical_not(m)


# ------------------------------------------------------------------ block layout
#: OpenBLAS runs a gemm on one thread when ``m n k`` is below this (its
#: ``SMP_THRESHOLD_MIN * GEMM_MULTITHREAD_THRESHOLD``).
_BLAS_SERIAL_MNK = 262144


def _matmul(a: Any, b: Any) -> Any:
    """``a @ b`` for stacked ``(B, m, k) @ (B, k, n)``; numpy: single-threaded BLAS calls.

    The coarse products of MRA are small (``n_b x d x n_b`` per head, ``n_b = L / b``) but
    just above OpenBLAS's threading threshold; on a loaded machine a two-thread gemm of
    that size waits ~60 ms for its second thread (measured, docs/mra.rst).  For numpy
    input the product is therefore computed per head in row chunks that OpenBLAS keeps
    on the calling thread (same result up to summation order).  torch: plain ``@``.
    """
    if is_torch(a):
        return a @ b
    B, m, k = a.shape
    n = b.shape[-1]
    rows = max(1, (_BLAS_SERIAL_MNK - 1) // max(1, n * k))
    if rows >= m:
        return a @ b
    out = np.empty((B, m, n), dtype=np.result_type(a, b))
    for h in range(B):
        bh = np.ascontiguousarray(b[h])
        for i in range(0, m, rows):
            np.matmul(a[h, i:i + rows], bh, out=out[h, i:i + rows])
    return out


@dataclass(frozen=True, eq=False)
class _Blocks:
    """Padded, flattened, blocked inputs of one call (B = prod(batch))."""

    qb: Any  # (B, n_b, b, d), padded tokens zero
    kb: Any  # (B, n_b, b, d)
    vb: Any  # (B, n_b, b, d_v) or None
    valid: Any  # (B, n_b, b) bool
    counts: Any  # (B, n_b) valid tokens per block (q's dtype)
    scores: Any  # (B, n_b, n_b) coarse scores Ŝ
    vsum: Any  # (B, n_b, d_v) block sums of V, or None
    batch: tuple[int, ...]
    L: int
    b: int
    n: int
    scale: float
    masked: bool


def _block_sums(x: Any) -> Any:
    """Sums over the token axis of ``(B, n_b, b, d)`` blocks, ``(B, n_b, d)``.

    numpy: ``1_bᵀ X`` per block (a batch of single-threaded gemv calls, ~3x faster than
    ``sum(axis=2)``, which walks the ``b`` rows with short inner loops); torch: ``sum``.
    """
    if is_torch(x):
        return x.sum(dim=2)
    ones = np.ones((1, x.shape[2]), dtype=x.dtype)
    return (ones @ x)[:, :, 0, :]


def _blocks(q: Any, k: Any, v: Any, valid_tokens: Any, b: int, scale: float) -> _Blocks:
    xp = namespace(q)
    batch = tuple(q.shape[:-2])
    L, d = int(q.shape[-2]), int(q.shape[-1])
    B = math.prod(batch)
    n = num_block_rows(L, b)
    Lp = n * b
    dev = array_api_compat.device(q)

    def flat_pad(x: Any) -> Any:
        x = xp.reshape(x, (B, L, int(x.shape[-1])))
        if Lp > L:
            pad = xp.zeros((B, Lp - L, int(x.shape[-1])), dtype=x.dtype, device=dev)
            x = xp.concat([x, pad], axis=1)
        return x

    if valid_tokens is None and Lp == L:
        valid = xp.ones((B, n, b), dtype=xp.bool, device=dev)
        masked = False
    else:
        if valid_tokens is None:
            vt = xp.ones((B, L), dtype=xp.bool, device=dev)
        else:
            vt = xp.reshape(valid_tokens, (B, L))
        if Lp > L:
            vt = xp.concat([vt, xp.zeros((B, Lp - L), dtype=xp.bool, device=dev)], axis=1)
        valid = xp.reshape(vt, (B, n, b))
        masked = True
    w = xp.astype(valid, q.dtype)
    qb = xp.reshape(flat_pad(q), (B, n, b, d))
    kb = xp.reshape(flat_pad(k), (B, n, b, d))
    vb = None if v is None else xp.reshape(flat_pad(v), (B, n, b, int(v.shape[-1])))
    if masked:
        qb, kb = qb * w[..., None], kb * w[..., None]
        vb = None if vb is None else vb * w[..., None]
    counts = xp.sum(w, axis=-1)
    inv = 1.0 / xp.where(counts > 0, counts, xp.ones_like(counts))
    qbar = _block_sums(qb) * inv[..., None]
    kbar = _block_sums(kb) * inv[..., None]
    scores = _matmul(qbar, xp.matrix_transpose(kbar)) * scale
    vsum = None if vb is None else _block_sums(vb)
    return _Blocks(qb, kb, vb, valid, counts, scores, vsum, batch, L, b, n, scale, masked)


@dataclass(frozen=True, eq=False)
class _DeviceSelection:
    """A selection held on a torch device (the default torch path: no host readback).

    ``flat``: ``(B, k)`` int64 flat block ids ``I·n_b + J``, ascending (BSR order), the
    same blocks as :func:`select_blocks`; see :func:`select_flat_torch`.
    """

    flat: Any
    num_block_rows: int

    @property
    def num_blocks(self) -> int:
        return int(self.flat.shape[-1])

    @property
    def rows(self) -> Any:
        return self.flat // self.num_block_rows

    @property
    def indices(self) -> Any:
        return self.flat % self.num_block_rows


def _flat_ids(blk: _Blocks, sel: Any) -> tuple[Any, Any]:
    """Flat ``(B·k,)`` ids ``batch·n_b + block`` of the selected rows and columns."""
    B, n, k = math.prod(blk.batch), blk.n, sel.num_blocks
    if isinstance(sel, _DeviceSelection):
        import torch

        base = torch.arange(B, device=sel.flat.device)[:, None] * n
        return (base + sel.rows).reshape(-1), (base + sel.indices).reshape(-1)
    base = np.arange(B)[:, None] * n
    return (index_like((base + sel.rows.reshape(B, k)).reshape(-1), blk.qb),
            index_like((base + sel.indices.reshape(B, k)).reshape(-1), blk.qb))


def _block_mask(blk: _Blocks, sel: Any) -> Any:
    """Boolean selected-block mask ``(B, n_b, n_b)``, same kind/device as the scores."""
    B, n = math.prod(blk.batch), blk.n
    if isinstance(sel, _DeviceSelection):
        import torch

        out = torch.zeros((B, n * n), dtype=torch.bool, device=sel.flat.device)
        return out.scatter(1, sel.flat, True).reshape(B, n, n)
    mask = as_like(sel.mask.reshape(B, n, n), blk.scores)
    return mask > 0.5 if not is_torch(mask) else mask.bool()


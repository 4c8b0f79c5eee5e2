"""MRA-2 and MRA-2-s: multi-resolution approximation of softmax attention (mra.md §1.4–§2.1).

One head, ``L = n_b·b`` (after padding), block indicator ``U = I_{n_b} ⊗ 1_b``, coarse
scores ``Ŝ = Q̄ K̄ᵀ/√d`` and selected blocks ``M`` (:func:`~structattn.mra.select_blocks`).
MRA-2 (``mode="full"``) approximates the softmax kernel by

    Ê = U (exp(Ŝ) ∘ (1 - M)) Uᵀ + (U M Uᵀ) ∘ exp(S),       Ŷ = diag(Ê 1)⁻¹ Ê V,

a block-constant coarse part plus exact ``b x b`` blocks where ``M`` is set; MRA-2-s
(``mode="sparse"``) keeps only the exact blocks.  Equivalently, ``Ŷ`` is the softmax of
the *mixed logits* ``S`` (selected blocks) / ``Ŝ_IJ`` (other blocks), which is how the
dense matrices (:meth:`MRAApproximation.to_dense`) are built.

Computation (per batch x head)
------------------------------
1. pad ``L`` to a multiple of ``b`` (padded tokens masked), zero padded tokens;
2. block sums and means of ``Q, K, V`` (``O(L d)``), ``Ŝ`` (BLAS, ``O(n_b² d)``);
3. selection (``O(n_b²)``, no gradient): on the host for numpy, on the device for torch
   (static shapes, no host synchronization; the same blocks);
4. coarse part ``C = exp(Ŝ - m̂) ∘ (1 - M)`` weighted by valid-token counts, its
   numerator ``C (Uᵀ V)`` and denominator ``C (Uᵀ 1)`` (BLAS);
5. fine part over the ``k`` selected blocks (``O(k b² d)``): tile, exact row max,
   ``exp``, tile @ V, row sums — the ``"mra_block_sparse"`` numba kernel
   (row-block parallel) or the array-API gather / ``index_add`` core (numpy without
   numba, torch with autograd);
6. log-sum-exp merge of the two parts per row, division, padded rows set to zero.

Stabilisation differs from the official code in two places, neither changing the
mathematics: the coarse part is referenced to the maximum of the *unselected* coarse
scores (so both parts hold an entry ``exp(0)`` and the denominator of a valid row is at
least 1), and there is no ``+1e-6`` in denominators (a row with nothing to attend to,
possible only in ``"sparse"`` mode below coverage, outputs exactly 0).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from .._array import (
    as_like,
    describe_array,
    dtype_name,
    index_like,
    is_torch,
    namespace,
    validate_attention_inputs,
    validate_float_array,
    validate_same_kind,
)
from .._debug import resolve_check_finite
from .._validate import check_choice, check_int, check_scale, empty_attention
from ..backends import BACKENDS, kernel, resolve_backend
from .selection import (
    BlockSelection,
    check_block_size,
    num_block_rows,
    resolve_budget,
    select_blocks,
    select_flat_torch,
)

__all__ = ["MODES", "MRAApproximation", "MRAAttention", "mra_attention"]

#: Accepted values of ``mode``: MRA-2 (coarse + fine) and MRA-2-s (fine only).
MODES = ("full", "sparse")


# ------------------------------------------------------------------ validation
def _check_mode(mode: Any) -> str:
    return check_choice(mode, "mode", MODES)


def _check_prior(value: Any, name: str) -> int:
    return check_int(value, name, minimum=0)


def _check_scale(scale: Any, d: int) -> float:
    return check_scale(scale, max(d, 1))


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


def _selection_for(blk: _Blocks, selection: BlockSelection | None, k: int | None,
                   prior_first: int, prior_diag: int, device: bool = False
                   ) -> BlockSelection | _DeviceSelection:
    """The given selection, or select ``k`` blocks (``device``: torch, on the device)."""
    if selection is not None:
        if not isinstance(selection, BlockSelection):
            raise TypeError(
                f"selection must be a BlockSelection or None, got {type(selection).__name__}"
            )
        if selection.num_block_rows != blk.n or selection.batch_shape != blk.batch:
            raise ValueError(
                f"selection was made for batch {selection.batch_shape} with "
                f"{selection.num_block_rows} block rows; these inputs have batch "
                f"{blk.batch} and n_b = {blk.n} (L={blk.L}, block_size={blk.b})"
            )
        return selection
    if device and is_torch(blk.scores):
        flat = select_flat_torch(blk.scores, blk.counts > 0 if blk.masked else None, k,
                                 prior_first, prior_diag)
        return _DeviceSelection(flat, blk.n)
    block_valid = None
    if blk.masked:
        block_valid = _host(blk.counts).reshape(*blk.batch, blk.n) > 0
    return select_blocks(
        _host(blk.scores).reshape(*blk.batch, blk.n, blk.n), k,
        prior_first=prior_first, prior_diag=prior_diag, block_valid=block_valid,
    )


def _host(x: Any) -> np.ndarray:
    if is_torch(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _detach(x: Any) -> Any:
    return x.detach() if is_torch(x) else x


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
    mc = xp.max(_detach(masked), axis=-1)
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
    tile_max = xp.reshape(xp.max(_detach(T), axis=-1), (B * k, b))
    m = _segment_max(tile_max, flat_rows, B * n)  # (B n, b), -inf where empty
    m_fin = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    P = xp.exp(T - xp.reshape(xp.take(m_fin, flat_rows, axis=0), (B, k, b))[..., None])
    Z = _segment_sum(xp.reshape(xp.sum(P, axis=-1), (B * k, b)), flat_rows, B * n)
    Vs = xp.reshape(xp.take(xp.reshape(blk.vb, (B * n, b, dv)), flat_cols, axis=0),
                    (B, k, b, dv))
    N = _segment_sum(xp.reshape(P @ Vs, (B * k, b, dv)), flat_rows, B * n)
    return (xp.reshape(N, (B, n, b, dv)), xp.reshape(Z, (B, n, b)), xp.reshape(m, (B, n, b)))


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
    return _output(blk, _merge(blk, _fine_core(blk, sel), coarse))


# ------------------------------------------------------------------ public API
def _check_score_range(q: Any, k: Any, scale: float) -> None:
    """Refuse inputs whose scores ``scale·q·k`` can overflow the dtype (O(L·d) bound).

    ``|s_ij| <= scale·max_i‖q_i‖·max_j‖k_j‖`` (Cauchy–Schwarz); an overflowing score would
    turn into ``inf - inf = NaN`` weights and rows silently zeroed by the merge.
    """
    if q.shape[-2] == 0 or k.shape[-2] == 0 or q.shape[-1] == 0:
        return
    if is_torch(q):
        q, k = q.detach(), k.detach()
    xp = namespace(q, k)
    nq = float(xp.max(xp.linalg.vector_norm(xp.astype(q, xp.float64), axis=-1)))
    nk = float(xp.max(xp.linalg.vector_norm(xp.astype(k, xp.float64), axis=-1)))
    limit = float(np.finfo(np.float32 if dtype_name(q) == "float32" else np.float64).max)
    limit = limit / 4
    if scale * nq * nk >= limit:
        raise ValueError(
            f"scores scale*q.k may overflow {dtype_name(q)}: scale*max|q|*max|k| = "
            f"{scale * nq * nk:.3g} (limit {limit:.3g}); rescale q and k or use float64"
        )


def _prepare(
    q: Any, k: Any, v: Any | None, *, block_size: Any, blocks_per_row: Any, num_blocks: Any,
    mode: Any, prior_first: Any, prior_diag: Any, key_padding_mask: Any, scale: Any,
    selection: Any, backend: str, check_finite: bool | None, key_mask: Any = None,
    device_selection: bool = False,
) -> tuple[_Blocks, BlockSelection | _DeviceSelection, str, str]:
    key_padding_mask, attend = _key_mask(key_mask, key_padding_mask, "mra_attention")
    checks = resolve_check_finite(check_finite, q, k, v)
    if v is None:
        validate_attention_inputs(q, k, k, check_finite=checks)
    else:
        validate_attention_inputs(q, k, v, check_finite=checks)
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"MRA attention is self-attention: q and k must have the same length "
            f"(L_q == L_k); got q.shape={tuple(q.shape)} and k.shape={tuple(k.shape)}"
        )
    b = check_block_size(block_size)
    mode = _check_mode(mode)
    pf, pd = _check_prior(prior_first, "prior_first"), _check_prior(prior_diag, "prior_diag")
    L, d = int(q.shape[-2]), int(q.shape[-1])
    n = num_block_rows(L, b)
    budget = None
    if selection is None:
        budget = resolve_budget(n, blocks_per_row, num_blocks, length=L, block_size=b)
    scl = _check_scale(scale, d)
    be = resolve_backend(backend, q, k, v)
    if checks:
        _check_score_range(q, k, scl)
    batch = tuple(q.shape[:-2])
    valid = _valid_tokens(key_padding_mask, q, batch, L, attend=attend)
    blk = _blocks(q, k, v, valid, b, scl)
    sel = _selection_for(blk, selection, budget, pf, pd, device=device_selection)
    return blk, sel, mode, be


def mra_attention(
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
    backend: str = "auto",
    check_finite: bool | None = None,
    key_mask: Any = None,
) -> Any:
    """Multi-resolution (MRA-2 / MRA-2-s) approximation of softmax self-attention.

    Parameters
    ----------
    q, k : array, shape (..., L, d)
        Queries and keys (numpy or torch, float32/float64); ``L_q = L_k`` (self-attention).
    v : array, shape (..., L, d_v)
        Values.
    block_size : int, default 32
        ``b``, any power of two.  ``L`` need not be a multiple of ``b``: the inputs are
        padded internally and the padding is masked.
    blocks_per_row : int, default 8
        Budget ``k = n_b · blocks_per_row`` exactly computed ``b x b`` blocks per head,
        ``1 <= blocks_per_row <= n_b`` (``n_b = ceil(L / b)``).
    num_blocks : int, optional
        Total budget ``k`` per head in ``[1, n_b²]``; overrides ``blocks_per_row``.
    mode : {"full", "sparse"}, default "full"
        ``"full"``: MRA-2, coarse block means plus exact blocks; ``"sparse"``: MRA-2-s,
        exact blocks only.
    prior_first, prior_diag : int, default 0
        Always refine the first ``prior_first`` block rows/columns and the diagonal band
        ``|I - J| <= prior_diag // 2`` (after coverage; see
        :mod:`structattn.mra.selection`).
    key_padding_mask : bool array, shape (..., L), optional
        Deprecated (``DeprecationWarning``): True marks padding, as in
        ``torch.nn.MultiheadAttention``; use ``key_mask=~key_padding_mask``.
    scale : float, optional
        Logit scale; default ``1/sqrt(d)``.
    selection : BlockSelection, optional
        Use these blocks instead of selecting (e.g. the ``selection`` of an
        :class:`MRAApproximation`, to compare backends on one selection).
    backend : {"auto", "numpy", "numba", "torch"}, default "auto"
    check_finite : bool, optional
        Reject NaN/Inf inputs and scores that may overflow.  Default (None): checked for
        numpy inputs; for torch tensors only inside :func:`structattn.debug` (the checks
        synchronize with the host).
    key_mask : bool array, shape (..., L), optional
        True = a real token (the package convention: True = attend); must broadcast to
        ``(*batch, L)``.  Masked keys get zero weight, masked query rows output zero.

    Returns
    -------
    array, shape (..., L, d_v)
        Same kind, dtype and device as ``q``.

    Notes
    -----
    Cost per head: ``O(L d + n_b² d)`` for block means, coarse scores and the coarse
    product, ``O(n_b²)`` for the selection and ``O(k b² d)`` for the exact blocks, i.e.
    ``O(r L b d)`` with ``r`` blocks per row.  Extra memory ``O(n_b² + L d)`` on the
    numba backend; the torch/numpy core also holds the ``k`` tiles (``O(k b²)``).
    With ``num_blocks = n_b²`` the result equals exact softmax attention (both modes).
    torch: gradients flow through the exact blocks and, in ``"full"`` mode, through the
    block means of ``q, k, v``; the selection has no gradient and is made on the device
    (two stable sorts of the ``n_b²`` coarse scores, static shapes), so a default forward
    and backward never synchronizes with the host; it selects the same blocks as the
    numpy path.

    Examples
    --------
    >>> import numpy as np
    >>> from structattn.mra import mra_attention
    >>> x = np.random.default_rng(0).standard_normal((2, 100, 16))
    >>> mra_attention(x, x, x, block_size=16, blocks_per_row=2).shape
    (2, 100, 16)
    """
    _, L_q, L_k, _, _ = validate_attention_inputs(q, k, v, check_finite=False)
    if L_q == 0 and L_k == 0:  # degenerate length: empty result (docs/reliability.rst)
        return empty_attention(q, k, v, L_q, L_k)
    blk, sel, mode, be = _prepare(
        q, k, v, block_size=block_size, blocks_per_row=blocks_per_row, num_blocks=num_blocks,
        mode=mode, prior_first=prior_first, prior_diag=prior_diag,
        key_padding_mask=key_padding_mask, scale=scale, selection=selection, backend=backend,
        check_finite=check_finite, key_mask=key_mask, device_selection=True,
    )
    return _run(blk, sel, mode, be)


@dataclass(frozen=True, eq=False)
class MRAApproximation:
    """The MRA approximation of one ``(q, k)`` pair: selection, coarse part, dense forms.

    Built by :meth:`MRAAttention.approximate`.  Shapes use ``n_b = ceil(L / b)`` block
    rows; the dense forms are ``L x L`` (padding removed).

    Attributes
    ----------
    selection : BlockSelection
        The selected (exactly computed) blocks, BSR order.
    mode : str
        ``"full"`` (MRA-2) or ``"sparse"`` (MRA-2-s).
    backend : str
        Resolved backend of the fast path used by :meth:`__call__`.
    """

    _blk: _Blocks
    selection: BlockSelection
    mode: str
    backend: str

    # ---------------------------------------------------------------- structure
    @property
    def selected_blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """BSR ``(indptr (*batch, n_b + 1), indices (*batch, k))`` of the selected blocks."""
        return self.selection.indptr, self.selection.indices

    @property
    def selected_mask(self) -> np.ndarray:
        """Boolean ``M``, shape ``(*batch, n_b, n_b)``."""
        return self.selection.mask

    @property
    def block_scores(self) -> Any:
        """Coarse scores ``Ŝ = Q̄ K̄ᵀ · scale``, shape ``(*batch, n_b, n_b)``."""
        blk = self._blk
        return namespace(blk.scores).reshape(blk.scores, (*blk.batch, blk.n, blk.n))

    @property
    def shift(self) -> Any:
        """Per-block-row shift ``s_I`` of :attr:`C` and :meth:`to_dense`, ``(*batch, n_b)``.

        The maximum logit of block row ``I`` over the entries the approximation uses
        (unselected coarse scores and exact scores of selected blocks); ``0`` for an
        empty row.  Cost ``O(k b² d)``.
        """
        blk = self._blk
        xp = namespace(blk.qb)
        B, n, b, k = math.prod(blk.batch), blk.n, blk.b, self.selection.num_blocks
        T, flat_rows, _ = _gather_tiles(blk, self.selection)
        if blk.masked:  # padded rows do not count
            rv = xp.take(xp.reshape(blk.valid, (B * n, b)), flat_rows, axis=0)
            neg = xp.full_like(xp.reshape(T, (B * k, b, b)), -math.inf)
            T = xp.where(rv[:, :, None], xp.reshape(T, (B * k, b, b)), neg)
        tmax = xp.reshape(xp.max(xp.reshape(_detach(T), (B * k, b * b)), axis=-1), (B * k, 1))
        fine = xp.reshape(_segment_max(tmax, flat_rows, B * n), (B, n))
        s = fine
        if self.mode == "full":
            mask = self._mask()
            rv = blk.counts > 0
            keep = xp.logical_and(xp.logical_and(xp.logical_not(mask), rv[:, None, :]),
                                  rv[:, :, None])
            coarse = xp.max(xp.where(keep, _detach(blk.scores),
                                     xp.full_like(blk.scores, -math.inf)), axis=-1)
            s = xp.maximum(fine, coarse)
        s = xp.where(xp.isfinite(s), s, xp.zeros_like(s))
        return xp.reshape(s, (*blk.batch, n))

    def _mask(self) -> Any:
        blk = self._blk
        B = math.prod(blk.batch)
        mask = as_like(self.selection.mask.reshape(B, blk.n, blk.n), blk.scores)
        return mask > 0.5 if not is_torch(mask) else mask.bool()

    @property
    def U(self) -> Any:
        """Block indicator ``U``, shape ``(*batch, L, n_b)``: ``U[i, I] = 1`` if token ``i``
        is a valid token of block ``I`` (padded tokens have a zero row)."""
        blk = self._blk
        xp = namespace(blk.qb)
        B, n, b = math.prod(blk.batch), blk.n, blk.b
        eye = as_like(np.kron(np.eye(n), np.ones((b, 1))), blk.scores)  # (n b, n)
        U = xp.reshape(xp.astype(blk.valid, blk.scores.dtype), (B, n * b))[..., None] * eye
        return xp.reshape(U[:, : blk.L, :], (*blk.batch, blk.L, n))

    @property
    def C(self) -> Any:
        """Coarse core ``C = exp(Ŝ - s) ∘ (1 - M)`` on valid pairs, ``(*batch, n_b, n_b)``.

        ``s`` is :attr:`shift` (per block row); zero in ``"sparse"`` mode.  The
        unnormalised kernel is ``U C Uᵀ + B`` with ``B`` the exact selected blocks.
        """
        blk = self._blk
        xp = namespace(blk.qb)
        if self.mode == "sparse":
            return xp.zeros_like(self.block_scores)
        B, n = math.prod(blk.batch), blk.n
        s = xp.reshape(self.shift, (B, n))
        rv = blk.counts > 0
        keep = xp.logical_and(xp.logical_and(xp.logical_not(self._mask()), rv[:, None, :]),
                              rv[:, :, None])
        C = xp.exp(xp.where(keep, blk.scores - s[..., None],
                            xp.full_like(blk.scores, -math.inf)))
        return xp.reshape(C, (*blk.batch, n, n))

    def _mixed_logits(self) -> tuple[Any, Any]:
        """Dense mixed logits (padded size) and the expanded validity, ``(B, Lp, Lp)``."""
        blk = self._blk
        xp = namespace(blk.qb)
        B, n, b = math.prod(blk.batch), blk.n, blk.b
        d = int(blk.qb.shape[-1])
        q = xp.reshape(blk.qb, (B, n * b, d))
        k = xp.reshape(blk.kb, (B, n * b, d))
        S = (q @ xp.matrix_transpose(k)) * blk.scale
        M = self._mask()
        Mx = xp.reshape(xp.broadcast_to(M[:, :, None, :, None], (B, n, b, n, b)),
                        (B, n * b, n * b))
        if self.mode == "full":
            Sh = xp.reshape(xp.broadcast_to(blk.scores[:, :, None, :, None], (B, n, b, n, b)),
                            (B, n * b, n * b))
            X = xp.where(Mx, S, Sh)
            keep = xp.ones_like(Mx)
        else:
            X, keep = S, Mx
        v = xp.reshape(blk.valid, (B, n * b))
        keep = xp.logical_and(xp.logical_and(keep, v[:, None, :]), v[:, :, None])
        return X, keep

    def to_dense(self) -> Any:
        """Unnormalised approximate kernel ``Ê = U C Uᵀ + B``, shape ``(*batch, L, L)``.

        Row block ``I`` is referenced to :attr:`shift` ``s_I``.  ``O(L² d)``.
        """
        blk = self._blk
        xp = namespace(blk.qb)
        B, n, b = math.prod(blk.batch), blk.n, blk.b
        X, keep = self._mixed_logits()
        s = xp.reshape(xp.broadcast_to(xp.reshape(self.shift, (B, n))[:, :, None], (B, n, b)),
                       (B, n * b))
        E = xp.exp(xp.where(keep, X - s[..., None], xp.full_like(X, -math.inf)))
        return xp.reshape(E[:, : blk.L, : blk.L], (*blk.batch, blk.L, blk.L))

    def matrix(self) -> Any:
        """Approximate attention ``Â = diag(Ê 1)⁻¹ Ê``, shape ``(*batch, L, L)``.

        Rows of padded tokens (and empty rows in ``"sparse"`` mode) are zero.
        """
        xp = namespace(self._blk.qb)
        E = self.to_dense()
        den = xp.sum(E, axis=-1, keepdims=True)
        ok = den > 0
        return xp.where(ok, E / xp.where(ok, den, xp.ones_like(den)), xp.zeros_like(E))

    def __call__(self, v: Any) -> Any:
        """Approximate output ``Â v`` for values ``v (..., L, d_v)`` by the fast path."""
        blk = self._blk
        validate_float_array(v, "v", min_ndim=2)
        validate_same_kind({"q": blk.qb, "v": v})
        if tuple(v.shape[:-1]) != (*blk.batch, blk.L):
            raise ValueError(
                f"v must be a {'torch' if is_torch(blk.qb) else 'numpy'} array of shape "
                f"(*batch, L, d_v) = {(*blk.batch, blk.L)} + (d_v,), got {describe_array(v)}"
            )
        xp = namespace(blk.qb)
        B, n, b = math.prod(blk.batch), blk.n, blk.b
        Lp = n * b
        vf = xp.reshape(v, (B, blk.L, int(v.shape[-1])))
        if Lp > blk.L:
            vf = xp.concat([vf, xp.zeros((B, Lp - blk.L, int(v.shape[-1])), dtype=vf.dtype,
                                         device=array_api_compat.device(vf))], axis=1)
        vb = xp.reshape(vf, (B, n, b, int(v.shape[-1])))
        if blk.masked:
            vb = vb * xp.astype(blk.valid, vb.dtype)[..., None]
        new = _Blocks(blk.qb, blk.kb, vb, blk.valid, blk.counts, blk.scores,
                      _block_sums(vb), blk.batch, blk.L, b, n, blk.scale, blk.masked)
        return _run(new, self.selection, self.mode, self.backend)

    matvec = __call__


@dataclass(frozen=True, eq=False)
class MRAAttention:
    """MRA-2 / MRA-2-s attention as an operator object (see :func:`mra_attention`).

    Parameters
    ----------
    block_size : int, default 32
    blocks_per_row : int, default 8
    num_blocks : int, optional
    mode : {"full", "sparse"}, default "full"
    prior_first, prior_diag : int, default 0
    scale : float, optional
    backend : str, default "auto"

    Examples
    --------
    >>> import numpy as np
    >>> from structattn.mra import MRAAttention
    >>> x = np.random.default_rng(0).standard_normal((64, 8))
    >>> op = MRAAttention(block_size=16, blocks_per_row=2)
    >>> approx = op.approximate(x, x)
    >>> approx.selected_blocks[1].shape, approx.C.shape, approx.matrix().shape
    ((8,), (4, 4), (64, 64))
    >>> bool(np.allclose(approx(x), op(x, x, x)))
    True
    """

    block_size: int = 32
    blocks_per_row: int = 8
    num_blocks: int | None = None
    mode: str = "full"
    prior_first: int = 0
    prior_diag: int = 0
    scale: float | None = None
    backend: str = "auto"

    def __post_init__(self) -> None:
        check_block_size(self.block_size)
        _check_mode(self.mode)
        _check_prior(self.prior_first, "prior_first")
        _check_prior(self.prior_diag, "prior_diag")
        _check_scale(self.scale, 1)
        if not isinstance(self.backend, str) or self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")

    def _kw(self) -> dict[str, Any]:
        return {"block_size": self.block_size, "blocks_per_row": self.blocks_per_row,
                "num_blocks": self.num_blocks, "mode": self.mode,
                "prior_first": self.prior_first, "prior_diag": self.prior_diag,
                "scale": self.scale, "backend": self.backend}

    def __call__(self, q: Any, k: Any, v: Any, *, key_padding_mask: Any = None,
                 selection: BlockSelection | None = None, key_mask: Any = None) -> Any:
        """Output ``(..., L, d_v)``; see :func:`mra_attention`."""
        return mra_attention(q, k, v, key_padding_mask=key_padding_mask, selection=selection,
                             key_mask=key_mask, **self._kw())

    def approximate(self, q: Any, k: Any, *, key_padding_mask: Any = None,
                    selection: BlockSelection | None = None,
                    check_finite: bool = True, key_mask: Any = None) -> MRAApproximation:
        """Select blocks for ``(q, k)`` and return the approximation object.

        Cost ``O(L d + n_b² d)``; the dense forms are computed on demand.
        """
        kw = self._kw()
        backend = kw.pop("backend")
        blk, sel, mode, be = _prepare(q, k, None, key_padding_mask=key_padding_mask,
                                      selection=selection, backend=backend,
                                      check_finite=check_finite, key_mask=key_mask, **kw)
        return MRAApproximation(blk, sel, mode, be)

    def matrix(self, q: Any, k: Any, *, key_padding_mask: Any = None,
               key_mask: Any = None) -> Any:
        """Dense approximate attention matrix ``(..., L, L)`` implied for ``(q, k)``."""
        return self.approximate(q, k, key_padding_mask=key_padding_mask,
                                key_mask=key_mask).matrix()

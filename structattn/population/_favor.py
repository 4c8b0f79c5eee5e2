"""One batched math core for a population of FAVOR+ attentions on shared inputs.

Member ``p`` is ``kernel_attention(q, k, v, phi_p, causal=…)`` with ``phi_p`` a
:class:`~structattn.features.PositiveRandomFeatures` map (its own projection ``W_p``
and temperature ``t_p``).  The inputs are shared, so the work of all members is a few
GEMMs with the population folded into their *columns*, not ``P`` calls:

* key log-features ``w·k_s - |k_s|²/2`` (``k_s = √t_p k``) of every member come from
  one GEMM ``[k, -|k|²/2] @ [√t_p W_p, t_p]ᵀ`` of shape ``(L, d+1) x (d+1, P·F)``;
  query log-features ``w·q_s`` transposed, ``[√t_p W_p] @ qᵀ`` of shape ``(P·F, d) x
  (d, L)``, so that each query's maximum over a member's features is a reduction
  over contiguous rows (numpy's reduction over a short contiguous last axis measured
  ~3x slower); the row term ``-|q_s|²/2`` cancels in that maximum and is skipped, as
  in the single call;
* the stabilizers are those of
  :meth:`~structattn.features.PositiveRandomFeatures.attention_features` (per-feature
  key shifts, per-row query max; the causal first-key rule with its headroom cap);
  the feature norm ``F^{-1/2}`` cancels in the row normalization and is not applied;
* non-causal: ``KV = φ(K)ᵀ [V | 1]`` for all members in one GEMM ``(P·F, L) x (L,
  d_v+1)``, then one batched GEMM per member block; causal and decayed causal on
  short sequences (``L <= DENSE_CAUSAL_MAX``): the masked product
  ``(φ_q φ_kᵀ ⊙ D_p) [V | 1]`` densely, in two batched GEMMs per block, ``D_p`` the
  member's lower-triangular (decay) matrix (built once per ``(L, γ grid)`` and
  cached); longer sequences: the public :meth:`~structattn.masks.Mask.masked_matmul`
  of :class:`~structattn.masks.Causal` / :class:`StackedDecayedCausal` (the
  chunked-GEMM scan of the single call) on the whole block at once.

Members are processed in blocks sized so a block's ``L x B·F`` temporaries stay in
cache (:data:`BLOCK_BYTES`): the element-wise passes (shift, max, exp) then run from
cache instead of memory — measured 2x faster than one pass over all ``P`` members.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._array import as_like, dtype_name, is_torch, namespace, validate_attention_inputs
from .._debug import resolve_check_finite
from .._validate import check_finite_output, tiny
from ..attention import NormalizerWarning
from ..features import KEY_LOG_HEADROOM, PositiveRandomFeatures
from ..masks import Causal
from ._batched import StackedDecayedCausal

__all__ = ["BLOCK_BYTES", "favor_population", "supports"]

#: Bytes of one ``L x B·F`` log-feature block (a quarter of a 1 MiB L2 cache; measured
#: on 2 cores, L = 128, F = 128, P = 32, float32: 256 KiB 4.0 ms, 128 KiB 4.3 ms,
#: 512 KiB 4.6 ms, 1 MiB 5.8 ms, all members at once (8 MiB) 8.3 ms, under load).
BLOCK_BYTES = 1 << 18

#: Longest sequence whose causal / decayed-causal member products run as dense
#: ``L x L`` GEMMs instead of the chunked scan.  The dense product does ``2·L²·(F+d_v)``
#: flops per member against the scan's ``≈ 2·L·(C·(F+d_v) + 2·F·d_v)`` (chunk
#: ``C = 32`` at F = 128), but in two batched GEMMs per member block instead of a
#: Python-level loop over chunks with ~10 small GEMMs each.  Measured (float32, P = 32,
#: F = 128, d = 32, 1 thread, CPU time, min of 9 interleaved, 2 cores under load)
#: dense/scan whole-call time: L = 64 0.67-0.70, L = 128 0.68-0.71, L = 256 0.97-0.98,
#: L = 512 1.42-1.59 (causal and decayed).
DENSE_CAUSAL_MAX = 128

_WEIGHTS: OrderedDict[tuple, tuple[Any, Any]] = OrderedDict()
_WEIGHTS_SIZE = 64
_MASKS: OrderedDict[tuple, Any] = OrderedDict()
_MASKS_SIZE = 16


def supports(maps: Sequence[Any]) -> bool:
    """True when every map is a plain :class:`PositiveRandomFeatures` with ``eps = 0``."""
    return all(type(m) is PositiveRandomFeatures and not m.eps for m in maps)


def _weights(maps: Sequence[PositiveRandomFeatures], like: Any) -> tuple[Any, Any]:
    """``(P·F, d+1)`` augmented weights ``[√t W, t]`` and ``(P·F,)`` causal bounds.

    Row-major per feature, so a block of members is a contiguous slice of rows (used
    transposed in the GEMMs, no copy).

    Cached per population (the maps' identities), dtype and device: converted once.
    """
    key = (tuple(id(m) for m in maps), is_torch(like), dtype_name(like),
           str(getattr(like, "device", "")))
    hit = _WEIGHTS.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[2], maps, strict=True)):
        _WEIGHTS.move_to_end(key)
        return hit[0], hit[1]
    cols, bounds = [], []
    headroom = KEY_LOG_HEADROOM[dtype_name(like)]
    for phi in maps:
        W = phi.projection * math.sqrt(phi.temperature)
        half_sq = 0.5 * np.sum(phi.projection**2, axis=-1)
        if phi.hyperbolic:
            W, half_sq = np.concatenate([W, -W]), np.concatenate([half_sq, half_sq])
        t = np.full((W.shape[0], 1), phi.temperature)
        cols.append(np.concatenate([W, t], axis=1))
        bounds.append(half_sq - headroom)
    Wa = np.ascontiguousarray(np.concatenate(cols))  # (P·F, d+1)
    out = (as_like(Wa, like), as_like(np.concatenate(bounds), like))
    _WEIGHTS[key] = (*out, tuple(maps))
    while len(_WEIGHTS) > _WEIGHTS_SIZE:
        _WEIGHTS.popitem(last=False)
    return out


def _block_members(P: int, L: int, F: int, itemsize: int) -> int:
    """Members per block: ``L·B·F·itemsize <= BLOCK_BYTES`` (at least one)."""
    return max(1, min(P, BLOCK_BYTES // max(1, L * F * itemsize)))


def _causal_matrices(L: int, gammas: np.ndarray | None, like: Any) -> Any:
    """Dense member masks: ``(P, L, L)`` with ``D_p[i, j] = γ_p**(i-j)`` (``j <= i``).

    ``gammas=None``: the ``(L, L)`` lower-triangular ones (plain causal).  In
    ``like``'s kind, dtype and device; cached per ``(L, γ grid, dtype, device)``
    (an LRU of :data:`_MASKS_SIZE` entries).  ``O(P·L²)`` time and memory.
    """
    key = (L, None if gammas is None else gammas.tobytes(), is_torch(like),
           dtype_name(like), str(getattr(like, "device", "")))
    hit = _MASKS.get(key)
    if hit is not None:
        _MASKS.move_to_end(key)
        return hit
    i = np.arange(L)
    diff = (i[:, None] - i[None, :]).astype(np.float64)
    if gammas is None:
        dense = (diff >= 0).astype(np.float64)
    else:
        with np.errstate(under="ignore"):
            dense = np.where(diff >= 0, gammas[:, None, None] ** np.maximum(diff, 0.0), 0.0)
    out = as_like(np.ascontiguousarray(dense), like)
    _MASKS[key] = out
    while len(_MASKS) > _MASKS_SIZE:
        _MASKS.popitem(last=False)
    return out


def favor_population(
    q: Any,
    k: Any,
    v: Any,
    maps: Sequence[PositiveRandomFeatures],
    *,
    causal: bool = False,
    gammas: Sequence[float] | None = None,
    backend: str = "auto",
    check_finite: bool | None = None,
) -> Any:
    """``P`` FAVOR+ attentions on shared inputs: ``out[p] = kernel_attention(q, k, v, maps[p])``.

    Parameters
    ----------
    q, k : array, shape (..., L, d)
    v : array, shape (..., L, d_v)
        numpy arrays or torch tensors (float32/float64), shared by every member.
    maps : sequence of PositiveRandomFeatures, length P
        One map per member, equal ``dim``, ``num_features`` and ``hyperbolic``;
        ``eps = 0`` (see :func:`supports`).
    causal : bool
        Causal attention (``L_q == L_k``), through :class:`~structattn.masks.Causal`.
    gammas : sequence of float, length P, optional
        Per-member decays: member ``p`` uses the mask ``DecayedCausal(L, gammas[p])``
        (causal stabilizers), through :class:`StackedDecayedCausal` per block.
    backend : str
        Backend of the causal mask product.
    check_finite : bool, optional
        As :func:`~structattn.kernel_attention` (numpy: checked; torch: only in
        :func:`structattn.debug`).

    Returns
    -------
    array, shape (P, ..., L, d_v)
        Equal to the loop of ``kernel_attention`` calls to rounding.

    Notes
    -----
    ``O(P·L·F·(d + d_v))`` time as the loop (``F`` features per member), in
    ``O(P / B)`` GEMM calls of ``B`` members each; extra memory ``O(L·B·F)`` per block
    besides the ``(P, ..., L, d_v)`` output.  Causal with ``L <=``
    :data:`DENSE_CAUSAL_MAX`: ``O(P·L²·(F + d_v))`` time in dense batched GEMMs, extra
    memory ``O(B·L²)`` per block plus the cached ``(P, L, L)`` decay matrices.

    Query features are computed transposed, ``(b, F, L_q)``, so that the per-query
    maximum over the features is a reduction over contiguous rows; the query row term
    ``-|q_s|²/2`` is left out (a per-(member, query) constant that this maximum removes
    exactly, as the single call does).
    """
    checks = resolve_check_finite(check_finite, q, k, v)
    batch, L_q, L_k, d, _ = validate_attention_inputs(q, k, v, check_finite=checks)
    if len({(m.dim, m.num_features, m.hyperbolic) for m in maps}) != 1 or maps[0].dim != d:
        raise ValueError(f"the maps of a population need one dim (= d = {d}), "
                         "num_features and hyperbolic option")
    if gammas is not None:
        causal = True
        gammas = np.asarray(gammas, dtype=np.float64)
    if causal and L_q != L_k:
        raise ValueError(f"causal=True needs L_q == L_k, got {L_q} and {L_k}")
    xp = namespace(q, k, v)
    torch_in = is_torch(q)
    Wa, bounds = _weights(maps, q)
    inplace = not torch_in or not _tracks_grad(q, k)
    F = maps[0].feature_dim(d)
    P = len(maps)
    H = KEY_LOG_HEADROOM[dtype_name(q)]
    qt = xp.matrix_transpose(q)  # (..., d, L_q)
    ka = xp.concat([k, -0.5 * xp.sum(k * k, axis=-1, keepdims=True)], axis=-1)
    v1 = xp.concat([v, xp.ones_like(v[..., :1])], axis=-1)
    B = _block_members(P, max(L_q, L_k), F, 8 if "64" in str(q.dtype) else 4)
    dense = (_causal_matrices(L_q, gammas, q)
             if causal and 0 < L_q <= DENSE_CAUSAL_MAX else None)
    outs = []
    for p0 in range(0, P, B):
        b = min(B, P - p0)
        cols = slice(p0 * F, (p0 + b) * F)
        Wt = xp.matrix_transpose(Wa[cols])  # (d+1, b·F), a transposed view
        lk = ka @ Wt  # (..., L_k, b·F) key log-features
        if causal:
            first = lk[..., :1, :]
            bound = bounds[cols]
            capped = xp.where(first > bound, first, bound)
            over = xp.reshape(lk - first, (*batch, L_k, b, F))
            fits = xp.all(over <= H, axis=(-3, -1), keepdims=True)  # per member
            shift = xp.where(xp.reshape(fits, (*batch, 1, b, 1)),
                             xp.reshape(first, (*batch, 1, b, F)),
                             xp.reshape(capped, (*batch, 1, b, F)))
            shift = xp.reshape(shift, (*batch, 1, b * F))
        else:
            shift = xp.max(lk, axis=-2, keepdims=True)
        phi_k = _exp_shifted(lk, shift, inplace)
        # query log-features, transposed: (..., b, F, L_q) = W_s q_sᵀ plus the key shift,
        # minus each (member, query)'s max over the F features (a reduction over the
        # leading axis of contiguous rows); -|q_s|²/2 is constant per (member, query) and
        # removed exactly by that max, so it is not computed
        lq = xp.reshape(Wa[cols][:, :d] @ qt, (*batch, b, F, L_q))
        lq = _add(lq, xp.reshape(shift, (*batch, b, F, 1)), inplace)
        phi_q = _exp_shifted(lq, xp.max(lq, axis=-2, keepdims=True), inplace)
        phi_q = xp.matrix_transpose(xp.moveaxis(phi_q, -3, 0))  # (b, ..., L_q, F) view
        if causal:
            phi_k = xp.moveaxis(xp.reshape(phi_k, (*batch, L_k, b, F)), -2, 0)
            if dense is not None:  # (φ_q φ_kᵀ ⊙ D_p) [V | 1], two batched GEMMs
                scores = phi_q @ xp.matrix_transpose(phi_k)  # (b, ..., L, L)
                D = dense if gammas is None else xp.reshape(
                    dense[p0 : p0 + b], (b,) + (1,) * len(batch) + (L_q, L_q))
                scores = _mul(scores, D, inplace)
                out = scores @ v1
            else:
                mask = (Causal(L_q) if gammas is None else
                        StackedDecayedCausal(L_q, gammas[p0 : p0 + b],
                                             batch_ndim=len(batch)))
                out = mask.masked_matmul(phi_q, phi_k, v1, backend=backend,
                                         check_finite=False)
        else:
            kv = xp.matrix_transpose(phi_k) @ v1  # (..., b·F, d_v+1): one GEMM
            kv = xp.moveaxis(xp.reshape(kv, (*batch, b, F, kv.shape[-1])), -3, 0)
            out = phi_q @ kv  # (b, ..., L_q, d_v+1)
        outs.append(out)
    out = outs[0] if len(outs) == 1 else xp.concat(outs, axis=0)
    num, den = out[..., :-1], out[..., -1:]
    nonzero = xp.abs(den) >= tiny(den)
    if not torch_in and bool(xp.all(nonzero)):
        res = num / den
    else:
        if not torch_in or checks:
            warnings.warn(
                f"{int(xp.sum(xp.astype(~nonzero, xp.int64)))} population attention row(s) "
                "have a zero normalizer (features underflowed); those rows are zeros — "
                "use float64", NormalizerWarning, stacklevel=3)
        res = xp.where(nonzero, num / xp.where(nonzero, den, xp.ones_like(den)),
                       xp.zeros_like(num))
    return check_finite_output(res, "favor_population", checks)


def _tracks_grad(*xs: Any) -> bool:
    """True when autograd records operations on any of the torch tensors ``xs``."""
    import torch

    return torch.is_grad_enabled() and any(x.requires_grad for x in xs)


def _add(x: Any, y: Any, inplace: bool) -> Any:
    """``x + y``; in place when allowed (``x`` is a temporary of the caller)."""
    if not inplace:
        return x + y
    if is_torch(x):
        return x.add_(y)
    return np.add(x, y, out=x)


def _mul(x: Any, y: Any, inplace: bool) -> Any:
    """``x * y``; in place when allowed (``x`` is a temporary of the caller)."""
    if not inplace:
        return x * y
    if is_torch(x):
        return x.mul_(y)
    return np.multiply(x, y, out=x)


def _exp_shifted(x: Any, shift: Any, inplace: bool) -> Any:
    """``exp(x - shift)``; in place when allowed (``x`` is a temporary of the caller)."""
    if not inplace:
        return (x - shift).exp()
    if is_torch(x):
        return x.sub_(shift).exp_()
    np.subtract(x, shift, out=x)
    return np.exp(x, out=x)

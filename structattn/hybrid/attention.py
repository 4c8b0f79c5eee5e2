"""Sparse + low-rank attention (Scatterbrain) as one structured operator.

With a sparse support ``S`` (``L x L``, boolean) and a feature map ``φ``,

    A ≈ S ⊙ exp(Q Kᵀ·scale) + (1 − S) ⊙ φ(Q) φ(K)ᵀ,     Y = rownormalize(A) V,

numerator and normalizer combined (Chen et al., "Scatterbrain", NeurIPS 2021).  It is
computed as ``φ(Q) [φ(K)ᵀ (V | 1)]`` (``O(L·m·d_v)``, or a causal scan) plus, on the
``nnz`` pairs of ``S`` only, ``exp(s_ij) − φ(q_i)·φ(k_j)``: the low-rank part on the
support is subtracted, so no pair is counted twice, in ``O(nnz·(d + m + d_v))``; no
``L x L`` matrix is formed.

Stabilization
-------------
The features are the stabilized ones of :func:`~structattn.attention.kernel_attention`,
``φ̃(q_i)·φ̃(k_j) = exp(ρ_i)·φ(q_i)·φ(k_j)`` (see :mod:`structattn.hybrid._features` for
``ρ_i`` of each map; for FAVOR+ ``ρ_i = −max_r(ℓ_ir + c_r)``).  The exact part must carry
the same factor to be commensurate: it uses ``exp(s_ij + ρ_i)``.  Each row is then scaled
once more by ``exp(−t_i)``, ``t_i = max(0, max_{j∈S_i}(s_ij + ρ_i))``, so that every
exact weight is ``<= 1`` and the low-rank weights keep their kernel_attention scale
(``<= 1`` for FAVOR+): neither part can overflow and the normalizer keeps a term of
order one.  All these factors are per row and cancel in the normalized output; with an
empty support (``t_i = 0``) the computation is exactly that of ``kernel_attention``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._array import as_like, is_torch, namespace, validate_attention_inputs
from .._debug import resolve_check_finite
from .._validate import check_scale, empty_attention
from ..backends import resolve_backend
from ..features import FeatureMap
from ..masks import Causal
from ._features import default_scale, features_and_log_scale
from ._kernels import hybrid_combine
from .support import Support, as_support

__all__ = [
    "SparseLowRankAttention",
    "sparse_lowrank_attention",
    "sparse_lowrank_reference",
    "sparse_lowrank_weights",
]


def _prepare(q: Any, k: Any, v: Any, support: Any, feature_map: Any, causal: Any,
             scale: Any, backend: str, check_finite: bool | None
             ) -> tuple[Support, float, str]:
    checks = resolve_check_finite(check_finite, q, k, v)
    batch, L_q, L_k, d, _ = validate_attention_inputs(q, k, v, check_finite=checks)
    if L_q != L_k:
        raise ValueError(f"sparse + low-rank attention needs L_q == L_k (a support on one "
                         f"set of tokens), got L_q={L_q}, L_k={L_k}")
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be a bool, got {causal!r}")
    if not isinstance(feature_map, FeatureMap):
        raise TypeError(
            f"feature_map must be a structattn FeatureMap, got {type(feature_map).__name__}")
    resolved = resolve_backend(backend, q, k, v)
    sup = as_support(support, L_q, math.prod(batch))
    if causal:
        sup = sup.causal()
    tau = default_scale(feature_map, d) if scale is None else check_scale(scale, d)
    return sup, tau, resolved


def sparse_lowrank_attention(
    q: Any,
    k: Any,
    v: Any,
    support: Any,
    feature_map: FeatureMap,
    *,
    causal: bool = False,
    scale: float | None = None,
    backend: str = "auto",
    check_finite: bool | None = None,
) -> Any:
    """Exact softmax on ``support`` plus kernel attention on its complement.

    ``Y = rownormalize(S ⊙ exp(Q Kᵀ·scale) + (1 − S) ⊙ φ(Q)φ(K)ᵀ) V``.

    Parameters
    ----------
    q : array, shape (..., L, d)
    k : array, shape (..., L, d)
    v : array, shape (..., L, d_v)
        numpy arrays or torch tensors of one dtype (float32/float64) and device, with
        identical leading (batch, head) dimensions.
    support : AttentionGraph, BlockPattern, Support, bool array (..., L, L) or None
        The exactly computed pairs ``S`` (shared by every head, or one per flattened
        batch/head element, e.g. :func:`~structattn.hybrid.mra_support`,
        :func:`~structattn.hybrid.lsh_support`).  ``None``: the empty support (equal to
        :func:`~structattn.attention.kernel_attention`).
    feature_map : FeatureMap
        ``φ``; e.g. :class:`~structattn.features.PositiveRandomFeatures`.
    causal : bool, default False
        Both parts restricted to ``j <= i`` (the support is intersected with it, the
        low-rank part is a causal scan).
    scale : float, optional
        Score scale of the exact part; default the temperature ``φ`` estimates
        (``feature_map.temperature``, else ``d**-0.5``).
    backend : {"auto", "numpy", "numba", "torch"}
        numba: fused row-parallel kernel; numpy / torch: gather + segment reductions
        (torch differentiable by autograd, CPU or CUDA).
    check_finite : bool, optional
        Reject NaN/Inf inputs (default: numpy inputs only).

    Returns
    -------
    array, shape (..., L, d_v)
        Rows whose normalizer is zero (or subnormal) are zero.

    Notes
    -----
    Time ``O(L·m·(d + d_v) + nnz·(d + m + d_v))`` per head, memory ``O(L·(m + d_v))``
    with numba (``O(nnz·(d + m + d_v))`` for the gather paths).  Stabilization: see
    :mod:`structattn.hybrid.attention`.
    """
    sup, tau, resolved = _prepare(q, k, v, support, feature_map, causal, scale, backend,
                                  check_finite)
    L = q.shape[-2]
    empty = empty_attention(q, k, v, L, L)
    if empty is not None:
        return empty
    xp = namespace(q, k, v)
    batch, d, dv = tuple(q.shape[:-2]), q.shape[-1], v.shape[-1]
    pq, pk, rho = features_and_log_scale(feature_map, q, k, bool(causal))
    v1 = xp.concat([v, xp.ones_like(v[..., :1])], axis=-1)
    if causal:
        lr = Causal(L).masked_matmul(pq, pk, v1, backend=resolved, check_finite=False)
    else:
        lr = pq @ (xp.matrix_transpose(pk) @ v1)
    B, m = math.prod(batch), pq.shape[-1]
    out = hybrid_combine(
        xp.reshape(q, (B * L, d)), xp.reshape(k, (B * L, d)), xp.reshape(v1, (B * L, dv + 1)),
        xp.reshape(pq, (B * L, m)), xp.reshape(pk, (B * L, m)), xp.reshape(rho, (B * L,)),
        xp.reshape(lr, (B * L, dv + 1)), sup, tau, resolved,
    )
    return xp.reshape(out, (*batch, L, dv))


def sparse_lowrank_weights(
    q: Any, k: Any, support: Any, feature_map: FeatureMap, *, causal: bool = False,
    scale: float | None = None, check_finite: bool | None = None,
) -> tuple[Any, Any]:
    """Dense unnormalized weights ``W`` and their log row scale (the dense reference).

    ``W_ij = exp(s_ij + ρ_i − t_i)`` on the support, ``exp(−t_i)·φ̃(q_i)·φ̃(k_j)`` off it
    (0 above the diagonal when causal).  ``W · exp(t_i − ρ_i)`` is in the raw scale:
    ``exp(s_ij)`` on the support and ``φ(q_i)·φ(k_j)`` (an unbiased estimate of
    ``exp(s_ij)`` for random features) off it.

    Returns
    -------
    (array (..., L, L), array (..., L, 1))
        ``W`` and ``t − ρ``.  ``O(L²·(d + m))`` time and ``O(L²)`` memory.
    """
    sup, tau, _ = _prepare(q, k, k, support, feature_map, causal, scale, "auto",
                           check_finite)
    xp = namespace(q, k)
    L = q.shape[-2]
    batch = tuple(q.shape[:-2])
    pq, pk, rho = features_and_log_scale(feature_map, q, k, bool(causal))
    S = sup.to_dense()  # (H, L, L)
    S = np.broadcast_to(S, (math.prod(batch), L, L)).reshape((*batch, L, L))
    if is_torch(q):
        import torch

        Sx = torch.as_tensor(np.array(S), device=q.device)
    else:
        Sx = S
    s = (q @ xp.matrix_transpose(k)) * tau + rho
    neg = xp.full_like(s, -math.inf)
    smax = xp.max(xp.where(Sx, s, neg), axis=-1, keepdims=True)
    zero = xp.zeros_like(smax)
    t = xp.where(smax > zero, smax, zero)
    if is_torch(t):
        t = t.detach()
    low = (pq @ xp.matrix_transpose(pk)) * xp.exp(-t)
    exact = xp.exp(xp.where(Sx, s - t, neg))
    W = xp.where(Sx, exact, low)
    if causal:
        tri = np.tril(np.ones((L, L), dtype=bool))
        W = W * (as_like(tri.astype(np.float64), q) if is_torch(q) else tri.astype(q.dtype))
    return W, t - rho


def sparse_lowrank_reference(
    q: Any, k: Any, v: Any | None, support: Any, feature_map: FeatureMap, *,
    causal: bool = False, scale: float | None = None, check_finite: bool | None = None,
) -> Any:
    """Dense reference: the row-normalized matrix ``P`` (``v=None``) or ``P @ v``.

    ``O(L²·(d + m + d_v))`` time, ``O(L²)`` memory; for tests and small problems.
    """
    W, _ = sparse_lowrank_weights(q, k, support, feature_map, causal=causal, scale=scale,
                                  check_finite=check_finite)
    xp = namespace(W)
    den = xp.sum(W, axis=-1, keepdims=True)
    tiny = float(np.finfo(np.float32 if "32" in str(W.dtype) else np.float64).tiny)
    ok = xp.abs(den) >= tiny
    P = xp.where(ok, W / xp.where(ok, den, xp.ones_like(den)), xp.zeros_like(W))
    return P if v is None else P @ v


@dataclass(frozen=True, eq=False)
class SparseLowRankAttention:
    """Sparse + low-rank attention with a fixed support rule and feature map.

    Parameters
    ----------
    feature_map : FeatureMap
        ``φ`` of the low-rank part.
    support : support or callable, optional
        A fixed support (see :func:`sparse_lowrank_attention`), or a callable
        ``support(q, k) -> support`` for adaptive ones (MRA selection, LSH), evaluated
        on every call.  ``None``: the empty support.
    causal : bool, default False
    scale : float, optional
    backend : str, default "auto"

    Examples
    --------
    >>> import numpy as np
    >>> from structattn import PositiveRandomFeatures
    >>> from structattn.graphs import window
    >>> from structattn.hybrid import SparseLowRankAttention
    >>> op = SparseLowRankAttention(PositiveRandomFeatures(dim=8, num_features=16, seed=0),
    ...                             support=window(32, 2))
    >>> x = np.random.default_rng(0).standard_normal((2, 32, 8))
    >>> op(x, x, x).shape, op.matrix(x, x).shape
    ((2, 32, 8), (2, 32, 32))
    """

    feature_map: FeatureMap
    support: Any = None
    causal: bool = False
    scale: float | None = None
    backend: str = "auto"

    def support_for(self, q: Any, k: Any) -> Any:
        """The support used for these inputs (a callable rule is evaluated)."""
        if callable(self.support) and not isinstance(self.support, type):
            return self.support(q, k)
        return self.support

    def __call__(self, q: Any, k: Any, v: Any) -> Any:
        """Output ``(..., L, d_v)``; see :func:`sparse_lowrank_attention`."""
        return sparse_lowrank_attention(q, k, v, self.support_for(q, k), self.feature_map,
                                        causal=self.causal, scale=self.scale,
                                        backend=self.backend)

    def matrix(self, q: Any, k: Any) -> Any:
        """Dense implied attention matrix ``(..., L, L)`` (rows sum to one)."""
        return sparse_lowrank_reference(q, k, None, self.support_for(q, k), self.feature_map,
                                        causal=self.causal, scale=self.scale)

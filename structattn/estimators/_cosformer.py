"""cosFormer (Qin et al., ICLR 2022): ReLU linear attention with a cosine re-weighting."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from .._array import as_like, namespace
from .._debug import resolve_check_finite
from .._validate import empty_attention, tiny
from ..attention import NormalizerWarning, _safe_divide
from ..backends import resolve_backend
from ..masks import Causal, Full
from . import _common as C

__all__ = ["cosformer", "cosformer_matrix"]


def _angles(L: int, max_length: Any) -> np.ndarray:
    M = L if max_length is None else C.check_int(max_length, "max_length")
    if M < L:
        raise ValueError(
            f"max_length must be >= the sequence length L={L} (so that all cosine "
            f"weights are positive), got max_length={M}"
        )
    return math.pi * np.arange(L, dtype=np.float64) / (2 * M)


def _features(x: Any, angles: np.ndarray) -> Any:
    """``[ReLU(x_i) cos a_i, ReLU(x_i) sin a_i]``, shape ``(..., L, 2d)``."""
    xp = namespace(x)
    r = xp.maximum(x, xp.zeros_like(x))
    cos = as_like(np.cos(angles)[:, None], x)
    sin = as_like(np.sin(angles)[:, None], x)
    return xp.concat([r * cos, r * sin], axis=-1)


def _prepare(q: Any, k: Any, v: Any, causal: Any, max_length: Any, check_finite: bool):
    vv = k[..., :0] if v is None else v
    _, L_q, L_k, _, _ = C.validated(q, k, vv, check_finite, values=v is not None)
    causal = C.check_bool(causal, "causal")
    if causal and L_q != L_k:
        raise ValueError(f"causal=True needs L_q == L_k, got L_q={L_q} and L_k={L_k}")
    L = max(L_q, L_k)
    angles = _angles(L, max_length)
    return causal, angles[:L_q], angles[:L_k]


def cosformer(
    q: Any,
    k: Any,
    v: Any,
    *,
    causal: bool = False,
    max_length: int | None = None,
    eps: float = 0.0,
    backend: str = "auto",
    check_finite: bool = True,
) -> Any:
    """cosFormer attention, exact and linear in ``L`` (not a softmax approximation).

    Similarity ``s_ij = ReLU(q_i)·ReLU(k_j) · cos(π (i − j) / (2M))`` with ``M >= L``;
    ``y_i = Σ_j s_ij v_j / Σ_j s_ij`` (``j <= i`` when causal).  By
    ``cos(a − b) = cos a cos b + sin a sin b`` it is kernel attention with the
    position-dependent features ``[ReLU(x_i) cos(π i/2M), ReLU(x_i) sin(π i/2M)]``
    (``2d`` features), computed as one structured product ``[V | 1]`` (causal: the
    prefix-sum scan of :class:`~structattn.masks.Causal`, numba row recurrence or torch
    chunked scan).

    Parameters
    ----------
    q : array, shape (..., L_q, d)
    k : array, shape (..., L_k, d)
    v : array, shape (..., L_k, d_v)
    causal : bool, default False
        Query ``i`` sees keys ``j <= i`` (needs ``L_q == L_k``).
    max_length : int, optional
        ``M``; default ``max(L_q, L_k)``.  Must be ``>= max(L_q, L_k)``.  The
        re-weighting ``cos(π(i − j)/(2M))`` depends on ``M``, so with the default a causal
        output row depends on how many tokens *follow* it in the call (future tokens'
        values never enter, but their count does): for prefix-consistent or incremental
        causal decoding pass a fixed ``max_length`` (e.g. the model's context size).
    eps : float, default 0.0
        Added to every normalizer (the reference code adds 1e-6; it biases rows with a
        small normalizer).  Rows whose normalizer is exactly zero (every ``ReLU(q_i)·
        ReLU(k_j) = 0``) give zero output.
    backend : {"auto", "numpy", "numba", "torch"}
    check_finite : bool, default True

    Returns
    -------
    array, shape (..., L_q, d_v)

    Notes
    -----
    ``O(L·d·d_v)`` time; ``O(d·d_v)`` extra memory per batch element (non-causal).
    The position offset cancels in ``cos(a_i − a_j)``, so 0- and 1-based positions give
    the same result.  Dense reference: :func:`cosformer_matrix`.

    Examples
    --------
    >>> import numpy as np
    >>> from structattn.estimators import cosformer
    >>> x = np.random.default_rng(0).standard_normal((2, 16, 8))
    >>> cosformer(x, x, x, causal=True).shape
    (2, 16, 8)
    """
    causal, aq, ak = _prepare(q, k, v, causal, max_length, check_finite)
    eps = C.check_real(eps, "eps", minimum=0.0)
    backend = resolve_backend(backend, q, k, v)
    empty = empty_attention(q, k, v, q.shape[-2], k.shape[-2])
    if empty is not None:
        return empty
    xp = namespace(q, k, v)
    A, B = _features(q, aq), _features(k, ak)
    v1 = xp.concat([v, xp.ones_like(v[..., :1])], axis=-1)
    L_q, L_k = q.shape[-2], k.shape[-2]
    op = Causal(L_q) if causal else Full(L_q, L_k)
    out = op.masked_matmul(A, B, v1, backend=backend, check_finite=False)
    num, den = out[..., :-1], out[..., -1:]
    den = den + eps if eps else den
    if resolve_check_finite(None if check_finite else False, q):
        _warn_zero_rows(den)
    return _safe_divide(num, den)


def _warn_zero_rows(den: Any) -> None:
    """The typed warning of :func:`~structattn.kernel_attention` for zero normalizers.

    (A data-dependent check: numpy inputs, or torch inside ``structattn.debug()``.)
    """
    xp = namespace(den)
    bad = int(xp.sum(xp.astype(den < tiny(den), xp.int64)))
    if bad:
        warnings.warn(
            f"cosformer: {bad} attention normalizer(s) are zero or subnormal (every "
            "ReLU(q_i)·ReLU(k_j)·cos term vanishes, e.g. queries with no positive entry "
            "where the keys have one); those rows are returned as zeros",
            NormalizerWarning,
            stacklevel=3,
        )


def cosformer_matrix(
    q: Any,
    k: Any,
    *,
    causal: bool = False,
    max_length: int | None = None,
    eps: float = 0.0,
    check_finite: bool = True,
) -> Any:
    """The dense cosFormer attention matrix ``(..., L_q, L_k)`` (the O(L²) reference).

    ``rownormalize((ReLU(Q) ReLU(K)ᵀ) ⊙ [cos(π (i − j)/2M)]_ij)`` (lower triangle when
    causal), formed directly from the cosine matrix, not from the decomposition; with
    ``eps`` added to each row sum as in :func:`cosformer`.  ``O(L_q·L_k·d)`` time.
    """
    causal, aq, ak = _prepare(q, k, None, causal, max_length, check_finite)
    eps = C.check_real(eps, "eps", minimum=0.0)
    xp = namespace(q, k)
    rq, rk = xp.maximum(q, xp.zeros_like(q)), xp.maximum(k, xp.zeros_like(k))
    cos = np.cos(aq[:, None] - ak[None, :])
    if causal:
        cos = np.tril(cos)
    S = (rq @ C.transpose(rk)) * as_like(cos, q)
    den = xp.sum(S, axis=-1, keepdims=True)
    return _safe_divide(S, den + eps if eps else den)

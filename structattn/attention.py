"""Exact softmax attention (the reference) and masked kernel attention (the central operator).

Shapes follow :func:`torch.nn.functional.scaled_dot_product_attention`: queries
``(..., L_q, d)``, keys ``(..., L_k, d)``, values ``(..., L_k, d_v)``, output
``(..., L_q, d_v)``; ``...`` is any number of batch/head dimensions, identical for the
three inputs.  numpy in → numpy out; torch in → torch out on the same device and dtype.

Masks are **multiplicative**: a :class:`~structattn.masks.Mask` (or a boolean array,
True = keep) multiplies the unnormalized attention weights,

* ``softmax_attention``: ``Y = rownormalize(M ⊙ exp(Q Kᵀ · scale)) V``;
* ``kernel_attention``: ``Y = rownormalize(M ⊙ φ(Q) φ(K)ᵀ) V``, computed as one
  structured product ``M.masked_matmul(φ(Q), φ(K), [V, 1])`` that yields the numerator
  and the normalizer together, without forming any ``L_q x L_k`` matrix.

A float array is *not* accepted as a mask, because other libraries read float masks as
additive biases; wrap it in :class:`~structattn.masks.Dense` to multiply, or pass
``Dense(np.exp(bias))`` for an additive bias.  Rows whose normalizer is exactly zero
(every key masked out) give zero output, never NaN.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._array import (
    as_like,
    dtype_name,
    is_numpy,
    is_torch,
    namespace,
    validate_attention_inputs,
    validate_float_array,
)
from ._debug import resolve_check_finite
from ._inputs import prepare_attention_inputs
from ._underflow import recompute_underflowed_matrix_rows, recompute_underflowed_rows
from ._validate import (
    check_finite_output,
    check_mask_batch,
    check_scale,
    empty_attention,
    tiny,
)
from .backends import resolve_backend
from .features import FeatureMap
from .masks import Causal, Dense, Full, Mask
from .masks.causal import BottomRightCausal

__all__ = [
    "FeatureMapAttention",
    "NormalizerWarning",
    "SoftmaxAttention",
    "attention_matrix",
    "kernel_attention",
    "softmax_attention",
]


class NormalizerWarning(RuntimeWarning):
    """Some attention normalizers were non-positive (signed features or signed masks)."""


# ------------------------------------------------------------------------- helpers
def _resolve_mask(mask: Any, causal: bool, L_q: int, L_k: int) -> Mask | None:
    """Validate ``mask``/``causal`` against the sequence lengths; combine them."""
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be a bool, got {causal!r}")
    if mask is not None and not isinstance(mask, Mask):
        if not (is_numpy(mask) or is_torch(mask)):
            raise TypeError(
                f"mask must be a structattn Mask or a boolean array, got {type(mask).__name__}"
            )
        if dtype_name(mask) != "bool":
            raise TypeError(
                f"mask arrays must be boolean (True = keep), got dtype {dtype_name(mask)}; "
                "a float array is ambiguous (multiplicative or additive?): wrap it as "
                "masks.Dense(matrix) to multiply the attention weights"
            )
        mask = Dense(mask)
    if mask is not None and mask.shape != (L_q, L_k):
        raise ValueError(
            f"mask has shape {mask.shape} but the attention is L_q x L_k = {L_q} x {L_k}; "
            f"build the mask for these lengths"
        )
    memo = _memo_key(mask, causal)
    cache = mask._state_cache() if memo is not None else {}
    if memo in cache:
        resolved = cache[memo]
    else:
        if causal:
            # L_q == L_k: the usual square mask; otherwise bottom-right aligned (the
            # queries are the last L_q positions), as in decoding with a KV cache
            causal_mask = Causal(L_q) if L_q == L_k else BottomRightCausal(L_q, L_k)
            mask = causal_mask if mask is None else mask.hadamard(causal_mask)
        resolved = None if mask is None else mask._normalized()
        if memo is not None:
            cache[memo] = resolved
    if resolved is not None and not _mask_flags(resolved)[0]:
        warnings.warn(
            f"the mask ({type(resolved).__name__}) has negative entries: attention weights "
            "are then not a convex combination and normalizers can vanish; use a "
            "positive parameterization such as Toeplitz.from_log",
            NormalizerWarning,
            stacklevel=3,
        )
    return resolved


def _memo_key(mask: Any, causal: bool) -> tuple[str, bool] | None:
    """Key under which a mask with numpy parameters keeps its resolved form.

    Masks are immutable, so the combination with the causal mask and the normalization
    are computed once per mask (and their device copies cached on the resolved mask);
    masks holding torch tensors (trainable coefficients) are resolved on every call.
    """
    if not isinstance(mask, Mask) or not hasattr(mask, "_state_cache"):
        return None
    if any(is_torch(p) for p in mask._parameters()):
        return None
    return ("resolved", bool(causal))


def _mask_flags(mask: Mask) -> tuple[bool, bool]:
    """``(nonnegative, causal keys)`` of a resolved mask, computed once for numpy masks.

    The properties inspect the mask's parameters on the host; caching them keeps a
    repeated (or ``torch.compile``-traced) call free of numpy work.
    """
    cache = mask._state_cache() if _memo_key(mask, False) is not None else None
    if cache is not None and "flags" in cache:
        return cache["flags"]
    flags = (bool(mask.nonnegative),
             bool(mask.lower_triangular) or isinstance(mask, BottomRightCausal))
    if cache is not None:
        cache["flags"] = flags
    return flags


def _is_causal(mask: Mask | None) -> bool:
    """True when no row depends on later keys (then keys use causal stabilizers)."""
    return mask is not None and _mask_flags(mask)[1]


def _check_scale(scale: Any, d: int) -> float:
    """``scale``: a finite number ``> 0``, default ``d**-0.5`` (:func:`~._validate.check_scale`)."""
    return check_scale(scale, d)


def _safe_divide(num: Any, den: Any, *, inplace: bool = False) -> Any:
    """``num / den`` row-wise, 0 where ``|den|`` is below the smallest normal number.

    (No NaN, gradients stay finite; a subnormal ``den`` would give garbage rows.)

    On torch tensors always the branch-free form (no host synchronization): one
    division by ``den`` with its small entries replaced by 1, then the rows zeroed in
    place (``masked_fill_`` on the division's own result: autograd-safe, the division
    saves its inputs, not its output).  ``inplace=True`` (numpy): ``num`` is a
    temporary of the caller and receives the quotient (no new ``(..., L, d_v)`` array).
    """
    xp = namespace(num, den)
    # subnormal normalizers have lost their relative precision: treated as zero
    nonzero = xp.abs(den) >= tiny(den)
    if is_torch(den):
        out = num / xp.where(nonzero, den, xp.ones_like(den))
        return out.masked_fill_(~nonzero, 0)
    if bool(xp.all(nonzero)):  # the common numpy case: one pass
        if inplace and num.flags.writeable:
            return np.divide(num, den, out=num)
        return num / den
    return xp.where(nonzero, num / xp.where(nonzero, den, xp.ones_like(den)), xp.zeros_like(num))


def _warn_nonpositive(den: Any, what: str) -> None:
    xp = namespace(den)
    bad = int(xp.sum(xp.astype(den <= 0, xp.int64)))
    if bad:
        warnings.warn(
            f"{bad} attention normalizer(s) are <= 0 ({what}); outputs of those rows are "
            "unreliable (zero normalizers give zero rows)",
            NormalizerWarning,
            stacklevel=3,
        )


def _weights_softmax(q: Any, k: Any, mask: Mask | None, scale: float) -> Any:
    """Unnormalized, stabilized ``M ⊙ exp(S - rowmax)`` with ``S = Q Kᵀ · scale``."""
    xp = namespace(q, k)
    S = (q @ xp.matrix_transpose(k)) * scale
    if mask is None:
        return xp.exp(S - xp.max(S, axis=-1, keepdims=True))
    W = mask.to_dense(like=q)
    keep = W != 0
    neg_inf = as_like(np.array(-np.inf), q)
    S_kept = xp.where(keep, S, neg_inf)
    row_max = xp.max(S_kept, axis=-1, keepdims=True)
    row_max = xp.where(xp.isfinite(row_max), row_max, xp.zeros_like(row_max))
    return W * xp.exp(S_kept - row_max)


def _features(q: Any, k: Any, feature_map: FeatureMap, causal: bool) -> tuple[Any, Any]:
    if not isinstance(feature_map, FeatureMap):
        raise TypeError(
            f"feature_map must be a structattn FeatureMap, got {type(feature_map).__name__}"
        )
    return feature_map.attention_features(q, k, causal=causal)


# ---------------------------------------------------------------------- functions
def softmax_attention(
    q: Any,
    k: Any,
    v: Any,
    *,
    mask: Mask | Any | None = None,
    causal: bool = False,
    scale: float | None = None,
    backend: str = "auto",
    check_finite: bool | None = None,
    enable_gqa: bool = False,
) -> Any:
    """Exact (masked) softmax attention: the dense reference.

    ``Y = rownormalize(M ⊙ exp(Q Kᵀ · scale)) V``, stabilized by subtracting each row's
    maximum over its unmasked scores.

    Parameters
    ----------
    q : array, shape (..., L_q, d)
    k : array, shape (..., L_k, d)
    v : array, shape (..., L_k, d_v)
        numpy arrays or torch tensors of one dtype (float32/float64) and device, with
        identical leading (batch, head) dimensions.
    mask : Mask or bool array of shape (..., L_q, L_k), optional
        Multiplies the exponentiated scores (True = keep for boolean arrays).
    causal : bool, default False
        Multiply by the causal mask (``j <= i``; needs ``L_q == L_k``).
    scale : float, optional
        Score scale; default ``d**-0.5``.
    backend : {"auto", "numpy", "numba", "torch"}
        numpy and numba run the same numpy code here (there is no hot loop).
    check_finite : bool, optional
        Reject NaN/Inf inputs.  Default: numpy inputs are checked; torch tensors only
        inside :func:`structattn.debug` (a check is a host synchronization).
    enable_gqa : bool, default False
        Grouped-query attention: ``k``/``v`` of shape ``(..., H_kv, L_k, ·)`` with
        ``H_kv`` dividing the ``H_q`` heads of ``q`` (query head ``h`` uses key/value
        head ``h // (H_q / H_kv)``, as SDPA's ``enable_gqa``).

    Returns
    -------
    array, shape (..., L_q, d_v)
        float16/bfloat16 torch inputs are computed in float32 (scores, softmax and
        normalizer) and the output is cast back to the input dtype.

    Notes
    -----
    ``O(L_q·L_k·(d + d_v))`` time and ``O(L_q·L_k)`` memory per batch element.  Rows
    with every key masked out return zeros.

    Examples
    --------
    >>> import numpy as np
    >>> from structattn import softmax_attention
    >>> q = k = v = np.eye(2)[None]
    >>> softmax_attention(q, k, v, causal=True).round(4)
    array([[[1.    , 0.    ],
            [0.3302, 0.6698]]])

    The second row is ``softmax([0, 1/√2])``: ``1 / (1 + e^{1/√2}) = 0.3302``.
    """
    checks = resolve_check_finite(check_finite, q, k, v)
    host_checks = checks or not is_torch(q)  # data-dependent warnings (host sync on torch)
    q, k, v, restore = prepare_attention_inputs(q, k, v, enable_gqa=enable_gqa)
    batch, L_q, L_k, d, _ = validate_attention_inputs(q, k, v, check_finite=checks)
    resolve_backend(backend, q, k, v)
    scale = _check_scale(scale, d)
    check_mask_batch(mask, batch)
    empty = empty_attention(q, k, v, L_q, L_k)
    if empty is not None:
        return restore(empty)
    mask = _resolve_mask(mask, causal, L_q, L_k)
    E = _weights_softmax(q, k, mask, _check_scale(scale, d))
    den = namespace(E).sum(E, axis=-1, keepdims=True)
    if host_checks and mask is not None and not mask.nonnegative:
        _warn_nonpositive(den, "signed mask")
    out = _safe_divide(E @ v, den)
    return restore(check_finite_output(out, "softmax_attention", checks))


def kernel_attention(
    q: Any,
    k: Any,
    v: Any,
    feature_map: FeatureMap,
    *,
    mask: Mask | Any | None = None,
    causal: bool = False,
    backend: str = "auto",
    check_finite: bool | None = None,
    enable_gqa: bool = False,
) -> Any:
    """Masked kernel (linear) attention ``rownormalize(M ⊙ φ(Q) φ(K)ᵀ) V``.

    Computed as one structured product ``M.masked_matmul(φ(Q), φ(K), [V | 1])``, whose
    last column is the normalizer (for the causal scan masks the ones column is
    appended per chunk inside the scan, never as a copy of ``V``); no ``L_q x L_k``
    matrix is formed unless the mask is itself dense.  Rows whose normalizer
    underflowed are recomputed in the log domain where checks run (see
    :doc:`/reliability`).  With a softmax-approximating map and its default scale this
    approximates ``softmax_attention(q, k, v, mask=mask, causal=causal)``.

    Parameters
    ----------
    q : array, shape (..., L_q, d)
    k : array, shape (..., L_k, d)
    v : array, shape (..., L_k, d_v)
    feature_map : FeatureMap
        ``φ``; e.g. :class:`~structattn.features.PositiveRandomFeatures`.
    mask : Mask or bool array, optional
        Structured mask ``M`` (``L_q x L_k``).
    causal : bool, default False
        Multiply by the causal mask; the key features then use a causal stabilizer, and
        with the scan-based causal masks (``Causal``, ``DecayedCausal``, exponential
        symbols) rows ``<= i`` are bit-identical whatever the keys/values after ``i``
        (FFT-based causal masks, e.g. a causal ``Toeplitz``, only up to rounding).
    backend : {"auto", "numpy", "numba", "torch"}
        ``"numba"`` runs the chunked causal scan (GEMMs inside chunks of ``C`` tokens,
        a carried ``m x d_v`` state) with one task per (batch element, chunk) on numpy
        arrays; ``"torch"`` runs the same chunked scan with an O(L·(m + d_v))-memory
        autograd.
    check_finite : bool, optional
        Default: numpy inputs are checked; torch tensors only inside
        :func:`structattn.debug` (no host synchronization in a default torch call, not
        even for the normalizer warnings).
    enable_gqa : bool, default False
        Grouped-query attention (``k``/``v`` with fewer heads on axis ``-3``); see
        :func:`softmax_attention`.

    Returns
    -------
    array, shape (..., L_q, d_v)
        float16/bfloat16 torch inputs are computed in float32 (features, prefix states,
        normalizers) and the output is cast back to the input dtype.

    Notes
    -----
    Time ``O(L·m·d) + T_M(m·(d_v + 1))``: ``O(L·m·d_v)`` without a mask or with a
    causal mask (``m`` = number of features).  A row whose normalizer is exactly zero
    gives zeros; non-positive normalizers (signed features or masks) raise a
    :class:`NormalizerWarning`.
    """
    checks = resolve_check_finite(check_finite, q, k, v)
    host_checks = checks or not is_torch(q)  # data-dependent warnings (host sync on torch)
    q, k, v, restore = prepare_attention_inputs(q, k, v, enable_gqa=enable_gqa)
    batch, L_q, L_k, _, _ = validate_attention_inputs(q, k, v, check_finite=checks)
    backend = resolve_backend(backend, q, k, v)
    check_mask_batch(mask, batch)
    if not isinstance(feature_map, FeatureMap):
        raise TypeError(
            f"feature_map must be a structattn FeatureMap, got {type(feature_map).__name__}"
        )
    empty = empty_attention(q, k, v, L_q, L_k)
    if empty is not None:
        return restore(empty)
    mask = _resolve_mask(mask, causal, L_q, L_k)
    phi_q, phi_k = _features(q, k, feature_map, _is_causal(mask))
    xp = namespace(v)
    operator = mask if mask is not None else Full(L_q, L_k)
    normalized = getattr(operator, "_masked_matmul_normalized", None)
    if normalized is not None:  # causal scans build the ones column per chunk
        num, den = normalized(phi_q, phi_k, v, backend)
    else:
        v1 = xp.concat([v, xp.ones_like(v[..., :1])], axis=-1)
        out = operator.masked_matmul(phi_q, phi_k, v1, backend=backend, check_finite=False)
        num, den = out[..., :-1], out[..., -1:]
    signed = not (feature_map.nonnegative and operator.nonnegative)
    if host_checks and signed:
        _warn_nonpositive(den, "signed features or mask")
    out = _safe_divide(num, den, inplace=True)  # num: the kernel's own temporary
    if host_checks and not signed:
        # rows whose normalizer underflowed are recomputed in the log domain (or
        # reported); torch outside debug(): no data-dependent step, no host sync
        out = recompute_underflowed_rows(out, den, q, k, v, feature_map, operator)
    return restore(check_finite_output(out, "kernel_attention", checks))


def attention_matrix(
    q: Any,
    k: Any,
    *,
    feature_map: FeatureMap | None = None,
    mask: Mask | Any | None = None,
    causal: bool = False,
    scale: float | None = None,
    backend: str = "auto",
    check_finite: bool | None = None,
) -> Any:
    """The dense ``(..., L_q, L_k)`` row-stochastic attention matrix (for studies).

    Without ``feature_map``: ``rownormalize(M ⊙ exp(Q Kᵀ · scale))``, the matrix of
    :func:`softmax_attention`.  With ``feature_map``:
    ``rownormalize(M ⊙ φ(Q) φ(K)ᵀ)``, the matrix :func:`kernel_attention` applies
    implicitly (same stabilized features, so ``P @ v`` equals its output).

    Notes
    -----
    ``O(L_q·L_k·d)`` time and ``O(L_q·L_k)`` memory.
    """
    check_finite = resolve_check_finite(check_finite, q, k)
    for name, a in (("q", q), ("k", k)):
        validate_float_array(a, name, min_ndim=2, check_finite=check_finite)
    # values are not needed; validate shapes with a zero-width stand-in
    xp = namespace(q, k)
    validate_attention_inputs(q, k, k[..., :0], check_finite=False, values=False)
    resolve_backend(backend, q, k)
    L_q, L_k, d = q.shape[-2], k.shape[-2], q.shape[-1]
    check_mask_batch(mask, tuple(q.shape[:-2]))
    if L_q == 0 or L_k == 0:  # degenerate lengths: an empty or all-zero matrix
        return empty_attention(q, k, k, L_q, L_k, width=L_k)
    mask = _resolve_mask(mask, causal, L_q, L_k)
    if feature_map is None:
        W = _weights_softmax(q, k, mask, _check_scale(scale, d))
    else:
        if scale is not None:
            raise ValueError(
                "scale must be None when feature_map is given: the feature map holds "
                "its own scale"
            )
        phi_q, phi_k = _features(q, k, feature_map, _is_causal(mask))
        W = phi_q @ xp.matrix_transpose(phi_k)
        dense = None if mask is None else mask.to_dense(like=q)
        if dense is not None:
            W = W * dense
    den = xp.sum(W, axis=-1, keepdims=True)
    P = _safe_divide(W, den)
    if feature_map is not None and (check_finite or not is_torch(q)) and (
            feature_map.nonnegative and (mask is None or mask.nonnegative)):
        # rows whose normalizer underflowed: recomputed in the log domain, as
        # kernel_attention does (torch outside debug(): no host sync)
        P = recompute_underflowed_matrix_rows(P, den, q, k, feature_map, dense)
    return check_finite_output(P, "attention_matrix", check_finite)


# ---------------------------------------------------------------------- operators
@dataclass(frozen=True, eq=False)
class SoftmaxAttention:
    """Exact softmax attention as an operator object (the study baseline).

    Parameters
    ----------
    mask : Mask, optional
    causal : bool, default False
    scale : float, optional
    backend : str, default "auto"
    """

    mask: Mask | None = None
    causal: bool = False
    scale: float | None = None
    backend: str = "auto"

    def __call__(self, q: Any, k: Any, v: Any) -> Any:
        """Output ``(..., L_q, d_v)``; see :func:`softmax_attention`."""
        return softmax_attention(
            q, k, v, mask=self.mask, causal=self.causal, scale=self.scale, backend=self.backend
        )

    def matrix(self, q: Any, k: Any) -> Any:
        """Dense attention matrix ``(..., L_q, L_k)``."""
        return attention_matrix(
            q, k, mask=self.mask, causal=self.causal, scale=self.scale, backend=self.backend
        )


@dataclass(frozen=True, eq=False)
class FeatureMapAttention:
    """Masked kernel attention with a fixed feature map, as an operator object.

    Parameters
    ----------
    feature_map : FeatureMap
    mask : Mask, optional
    causal : bool, default False
    backend : str, default "auto"

    Examples
    --------
    >>> import numpy as np
    >>> from structattn import FeatureMapAttention, PositiveRandomFeatures
    >>> op = FeatureMapAttention(PositiveRandomFeatures(dim=8, num_features=64, seed=0))
    >>> x = np.random.default_rng(0).standard_normal((2, 16, 8))
    >>> op(x, x, x).shape, op.matrix(x, x).shape
    ((2, 16, 8), (2, 16, 16))
    """

    feature_map: FeatureMap
    mask: Mask | None = None
    causal: bool = False
    backend: str = "auto"

    def __call__(self, q: Any, k: Any, v: Any) -> Any:
        """Output ``(..., L_q, d_v)``; see :func:`kernel_attention`."""
        return kernel_attention(
            q, k, v, self.feature_map, mask=self.mask, causal=self.causal, backend=self.backend
        )

    def matrix(self, q: Any, k: Any) -> Any:
        """Dense implied attention matrix ``(..., L_q, L_k)``."""
        return attention_matrix(
            q, k, feature_map=self.feature_map, mask=self.mask, causal=self.causal,
            backend=self.backend,
        )

    @property
    def reference(self) -> SoftmaxAttention:
        """The exact attention this operator approximates: softmax with the same mask.

        Uses the feature map's temperature when it estimates the softmax kernel.
        """
        scale = getattr(self.feature_map, "temperature", None)
        return SoftmaxAttention(mask=self.mask, causal=self.causal, scale=scale,
                                backend=self.backend)

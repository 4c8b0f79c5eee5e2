"""Baselines of every study table: uniform attention and the exact reference.

* ``"uniform"`` — :class:`UniformAttention`: every query returns the mean of the values
  over the keys it may see (the mask-weighted mean ``(M V) / (M 1)`` under a mask,
  the running mean under ``causal``).  It is softmax attention at zero scores: a method
  whose error is not below uniform's has learned nothing about the scores.
* ``"exact"`` — :class:`~structattn.attention.SoftmaxAttention` itself, in the study's
  dtype and backend: error 0 in float64 (rounding in float32) and the time every
  speedup is measured against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._array import is_torch, namespace, validate_attention_inputs
from ..attention import SoftmaxAttention, _resolve_mask, attention_matrix
from ..masks import Mask
from .registry import register

__all__ = ["UniformAttention"]


@dataclass(frozen=True, eq=False)
class UniformAttention:
    """Uniform attention: the mean of the values over the allowed keys.

    ``Y_i = Σ_j M_ij v_j / Σ_j M_ij`` — softmax attention with all scores equal
    (``Q = 0``), so :meth:`matrix` is the row-normalized mask.  Without a mask every row
    is the mean of ``v``; with ``causal`` row ``i`` is the mean of ``v_0 … v_i``.

    Parameters
    ----------
    mask : Mask or bool array of shape (L_q, L_k), optional
        Weights (True = attend); a weighted mask gives the weighted mean.
    causal : bool, default False
        Row ``i`` sees keys ``j <= i``.
    backend : {"auto", "numpy", "numba", "torch"}
        Passed to the mask products.

    Notes
    -----
    ``O(L·d_v)`` without a mask or with ``causal`` alone (a mean, a prefix sum); with a
    mask, two structured products ``M V`` and ``M 1`` (``O(L²·d_v)`` for a dense one).
    Rows whose keys are all masked return zeros.
    """

    mask: Mask | Any | None = None
    causal: bool = False
    backend: str = "auto"

    def __call__(self, q: Any, k: Any, v: Any) -> Any:
        """Output ``(..., L_q, d_v)`` for ``q (..., L_q, d)``, ``k (..., L_k, d)``,
        ``v (..., L_k, d_v)`` (``q`` and ``k`` only fix the shapes)."""
        _, L_q, L_k, _, _ = validate_attention_inputs(q, k, v)
        xp = namespace(q, k, v)
        mask = _resolve_mask(self.mask, self.causal, L_q, L_k)
        out_shape = (*v.shape[:-2], L_q, v.shape[-1])
        if L_k == 0 or L_q == 0:
            return xp.zeros(out_shape, dtype=v.dtype)
        if mask is None:
            mean = xp.mean(v, axis=-2, keepdims=True)
            return xp.broadcast_to(mean, out_shape) + xp.zeros(out_shape, dtype=v.dtype)
        if self.mask is None and L_q == L_k:  # plain causal: running mean, O(L·d_v)
            counts = xp.arange(1, L_q + 1, dtype=v.dtype)[:, None]
            return _cumsum(v) / counts
        ones = xp.ones((*v.shape[:-1], 1), dtype=v.dtype)
        num = mask.matmat(v, backend=self.backend, check_finite=False)
        den = mask.matmat(ones, backend=self.backend, check_finite=False)
        safe = xp.where(den > 0, den, xp.ones_like(den))
        return xp.where(den > 0, num / safe, xp.zeros_like(num))

    def matrix(self, q: Any, k: Any) -> Any:
        """The dense ``(..., L_q, L_k)`` map: the row-normalized mask (``O(L_q·L_k)``)."""
        xp = namespace(q, k)
        return attention_matrix(xp.zeros_like(q), xp.zeros_like(k), mask=self.mask,
                                causal=self.causal, backend=self.backend)


def _cumsum(v: Any) -> Any:
    if is_torch(v):
        import torch

        return torch.cumsum(v, dim=-2)
    return np.cumsum(v, axis=-2)


@register(
    "uniform",
    budgets={},
    description="baseline: mean of the values over the allowed keys (softmax at zero scores)",
)
def _uniform(*, dim: int, seed: int, causal: bool, backend: str = "auto") -> UniformAttention:
    del dim, seed  # deterministic, no parameters
    return UniformAttention(causal=causal, backend=backend)


@register(
    "exact",
    budgets={},
    description="reference: exact softmax attention in the study's dtype and backend",
)
def _exact(*, dim: int, seed: int, causal: bool, backend: str = "auto") -> SoftmaxAttention:
    del dim, seed
    return SoftmaxAttention(causal=causal, backend=backend)

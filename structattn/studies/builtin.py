"""Built-in registrations: the feature-map approximations of :mod:`structattn.features`.

Every factory returns a :class:`~structattn.attention.FeatureMapAttention` whose feature
map is drawn from ``seed``; the softmax temperature is the map's default ``dim**-0.5``,
the same as :func:`~structattn.attention.softmax_attention`.
"""

from __future__ import annotations

import math

import numpy as np

from ..attention import FeatureMapAttention
from ..features import EluFeatures, PositiveRandomFeatures, TrigonometricRandomFeatures
from ..masks import ExponentialDecay, GridRPE, Ripple, Toeplitz
from .registry import register

__all__ = ["alibi_log_coefficients", "grid_log_coefficients", "grid_shape_for"]


def _prf_attention(
    dim: int, seed: int, causal: bool, backend: str, num_features: int, mask=None, **kwargs
) -> FeatureMapAttention:
    """FAVOR+ attention with ``PositiveRandomFeatures(dim, num_features, seed, **kwargs)``."""
    phi = PositiveRandomFeatures(dim=dim, num_features=num_features, seed=seed, **kwargs)
    return FeatureMapAttention(phi, mask=mask, causal=causal, backend=backend)


@register(
    "performer",
    budgets={"num_features": (32, 128, 512)},
    description="FAVOR+ positive random features, orthogonal draws (Performer)",
)
def _performer(
    *, dim: int, seed: int, causal: bool, num_features: int = 128, backend: str = "auto"
) -> FeatureMapAttention:
    return _prf_attention(dim, seed, causal, backend, num_features)


@register(
    "performer-hyperbolic",
    budgets={"num_features": (16, 64, 256)},
    description="FAVOR+ hyperbolic (antithetic) features, 2m features from m draws",
)
def _performer_hyperbolic(
    *, dim: int, seed: int, causal: bool, num_features: int = 64, backend: str = "auto"
) -> FeatureMapAttention:
    return _prf_attention(dim, seed, causal, backend, num_features, hyperbolic=True)


@register(
    "performer-iid",
    budgets={"num_features": (32, 128, 512)},
    description="FAVOR+ positive random features, i.i.d. Gaussian draws",
)
def _performer_iid(
    *, dim: int, seed: int, causal: bool, num_features: int = 128, backend: str = "auto"
) -> FeatureMapAttention:
    return _prf_attention(dim, seed, causal, backend, num_features, orthogonal=False)


@register(
    "rfa-trig",
    budgets={"num_features": (16, 64, 256)},
    description="random Fourier (sin/cos) features, signed, 2m features (RFA)",
)
def _rfa_trig(
    *, dim: int, seed: int, causal: bool, num_features: int = 64, backend: str = "auto"
) -> FeatureMapAttention:
    phi = TrigonometricRandomFeatures(dim=dim, num_features=num_features, seed=seed)
    return FeatureMapAttention(phi, causal=causal, backend=backend)


@register(
    "linear-elu",
    budgets={},
    description="elu+1 linear attention: a different kernel, the cost of not approximating",
)
def _linear_elu(
    *, dim: int, seed: int, causal: bool, backend: str = "auto"
) -> FeatureMapAttention:
    del dim, seed  # deterministic map, d features
    return FeatureMapAttention(EluFeatures(), causal=causal, backend=backend)


# ------------------------------------------------------------ relative-position masks
# Masked rows use smaller feature budgets: a structured mask is applied to
# m·(d_v + 1) columns, so their cost grows with m·d_v (see docs/benchmarks.rst).
def alibi_log_coefficients(length: int) -> np.ndarray:
    """Asymmetric ALiBi-style log-mask ``b_k = -4k/L`` (``k >= 0``), ``-8|k|/L`` (``k < 0``).

    Slopes scale with ``1/L`` so that the mask spans the same range (``e^0 … e^-8``) at
    every length of a sweep.
    """
    k = np.arange(-(length - 1), length, dtype=np.float64)
    return np.where(k >= 0, -4.0 * k / length, 8.0 * k / length)


@register(
    "performer+toeplitz",
    budgets={"num_features": (16, 64)},
    description="FAVOR+ with a 1-D relative-position mask exp(b) applied by FFT (Toeplitz)",
)
def _performer_toeplitz(
    *, dim: int, seed: int, causal: bool, length: int, num_features: int = 128,
    backend: str = "auto",
) -> FeatureMapAttention:
    mask = Toeplitz.from_log(alibi_log_coefficients(length))
    return _prf_attention(dim, seed, causal, backend, num_features, mask=mask)


@register(
    "performer+exp-decay",
    budgets={"num_features": (16, 64)},
    description="FAVOR+ with a two-sided exponential-decay mask (exact O(L) recurrences)",
)
def _performer_exp_decay(
    *, dim: int, seed: int, causal: bool, length: int, num_features: int = 128,
    backend: str = "auto",
) -> FeatureMapAttention:
    mask = ExponentialDecay(length, gamma_left=math.exp(-4.0 / length),
                            gamma_right=math.exp(-8.0 / length))
    return _prf_attention(dim, seed, causal, backend, num_features, mask=mask)


def grid_shape_for(length: int) -> tuple[int, int]:
    """The most square ``n_1 x n_2`` grid with ``n_1·n_2 = length`` (``n_1 <= n_2``)."""
    n1 = max(d for d in range(1, math.isqrt(length) + 1) if length % d == 0)
    return n1, length // n1


def grid_log_coefficients(shape: tuple[int, int]) -> np.ndarray:
    """Asymmetric 2-D log-mask ``b(Δ) = -4|Δ_1|/n_1 - 4|Δ_2|/n_2 - 0.5·[Δ_1 < 0]``."""
    n1, n2 = shape
    d1, d2 = np.meshgrid(np.arange(-(n1 - 1), n1), np.arange(-(n2 - 1), n2), indexing="ij")
    return -4.0 * np.abs(d1) / n1 - 4.0 * np.abs(d2) / n2 - 0.5 * (d1 < 0)


@register(
    "performer+grid-rpe",
    budgets={"num_features": (16, 64)},
    description="FAVOR+ with a 2-D relative-position mask on the most square grid (d-dim FFT)",
)
def _performer_grid(
    *, dim: int, seed: int, causal: bool, length: int, num_features: int = 128,
    backend: str = "auto",
) -> FeatureMapAttention:
    shape = grid_shape_for(length)
    mask = GridRPE.from_log(grid_log_coefficients(shape), shape)
    return _prf_attention(dim, seed, causal, backend, num_features, mask=mask)


@register(
    "performer+ripple",
    budgets={"num_features": (16, 64)},
    description="FAVOR+ with ripple ring weights (stick-breaking, cutoff 4) on a 2-D grid",
    causal=False,
)
def _performer_ripple(
    *, dim: int, seed: int, causal: bool, length: int, num_features: int = 128,
    backend: str = "auto",
) -> FeatureMapAttention:
    mask = Ripple(grid_shape_for(length), stick_breaking_logits=np.zeros(4), cutoff=4)
    return _prf_attention(dim, seed, causal, backend, num_features, mask=mask)

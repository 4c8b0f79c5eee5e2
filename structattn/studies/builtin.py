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
from ..masks import ExponentialDecay, Toeplitz
from .registry import register

__all__ = ["alibi_log_coefficients"]


@register(
    "performer",
    budgets={"num_features": (32, 128, 512)},
    description="FAVOR+ positive random features, orthogonal draws (Performer)",
)
def _performer(
    *, dim: int, seed: int, causal: bool, num_features: int = 128, backend: str = "auto"
) -> FeatureMapAttention:
    phi = PositiveRandomFeatures(dim=dim, num_features=num_features, seed=seed)
    return FeatureMapAttention(phi, causal=causal, backend=backend)


@register(
    "performer-hyperbolic",
    budgets={"num_features": (16, 64, 256)},
    description="FAVOR+ hyperbolic (antithetic) features, 2m features from m draws",
)
def _performer_hyperbolic(
    *, dim: int, seed: int, causal: bool, num_features: int = 64, backend: str = "auto"
) -> FeatureMapAttention:
    phi = PositiveRandomFeatures(dim=dim, num_features=num_features, seed=seed, hyperbolic=True)
    return FeatureMapAttention(phi, causal=causal, backend=backend)


@register(
    "performer-iid",
    budgets={"num_features": (32, 128, 512)},
    description="FAVOR+ positive random features, i.i.d. Gaussian draws",
)
def _performer_iid(
    *, dim: int, seed: int, causal: bool, num_features: int = 128, backend: str = "auto"
) -> FeatureMapAttention:
    phi = PositiveRandomFeatures(dim=dim, num_features=num_features, seed=seed, orthogonal=False)
    return FeatureMapAttention(phi, causal=causal, backend=backend)


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
def alibi_log_coefficients(length: int) -> np.ndarray:
    """Asymmetric ALiBi-style log-mask ``b_k = -4k/L`` (``k >= 0``), ``-8|k|/L`` (``k < 0``).

    Slopes scale with ``1/L`` so that the mask spans the same range (``e^0 … e^-8``) at
    every length of a sweep.
    """
    k = np.arange(-(length - 1), length, dtype=np.float64)
    return np.where(k >= 0, -4.0 * k / length, 8.0 * k / length)


@register(
    "performer+toeplitz",
    budgets={"num_features": (32, 128, 512)},
    description="FAVOR+ with a 1-D relative-position mask exp(b) applied by FFT (Toeplitz)",
)
def _performer_toeplitz(
    *, dim: int, seed: int, causal: bool, length: int, num_features: int = 128,
    backend: str = "auto",
) -> FeatureMapAttention:
    phi = PositiveRandomFeatures(dim=dim, num_features=num_features, seed=seed)
    mask = Toeplitz.from_log(alibi_log_coefficients(length))
    return FeatureMapAttention(phi, mask=mask, causal=causal, backend=backend)


@register(
    "performer+exp-decay",
    budgets={"num_features": (32, 128, 512)},
    description="FAVOR+ with a two-sided exponential-decay mask (exact O(L) recurrences)",
)
def _performer_exp_decay(
    *, dim: int, seed: int, causal: bool, length: int, num_features: int = 128,
    backend: str = "auto",
) -> FeatureMapAttention:
    phi = PositiveRandomFeatures(dim=dim, num_features=num_features, seed=seed)
    mask = ExponentialDecay(length, gamma_left=math.exp(-4.0 / length),
                            gamma_right=math.exp(-8.0 / length))
    return FeatureMapAttention(phi, mask=mask, causal=causal, backend=backend)

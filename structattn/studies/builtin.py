"""Built-in registrations: the feature-map approximations of :mod:`structattn.features`.

Every factory returns a :class:`~structattn.attention.FeatureMapAttention` whose feature
map is drawn from ``seed``; the softmax temperature is the map's default ``dim**-0.5``,
the same as :func:`~structattn.attention.softmax_attention`.
"""

from __future__ import annotations

from ..attention import FeatureMapAttention
from ..features import EluFeatures, PositiveRandomFeatures, TrigonometricRandomFeatures
from .registry import register

__all__: list[str] = []


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

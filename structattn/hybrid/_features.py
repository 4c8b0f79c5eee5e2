"""Stabilized features and the matching log row scale of the exact part.

Inside :func:`~structattn.attention.kernel_attention` a feature map returns *stabilized*
features: scalar or per-feature shifts that cancel in the row-normalized output.  For the
maps of :mod:`structattn.features` the stabilized product is the raw kernel estimate times
a per-row factor,

    φ̃(q_i)·φ̃(k_j) = exp(ρ_i) · φ(q_i)·φ(k_j),   E[φ(q_i)·φ(k_j)] = exp(s_ij),

so the exact part of the hybrid is commensurate with the low-rank part only when written
as ``exp(s_ij + ρ_i)``.  ``ρ_i`` per map:

* :class:`~structattn.features.PositiveRandomFeatures` — the key feature ``r`` is
  shifted by ``c_r`` and the query log-features ``ℓ_ir + c_r`` by their row max
  ``a_i = max_r (ℓ_ir + c_r)``; the ``c_r`` cancel, so ``ρ_i = -a_i``;
* :class:`~structattn.features.TrigonometricRandomFeatures` — queries drop
  ``exp(|q_s|²/2)`` and keys are scaled by ``exp(-c)`` (``c`` the largest, or causal
  first, ``|k_s|²/2``), so ``ρ_i = -|q_{s,i}|²/2 - c``;
* maps that do not stabilize (elu+1, relu, :class:`~structattn.eigen.EigenFeatures`):
  ``ρ_i = 0``.

``eps > 0`` in :class:`PositiveRandomFeatures` adds a constant after stabilization, which
is not a row factor: the hybrid then treats ``eps`` as part of ``φ`` (documented bias).
"""

from __future__ import annotations

from typing import Any

from .._array import as_like, dtype_name, namespace
from ..features import (
    KEY_LOG_HEADROOM,
    FeatureMap,
    PositiveRandomFeatures,
    RandomFeatureMap,
    TrigonometricRandomFeatures,
)

__all__ = ["default_scale", "features_and_log_scale"]


def default_scale(feature_map: FeatureMap, d: int) -> float:
    """The softmax scale ``φ`` estimates: the map's temperature, else ``d**-0.5``."""
    if isinstance(feature_map, RandomFeatureMap):
        return feature_map.temperature
    ef = getattr(feature_map, "eigenfunctions", None)
    tau = getattr(getattr(ef, "kernel", None), "tau", None)
    if tau is not None:
        return 1.0 / float(tau)
    return d**-0.5


def _prf(fm: PositiveRandomFeatures, q: Any, k: Any, causal: bool) -> tuple[Any, Any, Any]:
    # the balanced stabilizer of PositiveRandomFeatures.attention_features, with its row
    # shift a_i kept (the same arithmetic, so an empty support reproduces kernel_attention)
    fm._check(q, "q")
    fm._check(k, "k")
    xp = namespace(q, k)
    lq, lk = fm._log_features(q), fm._log_features(k)
    if causal:
        first = lk[..., :1, :]
        bound = as_like(fm._feature_bounds(dtype_name(k)), k)
        capped = xp.where(first > bound, first, bound)
        fits = xp.all(lk - first <= KEY_LOG_HEADROOM[dtype_name(k)], axis=(-2, -1),
                      keepdims=True)
        shift = xp.where(fits, first, capped)
    else:
        shift = xp.max(lk, axis=-2, keepdims=True)
    lq = lq + shift
    a = xp.max(lq, axis=-1, keepdims=True)
    phi_q, phi_k = fm._stabilized(lq, a), fm._stabilized(lk, shift)
    return phi_q, phi_k, -a


def _trig(fm: TrigonometricRandomFeatures, q: Any, k: Any, causal: bool
          ) -> tuple[Any, Any, Any]:
    xp = namespace(q, k)
    phi_q, phi_k = fm.queries(q), fm.keys(k, causal=causal)
    _, half_q = fm._projected(q)
    _, half_k = fm._projected(k)
    ref = half_k if not causal else half_k[..., :1, :]
    c = xp.max(ref, axis=(-2, -1), keepdims=True)
    return phi_q, phi_k, -(half_q + c)


def _unstabilized(fm: FeatureMap) -> bool:
    cls = type(fm)
    return all(getattr(cls, name) is getattr(FeatureMap, name)
               for name in ("queries", "keys", "attention_features"))


def features_and_log_scale(feature_map: FeatureMap, q: Any, k: Any, causal: bool
                           ) -> tuple[Any, Any, Any]:
    """``(φ̃(Q) (..., L, m), φ̃(K) (..., L, m), ρ (..., L, 1))`` with the row scale ``ρ``.

    Raises
    ------
    TypeError
        If ``feature_map`` is not a FeatureMap, or stabilizes its features in a way whose
        row scale is unknown here (subclass overriding ``queries``/``keys``).
    """
    if not isinstance(feature_map, FeatureMap):
        raise TypeError(
            f"feature_map must be a structattn FeatureMap, got {type(feature_map).__name__}")
    if type(feature_map) is PositiveRandomFeatures or (
            isinstance(feature_map, PositiveRandomFeatures)
            and type(feature_map).attention_features is PositiveRandomFeatures.attention_features):
        return _prf(feature_map, q, k, causal)
    if isinstance(feature_map, TrigonometricRandomFeatures):
        return _trig(feature_map, q, k, causal)
    if _unstabilized(feature_map) or hasattr(feature_map, "eigenfunctions"):
        phi_q, phi_k = feature_map.attention_features(q, k, causal=causal)
        xp = namespace(q)
        return phi_q, phi_k, xp.zeros_like(q[..., :1])
    raise TypeError(
        f"{type(feature_map).__name__} overrides the stabilized queries()/keys() of "
        "FeatureMap; the hybrid needs their row scale ρ (see structattn.hybrid._features)"
    )

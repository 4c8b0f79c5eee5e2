"""Study registrations for the importance-sampling estimators and cosFormer.

* ``"rfa-snis"`` — RFA / Performer positive random features as self-normalised
  importance sampling (:func:`~structattn.estimators.rfa_snis`, log domain, i.i.d.
  draws); budget = number of samples ``S``; non-causal.
* ``"ra"`` — randomized attention (:func:`~structattn.estimators.randomized_attention`):
  unbiased and quadratic, a high-fidelity reference; budget = samples per query.
* ``"lara"`` / ``"lara-bh"`` — LARA (:func:`~structattn.estimators.lara`) with the
  default ``mis="opt"`` and with the balance heuristic; budget = number of landmarks
  ``C`` (4, 8, 16: every study length must be at least 16); non-causal.
* ``"cosformer"`` — exact cosFormer (:func:`~structattn.estimators.cosformer`): a
  different (ReLU, cosine-reweighted) attention, so its error against softmax is the
  cost of changing the map, not an approximation error.

Every random operator draws from the study ``seed``; ``dim`` is not needed by these
factories (the estimators read ``d`` from the inputs).
"""

from __future__ import annotations

from ..estimators import (
    CosformerAttention,
    LinearRandomizedAttention,
    RandomizedAttention,
    SNISAttention,
)
from .registry import register

__all__: list[str] = []

#: Landmark counts of the LARA rows (all <= 16, the smallest length a sweep may use).
LARA_LANDMARKS = (4, 8, 16)


@register(
    "rfa-snis",
    budgets={"num_samples": (32, 128, 512)},
    description="RFA/Performer positive features as self-normalised IS (log domain, iid)",
    causal=False,
)
def _rfa_snis(
    *, dim: int, seed: int, causal: bool, num_samples: int = 128, backend: str = "auto"
) -> SNISAttention:
    del dim
    if causal:
        raise ValueError("rfa-snis has no causal form (use 'performer' for causal FAVOR+)")
    return SNISAttention(num_samples=num_samples, seed=seed, backend=backend)


@register(
    "ra",
    budgets={"num_samples": (1, 2)},
    description="randomized attention: unbiased mixture samples per query, O(S L^2)",
)
def _ra(
    *, dim: int, seed: int, causal: bool, num_samples: int = 2, backend: str = "auto"
) -> RandomizedAttention:
    del dim
    return RandomizedAttention(num_samples=num_samples, seed=seed, causal=causal,
                               backend=backend)


@register(
    "lara",
    budgets={"num_landmarks": LARA_LANDMARKS},
    description="LARA: C segment-mean proposals, MIS weights mis='opt', linear in L",
    causal=False,
)
def _lara(
    *, dim: int, seed: int, causal: bool, num_landmarks: int = 8, backend: str = "auto"
) -> LinearRandomizedAttention:
    del dim
    if causal:
        raise ValueError("LARA has no causal form")
    return LinearRandomizedAttention(num_landmarks=num_landmarks, seed=seed, backend=backend)


@register(
    "lara-bh",
    budgets={"num_landmarks": LARA_LANDMARKS},
    description="LARA with balance-heuristic MIS weights (mis='bh', query-independent)",
    causal=False,
)
def _lara_bh(
    *, dim: int, seed: int, causal: bool, num_landmarks: int = 8, backend: str = "auto"
) -> LinearRandomizedAttention:
    del dim
    if causal:
        raise ValueError("LARA has no causal form")
    return LinearRandomizedAttention(num_landmarks=num_landmarks, seed=seed, mis="bh",
                                     backend=backend)


@register(
    "cosformer",
    budgets={},
    description="cosFormer: exact ReLU attention with cos reweighting (a different map)",
)
def _cosformer(
    *, dim: int, seed: int, causal: bool, backend: str = "auto"
) -> CosformerAttention:
    del dim, seed  # deterministic
    return CosformerAttention(causal=causal, backend=backend)

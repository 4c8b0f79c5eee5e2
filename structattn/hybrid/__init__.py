"""Sparse + low-rank attention (Scatterbrain) as one structured operator.

``A ≈ S ⊙ exp(QKᵀ·scale) + (1 − S) ⊙ φ(Q)φ(K)ᵀ``, normalized together:

* :func:`sparse_lowrank_attention`, :class:`SparseLowRankAttention` — the operator
  (numpy / numba / torch with autograd, causal and not), for any support;
* :func:`sparse_lowrank_reference`, :func:`sparse_lowrank_weights` — its dense reference;
* supports: :class:`Support`, :class:`BlockPattern`, :func:`mra_support` (MRA-2's
  adaptive block selection), :func:`lsh_support` (angular LSH buckets), and any
  :class:`~structattn.graphs.AttentionGraph`;
* :func:`split_budget` — the documented rule dividing a fraction of the dense work
  between support keys and features.
"""

from .attention import (
    SparseLowRankAttention,
    sparse_lowrank_attention,
    sparse_lowrank_reference,
    sparse_lowrank_weights,
)
from .budget import FEATURE_SHARE, dense_work, hybrid_work, split_budget
from .support import BlockPattern, Support, as_support, lsh_support, mra_support

__all__ = [
    "FEATURE_SHARE",
    "BlockPattern",
    "SparseLowRankAttention",
    "Support",
    "as_support",
    "dense_work",
    "hybrid_work",
    "lsh_support",
    "mra_support",
    "sparse_lowrank_attention",
    "sparse_lowrank_reference",
    "sparse_lowrank_weights",
    "split_budget",
]

"""Structured masks: ``L_q x L_k`` linear operators with fast products.

See :class:`Mask` for the contract every mask follows.
"""

from .base import Hadamard, Kronecker, Mask, StructureWarning, Transposed
from .basic import Dense, Full, LowRank
from .causal import Causal, DecayedCausal

__all__ = [
    "Causal",
    "DecayedCausal",
    "Dense",
    "Full",
    "Hadamard",
    "Kronecker",
    "LowRank",
    "Mask",
    "StructureWarning",
    "Transposed",
]

"""Structured masks: ``L_q x L_k`` linear operators with fast products.

See :class:`Mask` for the contract every mask follows.
"""

from .base import Mask, StructureWarning
from .basic import Dense, Full, LowRank
from .causal import Causal, DecayedCausal
from .composition import Hadamard, Kronecker, Scaled, Sum, Transposed
from .toeplitz import ExponentialDecay, SumOfExponentials, Toeplitz

__all__ = [
    "Causal",
    "DecayedCausal",
    "Dense",
    "ExponentialDecay",
    "Full",
    "Hadamard",
    "Kronecker",
    "LowRank",
    "Mask",
    "Scaled",
    "StructureWarning",
    "Sum",
    "SumOfExponentials",
    "Toeplitz",
    "Transposed",
]

"""Structured masks: ``L_q x L_k`` linear operators with fast products.

See :class:`Mask` for the contract every mask follows.
"""

from .base import Mask, StructureWarning
from .basic import Dense, Full, LowRank
from .causal import BottomRightCausal, Causal, DecayedCausal
from .composition import Hadamard, Kronecker, Product, Scaled, Sum, Transposed
from .grid import GridRPE, separable_grid
from .ripple import Ripple, stick_breaking
from .toeplitz import ExponentialDecay, SumOfExponentials, Toeplitz

__all__ = [
    "BottomRightCausal",
    "Causal",
    "DecayedCausal",
    "Dense",
    "ExponentialDecay",
    "Full",
    "GridRPE",
    "Hadamard",
    "Kronecker",
    "LowRank",
    "Mask",
    "Product",
    "Ripple",
    "Scaled",
    "StructureWarning",
    "Sum",
    "SumOfExponentials",
    "Toeplitz",
    "Transposed",
    "separable_grid",
    "stick_breaking",
]

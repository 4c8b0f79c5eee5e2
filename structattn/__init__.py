"""structattn: attention as a structured linear operator.

Exact softmax attention is the dense reference; every efficient mechanism is a
structured mask applied to a low-rank kernel, an approximation with a budget, a sparse
graph, or the solution of an optimization problem.  The same code runs on numpy arrays
(with numba kernels for hot loops) and torch tensors (CPU or CUDA, with autograd).
"""

from . import decoding, masks
from ._debug import debug
from ._version import __version__
from .attention import (
    FeatureMapAttention,
    NormalizerWarning,
    SoftmaxAttention,
    attention_matrix,
    kernel_attention,
    softmax_attention,
)
from .backends import BACKENDS
from .features import (
    EluFeatures,
    FeatureMap,
    PositiveRandomFeatures,
    RandomFeatureMap,
    ReluFeatures,
    TrigonometricRandomFeatures,
    gaussian_projection,
    orthogonal_gaussian,
)
from .masks import (
    Causal,
    DecayedCausal,
    Dense,
    Full,
    GridRPE,
    Hadamard,
    Kronecker,
    LowRank,
    Mask,
    Ripple,
    StructureWarning,
    separable_grid,
)

__all__ = [
    "BACKENDS",
    "Causal",
    "DecayedCausal",
    "Dense",
    "EluFeatures",
    "FeatureMap",
    "FeatureMapAttention",
    "Full",
    "GridRPE",
    "Hadamard",
    "Kronecker",
    "LowRank",
    "Mask",
    "NormalizerWarning",
    "PositiveRandomFeatures",
    "RandomFeatureMap",
    "ReluFeatures",
    "Ripple",
    "SoftmaxAttention",
    "StructureWarning",
    "TrigonometricRandomFeatures",
    "__version__",
    "attention_matrix",
    "debug",
    "decoding",
    "gaussian_projection",
    "kernel_attention",
    "masks",
    "orthogonal_gaussian",
    "separable_grid",
    "softmax_attention",
]

"""The importance-sampling view of softmax attention: RFA as SNIS, RA, LARA; and cosFormer.

In the scaled space (``q_s = q·scale^{1/2}``, ``k_s = k·scale^{1/2}``) exact attention is
an expectation, ``y_n = E_{w ~ p_n}[f(w)]``, with a per-query Gaussian mixture ``p_n``
and an integrand ``f(w) = softmax_m(w·k_m − |k_m|²/2) V`` shared by all queries
(kernels.md §2).  The estimators differ in where the samples ``w`` come from:

* :func:`rfa_snis` — ``N(0, I)`` for every query, self-normalised: the Performer / RFA
  positive-feature estimator, evaluated in the log domain;
* :func:`randomized_attention` — exact per-query mixture samples: unbiased, quadratic;
* :func:`lara` — ``C`` landmark proposals shared by all queries, combined by multiple
  importance sampling with query-specific weights: linear in ``L``.

:func:`cosformer` is an exact (deterministic) linear attention with a cosine
re-weighting, not a softmax approximation.  Every function takes ``(..., L, d)`` numpy
arrays or torch tensors (autograd flows through them); random draws come from an
explicit numpy ``seed``.
"""

from ._cosformer import cosformer, cosformer_matrix
from ._lara import (
    ALPHA_FLOOR,
    LANDMARKS,
    MIS_TYPES,
    LaraParts,
    lara,
    lara_parts,
    pooling_matrix,
)
from ._operators import (
    CosformerAttention,
    LinearRandomizedAttention,
    RandomizedAttention,
    SNISAttention,
)
from ._randomized import RA_MODES, randomized_attention
from ._snis import rfa_snis

__all__ = [
    "ALPHA_FLOOR",
    "LANDMARKS",
    "MIS_TYPES",
    "RA_MODES",
    "CosformerAttention",
    "LaraParts",
    "LinearRandomizedAttention",
    "RandomizedAttention",
    "SNISAttention",
    "cosformer",
    "cosformer_matrix",
    "lara",
    "lara_parts",
    "pooling_matrix",
    "randomized_attention",
    "rfa_snis",
]

"""Attention as the solution of an optimization problem.

:mod:`structattn.solvers.simplex` — the regularized argmax maps onto the probability
simplex (softmax, sparsemax, α-entmax) on numpy arrays and torch tensors.
:mod:`structattn.solvers.lasso` — column-wise lasso (ISTA/FISTA/LCA) with certificates.
:mod:`structattn.solvers.vars` — VARS attention as recurrent sparse reconstruction.
"""

from __future__ import annotations

from .consistent import ConsistentAttentionResult, consistent_attention
from .lasso import LassoResult, lasso, soft_threshold
from .simplex import ConvergenceWarning, entmax, softmax, sparsemax
from .vars import vars_attention

__all__ = [
    "ConsistentAttentionResult",
    "ConvergenceWarning",
    "LassoResult",
    "consistent_attention",
    "entmax",
    "lasso",
    "soft_threshold",
    "softmax",
    "sparsemax",
    "vars_attention",
]

"""Attention as the solution of an optimization problem.

:mod:`structattn.solvers.simplex` — the regularized argmax maps onto the probability
simplex (softmax, sparsemax, α-entmax) on numpy arrays and torch tensors.
"""

from __future__ import annotations

from .simplex import ConvergenceWarning, entmax, softmax, sparsemax

__all__ = ["ConvergenceWarning", "entmax", "softmax", "sparsemax"]

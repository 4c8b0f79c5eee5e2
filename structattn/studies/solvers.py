"""Study registrations for the optimization-based attention maps of :mod:`structattn.solvers`.

* ``"sparsemax-attention"`` and ``"entmax15-attention"`` — exact dense attention with a
  sparse simplex map instead of softmax (no budget).  Their error against softmax
  attention is the cost of *changing the map*, not of approximating it.
* ``"vars"`` — VARS-D attention with positive random features (``features="random"``,
  ``lam=0``, one ISTA step from the one-step initialization), budget = number of
  random features ``m``.  Its keys are tied to the queries and its output is a
  reconstruction of ``v`` (rows of its implied matrix do not sum to one), so it is far
  from softmax attention; it has no causal form and is skipped in causal sweeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._array import as_like, namespace
from ..solvers.attention_maps import SimplexAttention
from ..solvers.vars import vars_attention
from .registry import register

__all__ = ["VarsAttention"]


@register(
    "sparsemax-attention",
    budgets={},
    description="exact sparsemax attention: a sparse map, not an approximation of softmax",
)
def _sparsemax_attention(*, dim: int, seed: int, causal: bool) -> SimplexAttention:
    del dim, seed  # deterministic
    return SimplexAttention("sparsemax", causal=causal)


@register(
    "entmax15-attention",
    budgets={},
    description="exact 1.5-entmax attention: a sparse map, not an approximation of softmax",
)
def _entmax15_attention(*, dim: int, seed: int, causal: bool) -> SimplexAttention:
    del dim, seed
    return SimplexAttention("entmax", alpha=1.5, causal=causal)


@dataclass(frozen=True, eq=False)
class VarsAttention:
    """``vars_attention(features="random", lam=0)`` as an operator object.

    With ``lam = 0`` the output is linear in ``v``, so the implied matrix is the output
    for ``v = I`` (``L x L``).  ``k`` is validated but unused (keys tied to queries).
    """

    num_features: int
    seed: int
    steps: int = 1
    backend: str = "auto"

    def _run(self, q: Any, k: Any, v: Any) -> Any:
        return vars_attention(q, k, v, features="random", lam=0.0, steps=self.steps,
                              num_features=self.num_features, seed=self.seed, backend=self.backend)

    def __call__(self, q: Any, k: Any, v: Any) -> Any:
        """Output ``(..., L, d_v)``."""
        return self._run(q, k, v)

    def matrix(self, q: Any, k: Any) -> Any:
        """Implied (not row-stochastic) matrix ``(..., L, L)``: the output for ``v = I``."""
        xp = namespace(q)
        eye = as_like(np.eye(k.shape[-2]), q)
        eye = xp.broadcast_to(eye, (*k.shape[:-1], k.shape[-2]))
        return self._run(q, k, eye)


@register(
    "vars",
    budgets={"num_features": (16, 64)},
    description="VARS-D: random-feature templates, lam=0, one ISTA step (a reconstruction of v)",
    causal=False,
)
def _vars(
    *, dim: int, seed: int, causal: bool, num_features: int = 64, backend: str = "auto"
) -> VarsAttention:
    del dim
    if causal:
        raise ValueError("vars attention has no causal form")
    return VarsAttention(num_features=num_features, seed=seed, backend=backend)

"""Study registration of eigenfunction attention (:mod:`structattn.eigen`).

* ``"eigen-nystrom"`` — deterministic rank-``r`` softmax attention
  ``D⁻¹ Ψ_Q Λ Ψ_Kᵀ V`` from Nyström eigenfunctions of ``exp(q·k/√d)`` fitted on each
  (batch, head) slice's pooled query/key tokens (:class:`~structattn.eigen.EigenAttention`).
  Its budget ``rank`` takes the same values as Performer's ``num_features``
  (32, 128, 512), so the two low-rank methods are compared at equal rank.  No causal
  form (the basis depends on all tokens); small or negative row normalisers are
  reported as a warning in the study's notes.
"""

from __future__ import annotations

from ..eigen import EigenAttention
from .registry import register

__all__: list[str] = []


@register(
    "eigen-nystrom",
    budgets={"rank": (32, 128, 512)},
    description="rank-r Nyström eigenfunctions of exp(q·k/√d) on pooled tokens (deterministic)",
    causal=False,
    default=False,  # 72 dense eigensolves (up to 1024 points) per call: ~195 s of the sweep
)
def _eigen_nystrom(*, dim: int, seed: int, causal: bool, rank: int = 128,
                   backend: str = "auto") -> EigenAttention:
    del dim, causal  # the basis is fitted on the inputs; no causal form
    # short sequences have fewer pooled tokens than the rank: clipped, and recorded in the
    # study's notes through the RankClippedWarning
    return EigenAttention(rank=rank, landmarks=max(1024, 2 * rank), seed=seed,
                          backend=backend, clip_rank=True)

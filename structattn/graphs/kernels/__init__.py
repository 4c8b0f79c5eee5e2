"""Graph-kernel masks: structured ``L x L`` masks defined by a graph on the tokens.

* :class:`TreeDistanceMask` — ``Σ_s a_s r_s^{dist_T(i, j)}`` on a weighted tree, exact
  ``O(L)`` two-pass DP per column and term;
* :class:`DiffusionMask` — the heat kernel ``exp(−t·ℒ)`` (or ``exp(t·W)``), Taylor
  polynomial with an a-priori tolerance, ``O(K·|E|)`` per column;
* :class:`ResolventMask` — ``(I − λW)⁻¹`` (``λ·ρ(W) < 1``), Neumann series or CG;
* :class:`RandomWalkMask` — graph random features ``Ψ Ψ'ᵀ`` (random walks), unbiased
  for a power series in ``W``, ``O(nnz(Ψ))`` per column.

All are :class:`~structattn.masks.Mask` subclasses: they plug into
:func:`~structattn.kernel_attention` and :func:`~structattn.softmax_attention`.
Graphs are given as an :class:`~structattn.graphs.AttentionGraph`, a networkx graph (edge
attribute ``"weight"``, default 1), a scipy.sparse matrix or a dense numpy array.
"""

from .diffusion import DiffusionMask, ResolventMask, spectral_radius
from .random_walk import RandomWalkMask
from .tree import TreeDistanceMask

__all__ = [
    "DiffusionMask",
    "RandomWalkMask",
    "ResolventMask",
    "TreeDistanceMask",
    "spectral_radius",
]

"""Study registrations of the graph-kernel masks (:mod:`structattn.graphs.kernels`).

FAVOR+ (positive random features) with a graph-kernel mask on a graph built from the
sequence length:

* ``performer+tree`` — :class:`~structattn.graphs.kernels.TreeDistanceMask`,
  ``r = 0.8`` per unit edge, on a random recursive tree (token ``i > 0`` attached to a
  uniform earlier token; fixed graph seed 0), exact DP;
* ``performer+diffusion`` — :class:`~structattn.graphs.kernels.DiffusionMask`,
  ``exp(−ℒ)`` (``t = 1``, combinatorial Laplacian) on the most square grid graph;
* ``performer+grf`` — :class:`~structattn.graphs.kernels.RandomWalkMask` on the same
  grid (halting probability 0.5, modulation ``(1, 1/2, 1/8, 1/48)``, i.e. ``f_ℓ =
  (1/2)^ℓ/ℓ!``, so ``E[M̂] ≈ exp(W)``) swept over ``num_walks``; its ``reference`` is
  softmax attention with the *expected* mask ``E[M̂] = F(W)F(W)ᵀ``, so the error
  includes the random-walk estimate.

None of them is causal (a graph mask ⊙ the causal mask has no structured product).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np

from ..attention import FeatureMapAttention, SoftmaxAttention
from ..features import PositiveRandomFeatures
from ..graphs.kernels import DiffusionMask, RandomWalkMask, TreeDistanceMask
from ..masks import Dense, Mask
from .builtin import grid_shape_for
from .registry import register

__all__ = ["GRF_MODULATION", "ExpectedMaskAttention", "grid_graph_for", "random_recursive_tree"]

#: ``f_ℓ = (1/2)^ℓ/ℓ!`` for ``ℓ <= 3``: ``F(W)F(W)ᵀ`` approximates ``exp(W)``.
GRF_MODULATION = RandomWalkMask.diffusion_modulation(1.0, 3)


def random_recursive_tree(length: int, seed: int = 0) -> nx.Graph:
    """Token ``i > 0`` attached to a uniformly drawn earlier token (depth ``~e·log L``)."""
    rng = np.random.default_rng(seed)
    G = nx.empty_graph(length)
    if length > 1:
        parents = (rng.random(length - 1) * np.arange(1, length)).astype(np.int64)
        G.add_edges_from(zip(range(1, length), parents.tolist(), strict=True))
    return G


def grid_graph_for(length: int) -> nx.Graph:
    """The most square ``n_1 x n_2`` grid graph on ``length`` tokens (row-major labels)."""
    n1, n2 = grid_shape_for(length)
    return nx.convert_node_labels_to_integers(nx.grid_2d_graph(n1, n2), ordering="sorted")


def _prf(dim: int, seed: int, backend: str, num_features: int, mask: Mask):
    phi = PositiveRandomFeatures(dim=dim, num_features=num_features, seed=seed)
    return FeatureMapAttention(phi, mask=mask, causal=False, backend=backend)


@dataclass(frozen=True, eq=False)
class ExpectedMaskAttention(FeatureMapAttention):
    """Masked kernel attention whose exact reference uses another (expected) mask.

    Parameters
    ----------
    expected : Mask
        The mask the random ``mask`` estimates (e.g. ``E[M̂]`` of graph random features).
    """

    expected: Mask | None = None

    @property
    def reference(self) -> SoftmaxAttention:
        """Softmax attention with the expected mask (the quantity being estimated)."""
        scale = getattr(self.feature_map, "temperature", None)
        return SoftmaxAttention(mask=self.expected, causal=self.causal, scale=scale,
                                backend=self.backend)


@register(
    "performer+tree",
    budgets={"num_features": (16, 64)},
    description="FAVOR+ with a tree-distance mask 0.8^dist on a random tree (exact O(L) DP)",
    causal=False,
)
def _performer_tree(*, dim: int, seed: int, causal: bool, length: int,
                    num_features: int = 64, backend: str = "auto") -> Any:
    del causal
    mask = TreeDistanceMask(random_recursive_tree(length), 0.8)
    return _prf(dim, seed, backend, num_features, mask)


@register(
    "performer+diffusion",
    budgets={"num_features": (16, 64)},
    description="FAVOR+ with a heat-kernel mask exp(-L) on a grid graph (Taylor, tol 1e-10)",
    causal=False,
    default=False,  # m·(d_v+1) sparse Taylor series per head: ~165 s of the sweep
)
def _performer_diffusion(*, dim: int, seed: int, causal: bool, length: int,
                         num_features: int = 64, backend: str = "auto") -> Any:
    del causal
    mask = DiffusionMask(grid_graph_for(length), 1.0)
    return _prf(dim, seed, backend, num_features, mask)


@register(
    "performer+grf",
    budgets={"num_walks": (4, 16, 64)},
    description="FAVOR+ with a random-walk (GRF) mask on a grid graph; reference: E[mask]",
    causal=False,
)
def _performer_grf(*, dim: int, seed: int, causal: bool, length: int, num_walks: int = 16,
                   num_features: int = 64, backend: str = "auto") -> Any:
    del causal
    mask = RandomWalkMask(grid_graph_for(length), num_walks, 0.5, GRF_MODULATION, seed=seed)
    phi = PositiveRandomFeatures(dim=dim, num_features=num_features, seed=seed)
    return ExpectedMaskAttention(phi, mask=mask, causal=False, backend=backend,
                                 expected=Dense(mask.expected_dense()))

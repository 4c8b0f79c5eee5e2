"""Study registrations for sparse-graph softmax attention (:mod:`structattn.graphs`).

Each operator is exact softmax attention *restricted to a sparse attention graph*
built for the study's sequence length; the runner compares it with exact (full)
softmax attention, so its error is the cost of the sparsity pattern, and its budget
is the pattern's size:

* ``"sparse-hypercube"`` — Gray-code hypercube graph, budget ``block_size`` (1: token
  level, ``nnz = N(⌈log2 N⌉ + 1)``; 16: the official block-level layout);
* ``"sparse-bigbird"`` — window (``w = 3``) ∪ 2 global tokens ∪ ``num_random`` random
  keys per row, drawn from the study seed;
* ``"sparse-longformer"`` — window ``w`` ∪ 2 global tokens;
* ``"sparse-window"`` — sliding window ``|i − j| <= w``.

Causal sweeps intersect the graph with ``j <= i``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..graphs import AttentionGraph, bigbird, hypercube, longformer, window
from ..graphs.sparse_attention import sparse_attention, sparse_attention_matrix
from .registry import register

__all__ = ["SparseGraphAttention"]


@dataclass(frozen=True, eq=False)
class SparseGraphAttention:
    """Softmax attention restricted to ``graph``, as a study operator object.

    Parameters
    ----------
    graph : AttentionGraph
        Attention graph on the ``N`` tokens.
    causal : bool, default False
        Intersect the graph with ``j <= i``.
    scale : float, optional
        Score scale; default ``d**-0.5`` (the same as exact softmax attention).
    backend : {"auto", "numpy", "numba", "torch"}
        Backend of :func:`~structattn.graphs.sparse_attention`.
    """

    graph: AttentionGraph
    causal: bool = False
    scale: float | None = None
    backend: str = "auto"

    def __call__(self, q: Any, k: Any, v: Any) -> Any:
        """Output ``(..., N, d_v)`` of :func:`~structattn.graphs.sparse_attention`."""
        return sparse_attention(q, k, v, self.graph, scale=self.scale, causal=self.causal,
                                backend=self.backend)

    def matrix(self, q: Any, k: Any) -> Any:
        """The dense ``(..., N, N)`` attention matrix (zeros off the graph)."""
        return sparse_attention_matrix(q, k, self.graph, scale=self.scale, causal=self.causal,
                                       backend=self.backend)


@register(
    "sparse-hypercube",
    budgets={"block_size": (1, 4, 16)},
    description="softmax on the Gray-code hypercube graph (Hypercube Transformer), blocks of b",
)
def _sparse_hypercube(
    *, dim: int, seed: int, causal: bool, length: int, block_size: int = 1,
    backend: str = "auto",
) -> SparseGraphAttention:
    del dim, seed  # deterministic pattern
    return SparseGraphAttention(hypercube(length, block_size=block_size), causal=causal,
                                backend=backend)


@register(
    "sparse-bigbird",
    budgets={"num_random": (2, 8, 32)},
    description="softmax on BigBird: window w=3, 2 global tokens, r random keys per row",
)
def _sparse_bigbird(
    *, dim: int, seed: int, causal: bool, length: int, num_random: int = 8,
    backend: str = "auto",
) -> SparseGraphAttention:
    del dim
    graph = bigbird(length, 3, min(2, length), min(num_random, length), seed=seed)
    return SparseGraphAttention(graph, causal=causal, backend=backend)


@register(
    "sparse-longformer",
    budgets={"w": (8, 32, 128)},
    description="softmax on Longformer: sliding window |i-j| <= w plus 2 global tokens",
)
def _sparse_longformer(
    *, dim: int, seed: int, causal: bool, length: int, w: int = 32, backend: str = "auto",
) -> SparseGraphAttention:
    del dim, seed
    return SparseGraphAttention(longformer(length, w, min(2, length)), causal=causal,
                                backend=backend)


@register(
    "sparse-window",
    budgets={"w": (8, 32, 128)},
    description="softmax on a sliding window |i-j| <= w (local attention)",
)
def _sparse_window(
    *, dim: int, seed: int, causal: bool, length: int, w: int = 32, backend: str = "auto",
) -> SparseGraphAttention:
    del dim, seed
    return SparseGraphAttention(window(length, w), causal=causal, backend=backend)

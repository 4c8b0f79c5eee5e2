"""Random-walk graph random features (GRF): an unbiased low-cost mask ``M̂ = Ψ Ψ'ᵀ``.

masks.md §2.6 (GKAT / general graph random features, ICLR 2024; GRF topological masking,
ICLR 2025).  From every node ``i`` start ``n`` random walks; a walk halts with probability
``p`` before each step and otherwise moves to a uniformly chosen out-neighbour.  At
every step ``ℓ`` (``ℓ = 0`` included) the walk deposits

    f_ℓ · ω(prefix) / P(prefix)   on its current node,

where ``ω`` is the product of the edge weights along the prefix and
``P = Π_{t<ℓ} (1 − p)/deg(v_t)`` its sampling probability.  The average over the ``n``
walks is row ``ψ(i)``, with ``E[ψ(i)] = Σ_ℓ f_ℓ (W^ℓ)_{i·}``, i.e. ``E[Ψ] = F(W)`` with
``F(W) = Σ_ℓ f_ℓ W^ℓ``.  Two *independent* walk ensembles give ``Ψ`` and ``Ψ'``, so

    E[M̂] = E[Ψ] E[Ψ']ᵀ = F(W) F(W)ᵀ     (= Σ_k (f ∗ f)_k W^k for symmetric W),

an unbiased estimate of a power series in ``W``.  (The same walks for both factors, as
in parts of the literature, bias the estimate on pairs whose walks overlap.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..._validate import (
    check_int,
    check_probability,
    check_seed,
    reject_unknown,
    renamed_keyword,
)
from ...masks.base import Mask
from ._adjacency import AdjointPairProducts, SparseOperator, as_adjacency, check_length

__all__ = ["RandomWalkMask", "sample_walk_features"]


def sample_walk_features(
    W: sp.csr_array,
    num_walks: int,
    halting_prob: float,
    modulation: np.ndarray,
    seed: Any = None,
    **deprecated: Any,
) -> sp.csr_array:
    """One GRF feature matrix ``Ψ`` (``n x n`` CSR, ``E[Ψ] = Σ_ℓ f_ℓ W^ℓ``).

    All ``n·num_walks`` walks advance together (vectorised numpy); a walk also stops after
    ``len(modulation) − 1`` steps, beyond which it would deposit nothing.  The random
    draws per step are one uniform for halting and one for the neighbour choice of every
    live walk, in a fixed order: deterministic given ``seed``.

    Parameters
    ----------
    W : scipy.sparse.csr_array, shape (n, n)
        Nonnegative weighted adjacency (sorted indices).
    num_walks : int
    halting_prob : float
        In ``(0, 1)``.
    modulation : ndarray, shape (K + 1,)
        ``f_0 … f_K``.
    seed : int, numpy SeedSequence or Generator
        Source of the draws (a Generator is advanced in place).  ``rng=`` is the
        deprecated name of this keyword.

    Returns
    -------
    scipy.sparse.csr_array, shape (n, n)
    """
    seed = renamed_keyword(deprecated, "rng", "seed", seed, None, "sample_walk_features")
    reject_unknown(deprecated, "sample_walk_features")
    rng = check_seed(seed)
    num_walks = check_int(num_walks, "num_walks")
    halting_prob = check_probability(halting_prob, "halting_prob", allow_zero=False,
                                     allow_one=False)
    n = W.shape[0]
    indptr, indices, data = W.indptr, W.indices, W.data
    deg = np.diff(indptr)
    start = np.repeat(np.arange(n, dtype=np.int64), num_walks)
    cur = start.copy()
    load = np.ones(start.size)
    alive = np.arange(start.size)
    rows, cols, vals = [start], [start.copy()], [np.full(start.size, float(modulation[0]))]
    keep_scale = 1.0 / (1.0 - halting_prob)
    for step in range(1, len(modulation)):
        go = rng.random(alive.size) >= halting_prob
        alive = alive[go & (deg[cur[alive]] > 0)]
        if alive.size == 0:
            break
        v = cur[alive]
        d = deg[v]
        offset = np.minimum((rng.random(alive.size) * d).astype(np.int64), d - 1)
        pick = indptr[v] + offset
        load[alive] *= data[pick] * d * keep_scale
        cur[alive] = indices[pick]
        if modulation[step] != 0:
            rows.append(start[alive])
            cols.append(cur[alive])
            vals.append(modulation[step] * load[alive])
    psi = sp.coo_array((np.concatenate(vals) / num_walks,
                        (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsr()
    psi.sum_duplicates()
    psi.eliminate_zeros()
    psi.sort_indices()
    return sp.csr_array(psi)


def _check_modulation(modulation: Any) -> np.ndarray:
    try:
        f = np.asarray(modulation, dtype=np.float64)
    except (TypeError, ValueError):
        f = None
    if f is None or f.ndim != 1 or f.size < 1 or not np.all(np.isfinite(f)):
        raise ValueError(
            "modulation must be a non-empty 1-D sequence of finite coefficients f_0 … f_K "
            f"(the walk-length modulation, F(W) = Σ_l f_l W^l); got {modulation!r}"
        )
    return f


@dataclass(frozen=True, eq=False, init=False)
class RandomWalkMask(AdjointPairProducts, Mask):
    """Graph-random-feature mask ``M̂ = Ψ Ψ'ᵀ``, unbiased for ``F(W) F(W)ᵀ``.

    Parameters
    ----------
    graph : AttentionGraph, networkx.Graph, scipy.sparse matrix or numpy array
        Weighted adjacency ``W >= 0`` on the ``L`` tokens (walks follow out-edges).
    num_walks : int
        Walks per node and per feature matrix (the budget, ``>= 1``).
    halting_prob : float
        Probability ``p`` of halting before each step, ``0 < p < 1``.
    modulation : sequence of float
        ``f_0, …, f_K``: ``F(W) = Σ_ℓ f_ℓ W^ℓ``.  ``E[M̂] = F(W) F(W)ᵀ``, which for a
        symmetric ``W`` is the power series ``Σ_k (f ∗ f)_k W^k`` (``∗`` = convolution);
        e.g. ``f_ℓ = (t/2)^ℓ/ℓ!`` truncated at a degree ``K`` approximates ``exp(t·W)``
        (:meth:`diffusion_modulation`).  Walks stop after ``K`` steps.
    seed : int, numpy SeedSequence or Generator
        Explicit source of randomness (no global state): the mask is deterministic
        given the seed.
    length : int, optional
        Expected number of tokens ``L``; ``ValueError`` if the graph has another size.

    Notes
    -----
    Both feature matrices are drawn at construction, ``O(L·n·ℓ̄)`` work for mean walk
    length ``ℓ̄ <= min(K, (1 − p)/p)``, and stored as sparse CSR matrices with
    ``nnz(Ψ) <= L·n·(K + 1)``.  A product ``M̂ X = Ψ (Ψ'ᵀ X)`` is a scatter then a gather,
    ``O((nnz(Ψ) + nnz(Ψ'))·F)``: masked kernel attention costs
    ``O(nnz(Ψ)·m·d_v)`` and never forms ``L x L``.  scipy.sparse on numpy, sparse CSR
    tensors on torch (the operand's device; differentiable in the operand, the backward
    pass applies ``M̂ᵀ = Ψ' Ψᵀ``).  The mask is random (``exact = False``) and unbiased;
    attention's normalised output, a ratio, is not (bias ``O(1/n)``).  Importance
    weights grow like ``(deg·w/(1 − p))^ℓ``, so ``f_ℓ`` should decay faster than that.
    ``M̂`` is nonnegative when every ``f_ℓ >= 0``.
    """

    num_nodes: int
    num_walks: int
    halting_prob: float
    modulation: tuple[float, ...]

    def __init__(self, graph: Any, num_walks: int, halting_prob: float,
                 modulation: Sequence[float], seed: Any, *,
                 length: int | None = None) -> None:
        W = as_adjacency(graph)
        n = W.shape[0]
        check_length(n, length)
        num_walks = check_int(num_walks, "num_walks")
        halting_prob = check_probability(
            halting_prob, "halting_prob", allow_zero=False, allow_one=False,
            why="(0 never halts, 1 never leaves the start node)",
        )
        f = _check_modulation(modulation)
        rng = check_seed(seed)
        psi = sample_walk_features(W, int(num_walks), float(halting_prob), f, rng)
        psi_prime = sample_walk_features(W, int(num_walks), float(halting_prob), f, rng)
        object.__setattr__(self, "num_nodes", n)
        object.__setattr__(self, "num_walks", int(num_walks))
        object.__setattr__(self, "halting_prob", float(halting_prob))
        object.__setattr__(self, "modulation", tuple(float(x) for x in f))
        object.__setattr__(self, "_W", W)
        object.__setattr__(self, "_psi", SparseOperator(psi))
        object.__setattr__(self, "_psi_prime", SparseOperator(psi_prime))

    # ---------------------------------------------------------------- structure
    exact = False

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_nodes, self.num_nodes)

    @property
    def nonnegative(self) -> bool:  # type: ignore[override]
        return all(x >= 0 for x in self.modulation)

    @property
    def lower_triangular(self) -> bool:  # type: ignore[override]
        return self.num_nodes == 1

    @property
    def features(self) -> tuple[sp.csr_array, sp.csr_array]:
        """``(Ψ, Ψ')``: the two independent feature matrices (float64 CSR, ``L x L``)."""
        return self._psi.matrix, self._psi_prime.matrix

    @property
    def nnz(self) -> int:
        """``nnz(Ψ) + nnz(Ψ')``."""
        return self._psi.nnz + self._psi_prime.nnz

    @staticmethod
    def diffusion_modulation(t: float, order: int) -> tuple[float, ...]:
        """``f_ℓ = (t/2)^ℓ/ℓ!`` for ``ℓ <= order``: ``F(W)F(W)ᵀ ≈ exp(t·W)`` (symmetric W).

        Parameters
        ----------
        t : float
            Diffusion time, ``>= 0``.
        order : int
            Truncation degree ``K >= 0``.

        Returns
        -------
        tuple of float
        """
        if not (math.isfinite(t) and t >= 0) or not isinstance(order, int) or order < 0:
            raise ValueError(f"need t >= 0 and an int order >= 0, got t={t!r}, order={order!r}")
        return tuple((t / 2) ** k / math.factorial(k) for k in range(order + 1))

    def expected_dense(self) -> np.ndarray:
        """``E[M̂] = F(W) F(W)ᵀ`` as a dense float64 array (``O(K·L²)``; for studies)."""
        Wd = self._W.toarray()
        F = np.zeros_like(Wd)
        for coef in reversed(self.modulation):  # Horner: F = f_0 + W(f_1 + W(…))
            F = Wd @ F
            F[np.diag_indices_from(F)] += coef
        return F @ F.T

    def cost(self, F: int) -> float:
        """Estimated flops of one product with ``F`` columns: ``2·(nnz(Ψ) + nnz(Ψ'))·F``."""
        return 2.0 * self.nnz * F

    # --------------------------------------------------------------- products
    def _apply(self, X: Any, transpose: bool) -> Any:
        first, second = (self._psi, self._psi_prime) if transpose else (
            self._psi_prime, self._psi)
        # M̂ X = Ψ (Ψ'ᵀ X);  M̂ᵀ X = Ψ' (Ψᵀ X)
        return second.apply(first.apply(X, transpose=True))

    def _structure(self) -> str:
        return (f"graph random features, {self.num_walks} walks/node, p_halt="
                f"{self.halting_prob:g}, K={len(self.modulation) - 1}, nnz(Ψ)+nnz(Ψ')="
                f"{self.nnz}: scatter/gather O(nnz·F), unbiased estimate")

"""Tree-distance masks ``M_ij = Σ_s a_s r_s^{dist_T(i, j)}`` by the exact two-pass DP.

masks.md §2.5: on a tree with edge lengths ``w_e``, ``r^{dist(i, j)} = Π_{e ∈ path(i, j)}
r^{w_e}``, so one product ``M X`` is an up pass (subtree sums) and a down pass (the rest
of the tree seen from the parent), ``O(L·F)`` per exponential term, exact up to
rounding.  The kernel ``"tree_exp_dp"`` is numba's sibling-sum form for numpy arrays and
a level-wise float64 form for torch tensors (differentiable in the operand) and for
numpy without numba.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, connected_components

from ...backends import kernel
from ...masks.base import Mask
from ._adjacency import as_adjacency, check_length, is_symmetric

__all__ = ["TreeDistanceMask"]


def _parse_decay(decay: Any) -> tuple[tuple[float, float], ...]:
    """``decay`` as ``((a_1, r_1), …)``; see :class:`TreeDistanceMask`."""
    def bad(why: str) -> ValueError:
        return ValueError(
            "decay must be a float r with 0 < r <= 1 (M = r^dist) or a non-empty sequence "
            f"of (a, r) pairs with finite a and 0 < r <= 1 (M = Σ a r^dist); got "
            f"{decay!r} ({why})"
        )

    if isinstance(decay, bool):
        raise bad("a bool")
    if isinstance(decay, (int, float, np.integer, np.floating)):
        pairs = np.array([[1.0, float(decay)]])
    else:
        try:
            pairs = np.asarray(decay, dtype=np.float64)
        except (TypeError, ValueError):
            raise bad("not numeric") from None
        if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.shape[0] < 1:
            raise bad(f"shape {pairs.shape}, expected (S, 2)")
    a, r = pairs[:, 0], pairs[:, 1]
    if not np.all(np.isfinite(a)):
        raise bad("non-finite amplitude")
    if not np.all(np.isfinite(r) & (r > 0) & (r <= 1)):
        raise bad("a ratio outside (0, 1]")
    return tuple((float(x), float(y)) for x, y in pairs)


@dataclass(frozen=True, eq=False, init=False)
class TreeDistanceMask(Mask):
    """Exponential tree-distance mask ``M_ij = Σ_s a_s · r_s^{dist_T(i, j)}``.

    Parameters
    ----------
    tree : AttentionGraph, networkx.Graph, scipy.sparse matrix or numpy array
        An undirected tree on the ``L`` tokens; edge weights are edge *lengths* (> 0,
        default 1 for networkx edges without a ``"weight"`` and for an
        :class:`~structattn.graphs.AttentionGraph`), ``dist_T`` is the weighted path
        length.  Self-loops (the diagonal) are ignored; a matrix must be symmetric; a
        directed networkx graph is read as undirected.
    decay : float or sequence of (a, r) pairs
        ``r`` with ``0 < r <= 1`` gives ``M_ij = r^{dist(i, j)}`` (``r = e^{-λ}``);
        ``[(a_1, r_1), …, (a_S, r_S)]`` gives the sum of exponentials
        ``Σ_s a_s r_s^{dist}`` (finite amplitudes; the mask is nonnegative when every
        ``a_s >= 0``).
    root : int, default 0
        Root of the DP (any node gives the same mask).
    length : int, optional
        Expected number of tokens ``L``; ``ValueError`` if the tree has another size.

    Raises
    ------
    ValueError
        If ``tree`` is not a tree (cycles, several components, asymmetric weights), for
        an invalid ``decay``, ``root`` or ``length``.

    Notes
    -----
    Exact ``O(S·L·F)`` products (``S`` terms, ``F`` columns) by the two-pass DP of
    masks.md §2.5: up pass ``U_v = X_v + Σ_c α_c U_c`` with ``α_c = r^{w(c, parent)}``,
    down pass ``y_c = U_c + α_c D_c``, ``D_c = X_p + α_p D_p + Σ_{s ≠ c} α_s U_s`` over
    the siblings ``s`` of ``c``.  Only edge factors ``α ≤ 1`` multiply, so no
    ``r^{depth}`` is formed: deep trees neither overflow nor underflow (an entry
    underflows only when its own ``r^{dist}`` is below the smallest float).  numba
    (numpy input): sibling prefix/suffix sums, float64 work arrays; torch (and numpy
    without numba): level by level (``height + 1`` vectorised steps per pass), float64,
    differentiable with respect to the operand (the backward pass is the same DP, the
    mask being symmetric).  ``M`` is symmetric: :attr:`T` is the mask itself.  Masked
    attention products apply the DP to the ``m·d_v`` columns ``B_j ⊗ V_j``.

    Examples
    --------
    A path ``0 - 1 - 2`` with unit edges and ``r = 0.5``:

    >>> import numpy as np
    >>> from structattn.graphs.kernels import TreeDistanceMask
    >>> W = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]])
    >>> TreeDistanceMask(W, 0.5).to_dense()
    array([[1.  , 0.5 , 0.25],
           [0.5 , 1.  , 0.5 ],
           [0.25, 0.5 , 1.  ]])
    """

    num_nodes: int
    decay: tuple[tuple[float, float], ...]
    root: int

    def __init__(self, tree: Any, decay: Any, *, root: int = 0,
                 length: int | None = None) -> None:
        if hasattr(tree, "is_multigraph") and not hasattr(tree, "to_scipy") and (
            tree.is_multigraph() and tree.number_of_edges() != len(
                {(u, v) if tree.is_directed() else frozenset((u, v)) for u, v in tree.edges()}
            )
        ):
            raise ValueError(
                "tree must be a simple graph: got a networkx multigraph with parallel edges "
                "(their lengths would be summed, e.g. a duplicated edge counted as length "
                "2); pass networkx.Graph(tree) or give each edge once"
            )
        if hasattr(tree, "is_directed") and not hasattr(tree, "to_scipy") and tree.is_directed():
            tree = tree.to_undirected()
        W = as_adjacency(tree, "tree")
        n = W.shape[0]
        check_length(n, length, "tree")
        terms = _parse_decay(decay)
        if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not (
            0 <= root < n
        ):
            raise ValueError(f"root must be a node index in [0, {n}), got {root!r}")
        W = W.tolil()
        W.setdiag(0)
        W = sp.csr_array(W)
        W.eliminate_zeros()
        if not is_symmetric(W):
            raise ValueError(
                "tree must be undirected: its adjacency matrix is not symmetric (give "
                "both directions of every edge with the same length)"
            )
        edges = W.nnz // 2
        components = connected_components(W, directed=False)[0] if n > 1 else 1
        if edges != n - 1 or components != 1:
            raise ValueError(
                f"tree must be a tree (connected, acyclic, n - 1 edges): got n={n} nodes, "
                f"{edges} edges and {components} connected component(s)"
            )
        order, pred = breadth_first_order(W, int(root), directed=False,
                                          return_predecessors=True)
        order = order.astype(np.int64)
        parent = np.where(pred < 0, -1, pred).astype(np.int64)
        parent[int(root)] = -1
        nodes = order[1:]
        lengths = np.zeros(n)
        if n > 1:
            lengths[nodes] = np.asarray(W[nodes, parent[nodes]]).ravel()
        depth = np.zeros(n, dtype=np.int64)
        for v in nodes:  # BFS order: parents first (O(L), once)
            depth[v] = depth[parent[v]] + 1
        level_ptr = np.searchsorted(depth[order], np.arange(depth.max() + 2)).astype(np.int64)
        # BFS position space: position t holds node order[t]; parents precede children
        # and the children of a position are contiguous positions
        position = np.empty(n, dtype=np.int64)
        position[order] = np.arange(n)
        parent_pos = np.full(n, -1, dtype=np.int64)
        parent_pos[1:] = position[parent[order[1:]]]
        counts = np.bincount(parent_pos[1:], minlength=n) if n > 1 else np.zeros(n, np.int64)
        child_ptr = np.concatenate([[1], 1 + np.cumsum(counts)]).astype(np.int64)
        amps = np.array([a for a, _ in terms])
        with np.errstate(under="ignore"):
            alpha = np.exp(np.log(np.array([r for _, r in terms]))[:, None]
                           * lengths[order][None, :])
        object.__setattr__(self, "num_nodes", n)
        object.__setattr__(self, "decay", terms)
        object.__setattr__(self, "root", int(root))
        object.__setattr__(self, "_structure_arrays",
                           (order, parent_pos, level_ptr, child_ptr, alpha, amps))
        object.__setattr__(self, "_adjacency", sp.csr_array(W))

    # ---------------------------------------------------------------- structure
    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_nodes, self.num_nodes)

    @property
    def nonnegative(self) -> bool:  # type: ignore[override]
        return all(a >= 0 for a, _ in self.decay)

    @property
    def lower_triangular(self) -> bool:  # type: ignore[override]
        return self.num_nodes == 1

    @property
    def height(self) -> int:
        """Depth of the deepest node below :attr:`root` (edges, not lengths)."""
        return len(self._structure_arrays[2]) - 2

    @property
    def adjacency(self) -> sp.csr_array:
        """The symmetric edge-length matrix (float64 CSR, no diagonal)."""
        return self._adjacency

    @property
    def T(self) -> TreeDistanceMask:
        """``Mᵀ = M``: tree-distance masks are symmetric."""
        return self

    def cost(self, F: int) -> float:
        """Estimated flops of one product with ``F`` columns: ``~8·S·L·F``."""
        return 8.0 * len(self.decay) * self.num_nodes * F

    # --------------------------------------------------------------- products
    def _matmat(self, X: Any, backend: str) -> Any:
        return kernel("tree_exp_dp", backend)(X, *self._structure_arrays)

    def _rmatmat(self, X: Any, backend: str) -> Any:
        return self._matmat(X, backend)

    def _structure(self) -> str:
        return (f"tree-distance mask, {len(self.decay)} exponential term(s), height "
                f"{self.height}: exact two-pass DP O(L) per column per term; symmetric")

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def decay_from_rate(rate: float | Sequence[float],
                        amplitudes: Sequence[float] | None = None) -> tuple:
        """``decay`` pairs ``(a_s, e^{-rate_s})`` from rates ``λ_s >= 0``.

        Parameters
        ----------
        rate : float or sequence of float
            Decay rates ``λ_s >= 0`` per unit of edge length.
        amplitudes : sequence of float, optional
            ``a_s`` (default all ones).

        Returns
        -------
        tuple of (float, float)
            Pairs ``(a_s, r_s)`` for the ``decay`` argument.
        """
        rates = np.atleast_1d(np.asarray(rate, dtype=np.float64))
        amps = np.ones_like(rates) if amplitudes is None else np.asarray(amplitudes, float)
        if rates.ndim != 1 or amps.shape != rates.shape or not np.all(rates >= 0):
            raise ValueError(
                f"rate must be >= 0 and match amplitudes in length; got rate={rate!r}, "
                f"amplitudes={amplitudes!r}"
            )
        return tuple((float(a), float(math.exp(-lam))) for a, lam in zip(amps, rates,
                                                                          strict=True))

"""Graph inputs of the graph-kernel masks and the sparse products they share.

One converter, :func:`as_adjacency`, turns what users hold into a float64
``scipy.sparse.csr_array`` (sorted column indices, no explicit zeros):

* an :class:`~structattn.graphs.AttentionGraph` (anything with ``.to_scipy()``, duck-typed):
  its 0/1 pattern;
* a networkx graph: edge attribute ``"weight"`` (default 1); nodes ``0 … n-1`` map to
  tokens ``0 … n-1``, other node labels to their position in ``G.nodes`` (insertion
  order); an undirected graph gives a symmetric matrix;
* a scipy.sparse matrix or array, a dense numpy array (or a torch tensor, copied to the
  host): the weighted adjacency itself.

:class:`SparseOperator` applies such a matrix to ``(..., n, c)`` blocks of numpy arrays
(scipy.sparse) or torch tensors (a sparse CSR tensor on the block's device), and
:func:`linear_autograd` wraps a linear map with a custom torch autograd Function whose
backward applies the transpose (``O(n·c)`` memory whatever the number of sparse products
inside the forward).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..._array import is_torch

__all__ = [
    "AdjointPairProducts",
    "SparseOperator",
    "as_adjacency",
    "check_length",
    "linear_autograd",
]


def _from_networkx(graph: Any) -> sp.csr_array:
    import networkx as nx

    nodes = list(graph.nodes)
    n = len(nodes)
    if set(nodes) == set(range(n)):
        nodes = list(range(n))
    return sp.csr_array(nx.to_scipy_sparse_array(graph, nodelist=nodes, weight="weight",
                                                 format="csr", dtype=np.float64))


def _is_networkx(graph: Any) -> bool:
    try:
        import networkx as nx
    except ImportError:  # pragma: no cover - networkx is a dependency
        return False
    return isinstance(graph, nx.Graph)


def as_adjacency(graph: Any, name: str = "graph") -> sp.csr_array:
    """The weighted adjacency matrix of ``graph`` as a float64 CSR array.

    Parameters
    ----------
    graph : AttentionGraph, networkx.Graph, scipy.sparse matrix, numpy array or torch tensor
        See the module docstring; ``graph[i, j]`` is the weight of edge ``i → j``.
    name : str
        Argument name used in error messages.

    Returns
    -------
    scipy.sparse.csr_array, shape (n, n)
        float64, canonical (sorted unique column indices, explicit zeros removed).

    Raises
    ------
    TypeError
        For an unsupported type.
    ValueError
        For a non-square matrix, an empty graph, NaN/Inf or negative weights.
    """
    if hasattr(graph, "to_scipy"):
        A = graph.to_scipy()
    elif _is_networkx(graph):
        A = _from_networkx(graph)
    elif sp.issparse(graph):
        A = graph
    elif isinstance(graph, np.ndarray) or is_torch(graph):
        dense = graph.detach().cpu().numpy() if is_torch(graph) else graph
        if dense.dtype == np.bool_ or np.issubdtype(dense.dtype, np.number):
            A = sp.csr_array(np.asarray(dense, dtype=np.float64)) if dense.ndim == 2 else dense
        else:
            raise TypeError(f"{name} must hold numbers, got dtype {dense.dtype}")
    else:
        raise TypeError(
            f"{name} must be an AttentionGraph, a networkx graph, a scipy.sparse matrix or a "
            f"dense numpy array (weighted adjacency), got {type(graph).__name__}"
        )
    if getattr(A, "ndim", 2) != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(
            f"{name} must be a square n x n adjacency matrix, got shape {tuple(A.shape)}"
        )
    if A.shape[0] < 1:
        raise ValueError(f"{name} must have at least one node, got shape {tuple(A.shape)}")
    A = sp.csr_array(A, dtype=np.float64)
    A.sum_duplicates()
    A.sort_indices()
    if not np.all(np.isfinite(A.data)):
        raise ValueError(f"{name} contains NaN or Inf edge weights")
    if np.any(A.data < 0):
        raise ValueError(
            f"{name} must have nonnegative edge weights (min weight {A.data.min():.3g}); "
            "graph-kernel masks are defined for nonnegative affinities / lengths"
        )
    A.eliminate_zeros()
    return A


def check_length(n: int, length: int | None, name: str = "graph") -> None:
    """Raise ``ValueError`` when ``length`` is given and differs from the graph size ``n``."""
    if length is None:
        return
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)):
        raise TypeError(f"length must be an int or None, got {length!r}")
    if int(length) != n:
        raise ValueError(
            f"{name} has {n} nodes but the mask was requested for length L={length}: the "
            "graph must have one node per token"
        )


def _block(X: Any) -> tuple[Any, Callable[[Any], Any]]:
    """``X (..., n, c)`` as an ``(n, prod(...)·c)`` block and the map back."""
    n, c = int(X.shape[-2]), int(X.shape[-1])
    lead = tuple(X.shape[:-2])
    if is_torch(X):
        import torch

        X2 = torch.movedim(X, -2, 0).reshape(n, -1)

        def back(Y: Any) -> Any:
            return torch.movedim(Y.reshape(Y.shape[0], *lead, c), 0, -2)
    else:
        X2 = np.moveaxis(X, -2, 0).reshape(n, -1)

        def back(Y: Any) -> Any:
            return np.moveaxis(Y.reshape(Y.shape[0], *lead, c), 0, -2)

    return X2, back


class SparseOperator:
    """A fixed sparse matrix applied to numpy arrays or torch tensors.

    Parameters
    ----------
    matrix : scipy.sparse matrix, shape (p, n)
        Kept in float64; float32 and torch copies are made on first use and cached.

    Notes
    -----
    ``apply(X)`` for ``X`` of shape ``(..., n, c)`` costs ``O(nnz·prod(...)·c)`` and
    returns ``(..., p, c)`` of ``X``'s kind, dtype and device; torch products are not
    differentiated through (wrap them with :func:`linear_autograd`).
    """

    def __init__(self, matrix: Any) -> None:
        self.matrix = sp.csr_array(matrix, dtype=np.float64)
        self.matrix.sort_indices()
        self._cache: dict[Any, Any] = {}

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.matrix.shape)

    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz)

    def _csr(self, transpose: bool) -> sp.csr_array:
        key = ("T",) if transpose else ("N",)
        if key not in self._cache:
            A = self.matrix.T.tocsr() if transpose else self.matrix
            A.sort_indices()
            self._cache[key] = sp.csr_array(A)
        return self._cache[key]

    def _numpy(self, dtype: Any, transpose: bool) -> sp.csr_array:
        key = ("np", np.dtype(dtype).str, transpose)
        if key not in self._cache:
            self._cache[key] = self._csr(transpose).astype(dtype)
        return self._cache[key]

    def _torch(self, like: Any, transpose: bool) -> Any:
        import torch

        key = ("torch", str(like.device), str(like.dtype), transpose)
        if key not in self._cache:
            A = self._csr(transpose)
            with warnings.catch_warnings():  # "sparse CSR support is in beta state"
                warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support")
                self._cache[key] = torch.sparse_csr_tensor(
                    torch.as_tensor(A.indptr.astype(np.int64), device=like.device),
                    torch.as_tensor(A.indices.astype(np.int64), device=like.device),
                    torch.as_tensor(A.data, dtype=like.dtype, device=like.device),
                    size=A.shape, check_invariants=False,  # canonical by construction
                )
        return self._cache[key]

    def apply(self, X: Any, transpose: bool = False) -> Any:
        """``A @ X`` (or ``Aᵀ @ X``) for ``X`` of shape ``(..., n, c)``."""
        X2, back = _block(X)
        if is_torch(X):
            import torch

            with torch.no_grad():
                Y = self._torch(X2, transpose) @ X2.contiguous()
        else:
            Y = self._numpy(X.dtype, transpose) @ np.ascontiguousarray(X2)
            Y = np.asarray(Y, dtype=X.dtype)
        return back(Y)


def linear_autograd(X: Any, forward: Callable[[Any], Any], adjoint: Callable[[Any], Any]) -> Any:
    """``forward(X)`` for a linear map; on torch tensors the backward applies ``adjoint``.

    The forward runs without recording a graph, so its memory is that of one call
    whatever the number of internal steps (Taylor terms, CG iterations, DP levels).
    """
    if is_torch(X):
        import torch

        if torch.is_grad_enabled() and X.requires_grad:
            from ._torch_linear import LinearFunction

            return LinearFunction.apply(X, forward, adjoint)
        with torch.no_grad():
            return forward(X)
    return forward(X)


class AdjointPairProducts:
    """Mixin for a mask defined by one linear map ``_apply(X, transpose)``.

    ``M X`` and ``Mᵀ X`` both go through :func:`linear_autograd`, whose backward applies
    the other direction, so subclasses implement only ``_apply`` (numpy and torch, no
    autograd of their own).  Put it *before* :class:`~structattn.masks.base.Mask` in the
    bases so that its ``_matmat`` / ``_rmatmat`` win.
    """

    def _apply(self, X: Any, transpose: bool) -> Any:
        raise NotImplementedError("subclasses implement _apply")  # pragma: no cover

    def _matmat(self, X: Any, backend: str) -> Any:
        return linear_autograd(X, lambda Z: self._apply(Z, False),
                               lambda G: self._apply(G, True))

    def _rmatmat(self, X: Any, backend: str) -> Any:
        return linear_autograd(X, lambda Z: self._apply(Z, True),
                               lambda G: self._apply(G, False))


def one_norm(A: sp.csr_array) -> float:
    """``‖A‖_1`` (maximum absolute column sum), exact for a sparse matrix."""
    if A.nnz == 0:
        return 0.0
    return float(np.max(np.asarray(abs(A).sum(axis=0)).ravel()))


def is_symmetric(A: sp.csr_array, rtol: float = 1e-12) -> bool:
    """True when ``A == Aᵀ`` up to ``rtol`` relative to the largest weight."""
    D = (A - A.T).tocsr()
    if D.nnz == 0:
        return True
    scale = float(np.max(np.abs(A.data))) if A.nnz else 0.0
    return float(np.max(np.abs(D.data))) <= rtol * max(scale, math.ulp(1.0))

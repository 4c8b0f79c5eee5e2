"""The :class:`AttentionGraph`: a directed graph on tokens ``0..n-1`` stored as CSR.

Edge ``(i, j)`` means "query ``i`` may attend key ``j``"; the adjacency matrix is
``A[i, j] = 1`` iff ``(i, j)`` is an edge.  CSR is the internal format (``indptr`` of
length ``n + 1``, ``indices`` of length ``nnz``, column indices strictly increasing
within each row); networkx is the interchange format for users' graphs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["AttentionGraph"]


def _as_index_array(x: Any, name: str) -> np.ndarray:
    """A 1-D int64 copy of ``x``; integer input only (no silent float truncation)."""
    try:
        arr = np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise TypeError(f"{name} must be a 1-D integer array, got {type(x).__name__}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must have an integer dtype, got {arr.dtype}")
    return np.array(arr, dtype=np.int64, copy=True)


def _count(n: Any, name: str, minimum: int = 0) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {n!r}")
    if n < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {n}")
    return int(n)


class AttentionGraph:
    """A directed attention graph on ``n`` tokens in CSR form (immutable).

    Parameters
    ----------
    indptr : array of int, shape (n + 1,)
        Row pointers: the neighbours (keys) of query ``i`` are
        ``indices[indptr[i]:indptr[i + 1]]``.  ``indptr[0] == 0``, non-decreasing,
        ``indptr[-1] == len(indices)``.
    indices : array of int, shape (nnz,)
        Column indices in ``[0, n)``, strictly increasing within each row (sorted and
        unique).
    num_nodes : int, optional
        ``n``; defaults to ``len(indptr) - 1`` and must agree with it.

    Raises
    ------
    ValueError
        If ``indptr`` is malformed, an index is out of range, or a row's indices are
        unsorted or duplicated.  Use :meth:`from_edges` or :meth:`from_scipy` to
        canonicalize unsorted or duplicated input instead.

    Notes
    -----
    Self-loops are ordinary edges: the generators of :mod:`structattn.graphs.patterns`
    always include ``i -> i``; graphs built from user data keep exactly the given edges
    (use :meth:`with_self_loops`).  Construction validates in ``O(n + nnz)``.

    Examples
    --------
    >>> from structattn.graphs import AttentionGraph
    >>> g = AttentionGraph([0, 2, 3], [0, 1, 1])
    >>> g.nnz, g.degrees.tolist()
    (3, [2, 1])
    >>> g.to_dense().astype(int).tolist()
    [[1, 1], [0, 1]]
    """

    __slots__ = ("_indices", "_indptr", "_n")

    def __init__(self, indptr: Any, indices: Any, num_nodes: int | None = None) -> None:
        indptr = _as_index_array(indptr, "indptr")
        indices = _as_index_array(indices, "indices")
        if indptr.size == 0:
            raise ValueError("indptr must have length num_nodes + 1 >= 1, got an empty array")
        n = indptr.size - 1
        if num_nodes is not None and _count(num_nodes, "num_nodes") != n:
            raise ValueError(
                f"indptr has length {indptr.size}, so the graph has {n} nodes, but "
                f"num_nodes={num_nodes}; indptr must have length num_nodes + 1"
            )
        if indptr[0] != 0:
            raise ValueError(f"indptr[0] must be 0, got {indptr[0]}")
        steps = np.diff(indptr)
        if np.any(steps < 0):
            row = int(np.argmax(steps < 0))
            raise ValueError(
                f"indptr must be non-decreasing; indptr[{row}]={indptr[row]} > "
                f"indptr[{row + 1}]={indptr[row + 1]}"
            )
        if indptr[-1] != indices.size:
            raise ValueError(
                f"indptr[-1] must equal len(indices)={indices.size}, got {indptr[-1]}"
            )
        if indices.size:
            lo, hi = int(indices.min()), int(indices.max())
            if lo < 0 or hi >= n:
                bad = lo if lo < 0 else hi
                raise ValueError(
                    f"indices must lie in [0, {n}) for a graph with {n} nodes; got index {bad}"
                )
            # strictly increasing within a row <=> every step inside a row is > 0
            inner = np.ones(indices.size, dtype=bool)
            inner[indptr[:-1][steps > 0]] = False  # first entry of every non-empty row
            d = np.empty(indices.size, dtype=np.int64)
            d[0] = 1
            d[1:] = np.diff(indices)
            bad = inner & (d <= 0)
            if np.any(bad):
                pos = int(np.argmax(bad))
                row = int(np.searchsorted(indptr, pos, side="right") - 1)
                kind = "duplicated" if d[pos] == 0 else "unsorted"
                raise ValueError(
                    f"indices of row {row} are {kind} (column {indices[pos - 1]} followed by "
                    f"{indices[pos]}); CSR rows must hold strictly increasing column "
                    "indices. Use AttentionGraph.from_edges(...) or from_scipy(...) to "
                    "sort and deduplicate"
                )
        indptr.setflags(write=False)
        indices.setflags(write=False)
        self._indptr, self._indices, self._n = indptr, indices, n

    # ------------------------------------------------------------------ storage
    @property
    def indptr(self) -> np.ndarray:
        """Row pointers, int64 array of shape ``(n + 1,)`` (read-only)."""
        return self._indptr

    @property
    def indices(self) -> np.ndarray:
        """Column indices, int64 array of shape ``(nnz,)`` (read-only, sorted per row)."""
        return self._indices

    @property
    def num_nodes(self) -> int:
        """Number of tokens ``n``."""
        return self._n

    @property
    def n(self) -> int:
        """Alias of :attr:`num_nodes`."""
        return self._n

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, n)``, the shape of the adjacency matrix."""
        return (self._n, self._n)

    @property
    def nnz(self) -> int:
        """Number of edges (stored entries), self-loops included."""
        return int(self._indices.size)

    @property
    def degrees(self) -> np.ndarray:
        """Out-degree of every query, ``deg(i) = |N(i)|``, int64 array of shape ``(n,)``."""
        return np.diff(self._indptr)

    @property
    def in_degrees(self) -> np.ndarray:
        """In-degree of every key (number of queries attending it), shape ``(n,)``."""
        return np.bincount(self._indices, minlength=self._n).astype(np.int64)

    @property
    def mean_degree(self) -> float:
        """``nnz / n`` (0 for the empty graph on zero nodes)."""
        return self.nnz / self._n if self._n else 0.0

    @property
    def max_degree(self) -> int:
        """Largest out-degree (0 for a graph without edges)."""
        return int(self.degrees.max()) if self._n else 0

    @property
    def density(self) -> float:
        """``nnz / n²``, the fraction of the dense attention matrix that is computed."""
        return self.nnz / (self._n * self._n) if self._n else 0.0

    @property
    def rows(self) -> np.ndarray:
        """Row (query) index of every stored entry, int64 array of shape ``(nnz,)``."""
        return np.repeat(np.arange(self._n, dtype=np.int64), self.degrees)

    @property
    def is_symmetric(self) -> bool:
        """True when ``A == Aᵀ`` (an undirected pattern)."""
        t = self.transpose()
        return bool(
            np.array_equal(t._indptr, self._indptr) and np.array_equal(t._indices, self._indices)
        )

    @property
    def has_self_loops(self) -> bool:
        """True when every token attends itself (``i ∈ N(i)`` for all ``i``)."""
        return int(np.count_nonzero(self.rows == self._indices)) == self._n

    # -------------------------------------------------------------- constructors
    @classmethod
    def from_edges(cls, rows: Any, cols: Any, num_nodes: int) -> AttentionGraph:
        """Graph with edges ``(rows[e], cols[e])``, in any order, duplicates merged.

        Parameters
        ----------
        rows, cols : array of int, shape (E,)
            Query and key index of every edge.
        num_nodes : int
            Number of tokens ``n``; indices must lie in ``[0, n)``.

        Returns
        -------
        AttentionGraph

        Notes
        -----
        ``O(E log E)`` (one sort of the linearized indices).
        """
        n = _count(num_nodes, "num_nodes")
        rows = _as_index_array(rows, "rows")
        cols = _as_index_array(cols, "cols")
        if rows.shape != cols.shape:
            raise ValueError(
                f"rows and cols must have the same length, got {rows.size} and {cols.size}"
            )
        for name, a in (("rows", rows), ("cols", cols)):
            if a.size and (a.min() < 0 or a.max() >= n):
                bad = int(a.min()) if a.min() < 0 else int(a.max())
                raise ValueError(
                    f"{name} must lie in [0, {n}) for a graph with {n} nodes; got index {bad}"
                )
        key = np.unique(rows * max(n, 1) + cols)
        r, c = np.divmod(key, max(n, 1))
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(r, minlength=n), out=indptr[1:])
        return cls(indptr, c, n)

    @classmethod
    def from_dense(cls, A: Any) -> AttentionGraph:
        """Graph of the non-zero entries of a square ``n x n`` array (bool or numeric).

        Torch tensors are accepted (copied to numpy).  ``O(n²)``.
        """
        if hasattr(A, "detach"):
            A = A.detach().cpu().numpy()
        A = np.asarray(A)
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"A must be a square 2-D array, got shape {A.shape}")
        if not np.all(np.isfinite(A.astype(np.float64, copy=False))):
            raise ValueError("A contains NaN or Inf values")
        r, c = np.nonzero(A)
        return cls.from_edges(r, c, A.shape[0])

    @classmethod
    def from_scipy(cls, S: Any) -> AttentionGraph:
        """Graph of the stored non-zero entries of a square scipy sparse array or matrix.

        Explicit zeros are dropped; duplicate entries are merged.
        """
        import scipy.sparse as sp

        if not sp.issparse(S):
            raise TypeError(f"S must be a scipy sparse array or matrix, got {type(S).__name__}")
        if S.shape[0] != S.shape[1]:
            raise ValueError(f"S must be square, got shape {S.shape}")
        coo = sp.coo_array(S)
        keep = coo.data != 0
        return cls.from_edges(coo.row[keep], coo.col[keep], S.shape[0])

    @classmethod
    def from_networkx(
        cls, G: Any, nodelist: Any = None, *, self_loops: bool = False
    ) -> AttentionGraph:
        """Graph of a networkx ``Graph`` / ``DiGraph`` (edge weights are ignored).

        Parameters
        ----------
        G : networkx.Graph or networkx.DiGraph
            An undirected edge ``{u, v}`` becomes both ``u -> v`` and ``v -> u``.
        nodelist : sequence, optional
            Token order: ``nodelist[i]`` is token ``i``.  Default: the nodes must be the
            integers ``0..n-1`` (token ``i`` is node ``i``).
        self_loops : bool, default False
            Add ``i -> i`` for every token (the patterns' convention); by default the
            graph keeps exactly the edges of ``G``.

        Returns
        -------
        AttentionGraph
        """
        import networkx as nx

        if not isinstance(G, nx.Graph):
            raise TypeError(f"G must be a networkx Graph or DiGraph, got {type(G).__name__}")
        if G.is_multigraph():
            raise TypeError("multigraphs are not supported: convert with nx.Graph(G) first")
        if nodelist is None:
            nodes = list(G.nodes)
            if set(nodes) != set(range(len(nodes))):
                raise ValueError(
                    "the nodes of G must be the integers 0..n-1 (token positions); "
                    "pass nodelist=... to give the token order, or relabel with "
                    "nx.convert_node_labels_to_integers(G)"
                )
            position = {u: int(u) for u in nodes}
            n = len(nodes)
        else:
            nodelist = list(nodelist)
            position = {u: i for i, u in enumerate(nodelist)}
            if len(position) != len(nodelist):
                raise ValueError("nodelist contains duplicate nodes")
            if set(position) != set(G.nodes):
                raise ValueError("nodelist must contain every node of G exactly once")
            n = len(nodelist)
        edges = np.array([(position[u], position[v]) for u, v in G.edges()],
                         dtype=np.int64).reshape(-1, 2)
        r, c = edges[:, 0], edges[:, 1]
        if not G.is_directed():
            r, c = np.concatenate([r, c]), np.concatenate([c, r])
        if self_loops:
            ar = np.arange(n, dtype=np.int64)
            r, c = np.concatenate([r, ar]), np.concatenate([c, ar])
        return cls.from_edges(r, c, n)

    # ---------------------------------------------------------------- exporters
    def to_networkx(self, *, directed: bool | None = None, self_loops: bool = True) -> Any:
        """The graph as networkx, nodes ``0..n-1``.

        Parameters
        ----------
        directed : bool, optional
            ``True``: a ``DiGraph`` with every edge; ``False``: an undirected ``Graph``
            of ``A ∪ Aᵀ``; default: ``Graph`` if the graph is symmetric, else ``DiGraph``.
        self_loops : bool, default True
            Keep ``i -> i`` edges (set False for distance / diameter computations).
        """
        import networkx as nx

        if directed is None:
            directed = not self.is_symmetric
        G = nx.DiGraph() if directed else nx.Graph()
        G.add_nodes_from(range(self._n))
        r, c = self.rows, self._indices
        if not self_loops:
            keep = r != c
            r, c = r[keep], c[keep]
        G.add_edges_from(zip(r.tolist(), c.tolist(), strict=True))
        return G

    def to_scipy(self) -> Any:
        """The adjacency as a ``scipy.sparse.csr_array`` of float64 ones, shape ``(n, n)``."""
        import scipy.sparse as sp

        return sp.csr_array(
            (np.ones(self.nnz), self._indices.copy(), self._indptr.copy()), shape=self.shape
        )

    def to_dense(self) -> np.ndarray:
        """The boolean ``n x n`` adjacency matrix (``O(n²)`` memory: tests, small graphs)."""
        A = np.zeros(self.shape, dtype=bool)
        A[self.rows, self._indices] = True
        return A

    # --------------------------------------------------------------- operations
    def transpose(self) -> AttentionGraph:
        """The reversed graph ``Aᵀ`` (keys become queries)."""
        return AttentionGraph.from_edges(self._indices, self.rows, self._n)

    @property
    def T(self) -> AttentionGraph:
        """Alias of :meth:`transpose`."""
        return self.transpose()

    def symmetrize(self) -> AttentionGraph:
        """``A ∪ Aᵀ``: every edge in both directions (undirected pattern)."""
        r = self.rows
        return AttentionGraph.from_edges(
            np.concatenate([r, self._indices]), np.concatenate([self._indices, r]), self._n
        )

    def causal(self) -> AttentionGraph:
        """``A ∩ {j <= i}``: queries attend only to keys at or before their position."""
        r = self.rows
        keep = self._indices <= r
        return AttentionGraph.from_edges(r[keep], self._indices[keep], self._n)

    def with_self_loops(self) -> AttentionGraph:
        """``A ∪ I``: every token attends itself."""
        ar = np.arange(self._n, dtype=np.int64)
        return AttentionGraph.from_edges(
            np.concatenate([self.rows, ar]), np.concatenate([self._indices, ar]), self._n
        )

    def union(self, other: AttentionGraph) -> AttentionGraph:
        """``A ∪ B`` of two graphs on the same tokens."""
        if not isinstance(other, AttentionGraph):
            raise TypeError(f"other must be an AttentionGraph, got {type(other).__name__}")
        if other.num_nodes != self._n:
            raise ValueError(
                f"graphs must have the same number of nodes, got {self._n} and {other.num_nodes}"
            )
        return AttentionGraph.from_edges(
            np.concatenate([self.rows, other.rows]),
            np.concatenate([self._indices, other.indices]),
            self._n,
        )

    def __or__(self, other: AttentionGraph) -> AttentionGraph:
        return self.union(other)

    def permute(self, perm: Any) -> AttentionGraph:
        """Relabel tokens: token ``i`` of the result is token ``perm[i]`` of this graph.

        The adjacency becomes ``A[perm][:, perm]``.
        """
        perm = _as_index_array(perm, "perm")
        if perm.size != self._n or not np.array_equal(np.sort(perm), np.arange(self._n)):
            raise ValueError(f"perm must be a permutation of 0..{self._n - 1}")
        inv = np.empty_like(perm)
        inv[perm] = np.arange(self._n)
        return AttentionGraph.from_edges(inv[self.rows], inv[self._indices], self._n)

    def block_expand(self, b: int) -> AttentionGraph:
        """Token graph of this block layout: ``A ⊗ 1_{b×b}`` on ``n·b`` tokens.

        Block ``(I, J)`` of the layout becomes every token edge ``(I·b + s, J·b + t)``,
        ``0 <= s, t < b``; ``nnz`` grows by ``b²``.  ``O(nnz·b²)``.
        """
        b = _count(b, "b", 1)
        deg = self.degrees
        # token row I*b+s holds, for each block column J of row I, the columns J*b+t
        cols_per_row = (self._indices[:, None] * b + np.arange(b)[None, :]).reshape(-1)
        starts = self._indptr[:-1] * b
        token_deg = np.repeat(deg * b, b)
        indptr = np.zeros(self._n * b + 1, dtype=np.int64)
        np.cumsum(token_deg, out=indptr[1:])
        # every token row of block row I copies the same column list
        seg = np.repeat(starts, b)  # start of block row I in cols_per_row, per token row
        take = np.repeat(seg - indptr[:-1], token_deg) + np.arange(indptr[-1])
        return AttentionGraph(indptr, cols_per_row[take], self._n * b)

    # ------------------------------------------------------------------- dunder
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AttentionGraph):
            return NotImplemented
        return (
            self._n == other._n
            and np.array_equal(self._indptr, other._indptr)
            and np.array_equal(self._indices, other._indices)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"AttentionGraph(num_nodes={self._n}, nnz={self.nnz}, "
            f"mean_degree={self.mean_degree:.3g})"
        )

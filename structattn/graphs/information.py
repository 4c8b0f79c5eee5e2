"""Information flow on an attention graph: transfer matrix, payload and NIP.

Model: ``h`` stacked attention layers with *uniform* attention over each query's
neighbours form an ``h``-step random walk with the row-stochastic matrix
``P = D⁻¹A`` (self-loops included if the graph has them).  ``T_h = P^h``; ``T_h[i, j]``
is the share of token ``i``'s representation after ``h`` layers that originates from
token ``j`` (residual connections and feed-forward layers ignored).

The Hypercube Transformer paper's Normalized Information Payload (NIP) could not be
pinned from a primary source (the official repository has no NIP code), so every
choice is an explicit argument: ``hops``, ``reduce`` and ``normalization``.  The
definitions implemented here are the library's v0 contract (docs/graphs.rst):

* ``information_payload(G, h, "min")  = N · min_ij T_h[i, j]`` (0 iff some pair is not
  reachable in ``h`` steps; 1 for the complete graph);
* ``information_payload(G, h, "mean_entropy") = mean_i H(T_h[i, ·]) / log N``;
* ``nip(G, h, reduce) = payload · N / d̄`` with ``d̄ = nnz / N`` (1 for the complete graph).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .graph import AttentionGraph, _count

__all__ = ["REDUCTIONS", "information_payload", "nip", "transfer_matrix"]

#: Accepted ``reduce`` arguments of :func:`information_payload` and :func:`nip`.
REDUCTIONS = ("min", "mean_entropy")

#: Accepted ``normalization`` arguments of :func:`nip`.
NORMALIZATIONS = ("mean_degree", "none")


def _check_graph(graph: Any) -> AttentionGraph:
    if not isinstance(graph, AttentionGraph):
        raise TypeError(f"graph must be an AttentionGraph, got {type(graph).__name__}")
    return graph


def transfer_matrix(graph: AttentionGraph, hops: int, *, max_nodes: int = 8192) -> np.ndarray:
    """``T_h = (D⁻¹A)^h``: how much of token ``j`` reaches token ``i`` in ``h`` layers.

    Parameters
    ----------
    graph : AttentionGraph
        Attention graph on ``N`` tokens (self-loops count as edges).
    hops : int
        Number of steps (layers) ``h >= 0``; ``h = 0`` gives the identity.
    max_nodes : int, default 8192
        Refuse larger graphs (the result is a dense ``N x N`` float64 matrix).

    Returns
    -------
    numpy.ndarray, shape (N, N), float64
        Row-stochastic where every row has a neighbour; a row of a token without
        neighbours is zero (the walk stops there), for ``h >= 1``.

    Notes
    -----
    ``h`` sparse-dense products ``T ← P T``: time ``O(h·nnz·N)``, memory ``O(N²)``;
    ``A^h`` is never formed symbolically.
    """
    graph = _check_graph(graph)
    h = _count(hops, "hops")
    n = graph.num_nodes
    if n > _count(max_nodes, "max_nodes"):
        raise ValueError(
            f"transfer_matrix forms a dense N x N matrix; N={n} exceeds max_nodes={max_nodes} "
            "(raise max_nodes if the memory is available)"
        )
    deg = graph.degrees.astype(np.float64)
    inv = np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)
    P = graph.to_scipy()
    P.data *= np.repeat(inv, graph.degrees)
    T = np.eye(n)
    for _ in range(h):
        T = P @ T
    return np.asarray(T)


def _check_reduce(reduce: Any) -> str:
    if not isinstance(reduce, str) or reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    return reduce


def _payload(T: np.ndarray, reduce: str) -> float:
    n = T.shape[0]
    if n == 0:
        raise ValueError("the payload of a graph with no nodes is undefined")
    if reduce == "min":
        return float(n * T.min())
    if n == 1:
        return 1.0  # the one-token graph is complete: same value as the full graph
    logs = np.log(T, out=np.zeros_like(T), where=T > 0)
    entropy = -(T * logs).sum(axis=1)
    return float(entropy.mean() / np.log(n))


def information_payload(graph: AttentionGraph, hops: int, reduce: str) -> float:
    """How much and how evenly information reaches every token within ``hops`` layers.

    Parameters
    ----------
    graph : AttentionGraph
        Attention graph on ``N >= 1`` tokens.
    hops : int
        Number of layers ``h`` (report it next to every value: the score depends on it).
    reduce : {"min", "mean_entropy"}
        ``"min"``: ``N · min_ij T_h[i, j]`` — 0 iff some pair is more than ``h`` steps
        apart, 1 for the complete graph, at most 1 on a row-stochastic ``T_h``;
        ``"mean_entropy"``: ``mean_i H(T_h[i, ·]) / log N`` (entropy in nats,
        ``0 log 0 = 0``; 1 for the complete graph and for ``N = 1``).

    Returns
    -------
    float

    Notes
    -----
    Cost of :func:`transfer_matrix` plus ``O(N²)``.
    """
    graph = _check_graph(graph)
    reduce = _check_reduce(reduce)
    return _payload(transfer_matrix(graph, hops), reduce)


def nip(
    graph: AttentionGraph, hops: int, reduce: str, *, normalization: str = "mean_degree"
) -> float:
    """Normalized information payload: payload per unit of attention cost.

    Parameters
    ----------
    graph : AttentionGraph
        Attention graph on ``N >= 1`` tokens.
    hops : int
        Number of layers ``h``.
    reduce : {"min", "mean_entropy"}
        Payload reduction (see :func:`information_payload`).
    normalization : {"mean_degree", "none"}, default "mean_degree"
        ``"mean_degree"``: multiply by ``N / d̄`` with ``d̄ = nnz / N`` (i.e. divide
        by the density ``nnz / N²``), so the complete graph scores exactly 1;
        ``"none"``: the payload itself.

    Returns
    -------
    float

    Examples
    --------
    >>> from structattn.graphs import full, hypercube, nip
    >>> nip(full(16), hops=1, reduce="min")
    1.0
    >>> round(nip(hypercube(64), hops=6, reduce="min"), 3)
    3.581
    """
    graph = _check_graph(graph)
    reduce = _check_reduce(reduce)
    if not isinstance(normalization, str) or normalization not in NORMALIZATIONS:
        raise ValueError(
            f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}"
        )
    payload = information_payload(graph, hops, reduce)
    if normalization == "none":
        return payload
    if graph.nnz == 0:
        raise ValueError("the graph has no edges: its mean degree is 0, NIP is undefined")
    return payload / graph.density

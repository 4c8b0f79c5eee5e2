"""Sparse attention patterns: generators returning :class:`AttentionGraph`.

Every generator takes the number of tokens ``n`` first and returns a graph whose every
token attends itself (self-loops included).  With ``block_size=b`` the rule is applied
to the ``B = n / b`` *block* indices and the block layout is expanded to tokens,
``A = L ⊗ 1_{b×b}`` (how block-sparse kernels such as DeepSpeed's, used by the official
Hypercube Transformer code with ``b = 16``, run every pattern); ``n`` must then be a
multiple of ``b``.

=====================  ==========================================================  ===========
generator              edge rule for query ``i``                                   interior
                                                                                   degree
=====================  ==========================================================  ===========
``full``               every ``j``                                                 ``n``
``window(w)``          ``|i − j| <= w``                                            ``2w + 1``
``dilated(w, r)``      ``|i − j| <= w·r`` and ``(i − j) mod r == 0``               ``2w + 1``
``global_tokens(G)``   ``j ∈ G`` or ``i ∈ G`` (plus self)                          ``|G| + 1``
``star_transformer``   ``|i − j| <= 1`` plus one relay token linked to all         ``4``
``longformer(w, G)``   ``window(w) ∪ global_tokens(G)``                            ``2w+1+|G|``
``bigbird(w, G, r)``   ``longformer(w, G) ∪`` ``r`` random keys per row            ``<= 2w+1+|G|+r``
``random(r)``          ``r`` distinct random keys per row (plus self)              ``<= r + 1``
``fixed(l, c)``        ``⌊j/l⌋ == ⌊i/l⌋`` or ``j mod l ∈ {l−c, …, l−1}``           ``≈ l + c·n/l``
``strided(l)``         ``|i − j| < l`` or ``(i − j) mod l == 0``                   ``≈ 2l + 2n/l``
``hypercube``          Gray-code positions adjacent in ``Q_k``, ``k = ⌈log2 n⌉``   ``<= k + 1``
=====================  ==========================================================  ===========

Random patterns draw from an explicit seed (int or :class:`numpy.random.Generator`),
never from a global state.  Causal variants: ``generator(...).causal()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._array import as_generator
from .graph import AttentionGraph, _count
from .hypercube import hypercube_neighbors

__all__ = [
    "bigbird",
    "dilated",
    "fixed",
    "full",
    "global_tokens",
    "hypercube",
    "longformer",
    "random",
    "star_transformer",
    "strided",
    "window",
]


def _blocked(n: Any, block_size: Any, build: Callable[[int], AttentionGraph]) -> AttentionGraph:
    """Apply ``build`` to ``n`` tokens, or to ``n / block_size`` blocks and expand."""
    n = _count(n, "n")
    if block_size is None:
        return build(n)
    b = _count(block_size, "block_size", 1)
    if n % b:
        raise ValueError(
            f"n={n} is not a multiple of block_size={b}; block patterns need n = B·block_size "
            f"(pad the sequence to {-(-n // b) * b})"
        )
    return build(n // b).block_expand(b)


def _offsets_graph(n: int, offsets: np.ndarray) -> AttentionGraph:
    """Edges ``(i, i + o)`` for every offset ``o`` that stays inside ``[0, n)``."""
    i = np.arange(n, dtype=np.int64)
    r = np.repeat(i, offsets.size)
    c = r + np.tile(offsets.astype(np.int64), n)
    keep = (c >= 0) & (c < n)
    return AttentionGraph.from_edges(r[keep], c[keep], n)


def _global_set(n: int, tokens: Any, name: str) -> np.ndarray:
    if isinstance(tokens, (int, np.integer)) and not isinstance(tokens, bool):
        g = _count(tokens, name)
        if g > n:
            raise ValueError(f"{name}={g} exceeds the number of tokens (or blocks) {n}")
        return np.arange(g, dtype=np.int64)
    if isinstance(tokens, (str, bytes)) or not isinstance(tokens, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be an int or a sequence of token indices, got {tokens!r}")
    g = np.unique(np.asarray(tokens, dtype=np.int64))
    if g.size and (g.min() < 0 or g.max() >= n):
        raise ValueError(f"{name} must hold indices in [0, {n}), got {list(tokens)}")
    return g


def _global_graph(n: int, g: np.ndarray) -> AttentionGraph:
    ar = np.arange(n, dtype=np.int64)
    rows = np.concatenate([np.repeat(g, n), np.tile(ar, g.size), ar])
    cols = np.concatenate([np.tile(ar, g.size), np.repeat(g, n), ar])
    return AttentionGraph.from_edges(rows, cols, n)


def full(n: int, *, block_size: int | None = None) -> AttentionGraph:
    """Every query attends every key: dense attention, ``nnz = n²``.

    Parameters
    ----------
    n : int
        Number of tokens.
    block_size : int, optional
        Block-level pattern (identical to the token pattern for ``full``).

    Returns
    -------
    AttentionGraph
    """

    def build(m: int) -> AttentionGraph:
        indptr = np.arange(m + 1, dtype=np.int64) * m
        return AttentionGraph(indptr, np.tile(np.arange(m, dtype=np.int64), m), m)

    return _blocked(n, block_size, build)


def window(n: int, w: int, *, block_size: int | None = None) -> AttentionGraph:
    """Sliding window (local attention): ``|i − j| <= w``.

    Parameters
    ----------
    n : int
        Number of tokens.
    w : int
        Half width (``w = 0``: self only); at block level, blocks on each side.
    block_size : int, optional
        Apply the rule to blocks of this size.

    Returns
    -------
    AttentionGraph
        Symmetric; interior degree ``2w + 1``; undirected diameter ``⌈(n − 1)/w⌉``.
    """
    w = _count(w, "w")
    return _blocked(n, block_size, lambda m: _offsets_graph(m, np.arange(-w, w + 1)))


def dilated(n: int, w: int, r: int, *, block_size: int | None = None) -> AttentionGraph:
    """Dilated window: ``|i − j| <= w·r`` and ``(i − j) mod r == 0``.

    Parameters
    ----------
    n : int
        Number of tokens.
    w : int
        Number of dilated neighbours on each side.
    r : int
        Dilation (``r = 1`` is :func:`window`).
    block_size : int, optional
        Apply the rule to blocks of this size.

    Returns
    -------
    AttentionGraph
        Symmetric, interior degree ``2w + 1``; for ``r > 1`` it has ``min(r, n)``
        connected components (the residues mod ``r``).
    """
    w = _count(w, "w")
    r = _count(r, "r", 1)
    return _blocked(n, block_size, lambda m: _offsets_graph(m, r * np.arange(-w, w + 1)))


def global_tokens(
    n: int, num_global: int | Sequence[int] = 1, *, block_size: int | None = None
) -> AttentionGraph:
    """Global tokens (a star): rows and columns of the global set ``G``, plus self-loops.

    Parameters
    ----------
    n : int
        Number of tokens.
    num_global : int or sequence of int, default 1
        An int ``g`` makes the first ``g`` tokens (blocks) global; a sequence gives the
        global indices explicitly.
    block_size : int, optional
        Apply the rule to blocks of this size.

    Returns
    -------
    AttentionGraph
        Symmetric; non-global degree ``|G| + 1``; diameter 2 (for ``|G| >= 1``).
    """

    def build(m: int) -> AttentionGraph:
        return _global_graph(m, _global_set(m, num_global, "num_global"))

    return _blocked(n, block_size, build)


def star_transformer(n: int, *, relay: int = 0) -> AttentionGraph:
    """Star-Transformer: a ring ``|i − j| <= 1`` plus one relay token linked to all.

    Parameters
    ----------
    n : int
        Number of tokens (the relay is one of them).
    relay : int, default 0
        Position of the relay token.

    Returns
    -------
    AttentionGraph
        Symmetric; interior degree 4 (``i − 1, i, i + 1`` and the relay); diameter 2.
    """
    n = _count(n, "n")
    if n and not 0 <= _count(relay, "relay") < n:
        raise ValueError(f"relay must be in [0, {n}), got {relay}")
    if n == 0:
        return AttentionGraph([0], [], 0)
    return _offsets_graph(n, np.arange(-1, 2)).union(_global_graph(n, np.array([relay])))


def longformer(
    n: int, w: int, num_global: int | Sequence[int] = 1, *, block_size: int | None = None
) -> AttentionGraph:
    """Longformer: ``window(w) ∪ global_tokens(num_global)``.

    Parameters
    ----------
    n : int
        Number of tokens.
    w : int
        Window half width.
    num_global : int or sequence of int, default 1
        Global tokens (first ``g``, or explicit indices).
    block_size : int, optional
        Apply the rule to blocks of this size (the official LRA preset is
        ``w=1, num_global=1, block_size=16``: 3 window blocks, 1 global block).

    Returns
    -------
    AttentionGraph
        Symmetric, diameter <= 2.
    """
    w = _count(w, "w")

    def build(m: int) -> AttentionGraph:
        g = _global_set(m, num_global, "num_global")
        return _offsets_graph(m, np.arange(-w, w + 1)).union(_global_graph(m, g))

    return _blocked(n, block_size, build)


def _random_keys(m: int, r: int, rng: np.random.Generator) -> AttentionGraph:
    """Exactly ``r`` distinct keys per row, drawn uniformly from ``0..m-1`` (no self)."""
    if r > m:
        raise ValueError(f"num_random={r} exceeds the number of tokens (or blocks) {m}")
    if r == 0 or m == 0:
        return AttentionGraph(np.zeros(m + 1, dtype=np.int64), [], m)
    if m <= 1024:  # small: the first r entries of a random permutation per row
        cols = np.argsort(rng.random((m, m)), axis=1)[:, :r]
    else:
        cols = np.stack([rng.choice(m, size=r, replace=False) for _ in range(m)])
    return AttentionGraph.from_edges(np.repeat(np.arange(m), r), cols.reshape(-1), m)


def random(
    n: int,
    num_random: int,
    *,
    seed: Any,
    self_loops: bool = True,
    block_size: int | None = None,
) -> AttentionGraph:
    """Random pattern: ``num_random`` distinct keys per query, drawn uniformly.

    Parameters
    ----------
    n : int
        Number of tokens.
    num_random : int
        Keys drawn per row, without replacement, from all ``n`` tokens (blocks), each
        row independently (as DeepSpeed's ``random.sample`` per block row).
    seed : int, numpy.random.SeedSequence or numpy.random.Generator
        Explicit randomness (required).
    self_loops : bool, default True
        Add ``i -> i`` (then a row holds ``num_random`` or ``num_random + 1`` keys).
    block_size : int, optional
        Apply the rule to blocks of this size.

    Returns
    -------
    AttentionGraph
        Not symmetric in general; same seed, same graph.
    """
    r = _count(num_random, "num_random")
    rng = as_generator(seed)

    def build(m: int) -> AttentionGraph:
        g = _random_keys(m, r, rng)
        return g.with_self_loops() if self_loops else g

    return _blocked(n, block_size, build)


def bigbird(
    n: int,
    w: int,
    num_global: int | Sequence[int],
    num_random: int,
    *,
    seed: Any,
    symmetrize: bool = False,
    block_size: int | None = None,
) -> AttentionGraph:
    """BigBird: ``window(w) ∪ global_tokens(num_global) ∪`` random keys per row.

    Parameters
    ----------
    n : int
        Number of tokens.
    w : int
        Window half width (DeepSpeed's ``num_sliding_window_blocks // 2``).
    num_global : int or sequence of int
        Global tokens (first ``g``, or explicit indices).
    num_random : int
        Random keys per row, drawn exactly as :func:`random` with the same ``seed``
        (so the random part equals ``random(n, num_random, seed=seed, self_loops=False)``),
        before the union (overlaps with the window are allowed, as in DeepSpeed).
    seed : int, numpy.random.SeedSequence or numpy.random.Generator
        Explicit randomness (required).
    symmetrize : bool, default False
        Also add the reversed random edges.
    block_size : int, optional
        Apply the rule to blocks of this size.  The official LRA preset is
        ``w=1, num_global=1, num_random=4, block_size=16`` (3 window, 1 global and 4
        random blocks).

    Returns
    -------
    AttentionGraph
        Degree ``<= 2w + 1 + |G| + num_random``; diameter <= 2 through the globals.
    """
    w = _count(w, "w")
    r = _count(num_random, "num_random")
    rng = as_generator(seed)

    def build(m: int) -> AttentionGraph:
        g = _global_set(m, num_global, "num_global")
        rand = _random_keys(m, r, rng)
        if symmetrize:
            rand = rand.symmetrize()
        return _offsets_graph(m, np.arange(-w, w + 1)).union(_global_graph(m, g)).union(rand)

    return _blocked(n, block_size, build)


def fixed(n: int, l: int, c: int = 1, *, block_size: int | None = None) -> AttentionGraph:
    """Sparse Transformer "fixed" pattern: ``⌊j/l⌋ == ⌊i/l⌋`` or ``j mod l >= l − c``.

    Parameters
    ----------
    n : int
        Number of tokens.
    l : int
        Stride (chunk length).
    c : int, default 1
        Summary positions at the end of each chunk, ``1 <= c <= l``.
    block_size : int, optional
        Apply the rule to blocks of this size.

    Returns
    -------
    AttentionGraph
        Not symmetric (summary columns are attended by every query).
    """
    l = _count(l, "l", 1)
    c = _count(c, "c", 1)
    if c > l:
        raise ValueError(f"c must be <= l={l}, got c={c}")

    def build(m: int) -> AttentionGraph:
        i = np.arange(m, dtype=np.int64)
        # same chunk: row i attends the whole chunk of i
        start = (i // l) * l
        size = np.minimum(start + l, m) - start
        r1 = np.repeat(i, size)
        c1 = np.repeat(start - np.concatenate([[0], np.cumsum(size)[:-1]]), size) + np.arange(
            int(size.sum())
        )
        summary = i[(i % l) >= l - c]
        r2, c2 = np.repeat(i, summary.size), np.tile(summary, m)
        return AttentionGraph.from_edges(np.concatenate([r1, r2]), np.concatenate([c1, c2]), m)

    return _blocked(n, block_size, build)


def strided(n: int, l: int, *, block_size: int | None = None) -> AttentionGraph:
    """Sparse Transformer "strided" pattern: ``|i − j| < l`` or ``(i − j) mod l == 0``.

    Parameters
    ----------
    n : int
        Number of tokens.
    l : int
        Stride.
    block_size : int, optional
        Apply the rule to blocks of this size.

    Returns
    -------
    AttentionGraph
        Symmetric; degree ``≈ 2l + 2n/l``.
    """
    l = _count(l, "l", 1)

    def build(m: int) -> AttentionGraph:
        local = np.arange(-(l - 1), l)
        far = l * np.arange(-(m // l), m // l + 1)
        return _offsets_graph(m, np.union1d(local, far))

    return _blocked(n, block_size, build)


def hypercube(n: int, *, block_size: int | None = None) -> AttentionGraph:
    """Hypercube attention graph with the Gray-code layout (Hypercube Transformer).

    Position ``i`` is vertex ``g(i) = i ⊕ (i >> 1)`` of ``Q_k``, ``k = ⌈log2 n⌉``; ``i``
    attends ``j`` iff ``g(i)`` and ``g(j)`` differ in exactly one bit, plus itself.  For
    ``n`` not a power of two the graph is the subgraph of ``Q_k`` induced by positions
    ``0..n-1`` (neighbours at positions ``>= n`` are dropped).

    Parameters
    ----------
    n : int
        Number of tokens.
    block_size : int, optional
        Hypercube on ``n / block_size`` blocks expanded to tokens (the official code's
        ``TesseractSparsityConfig`` uses ``block_size=16``).

    Returns
    -------
    AttentionGraph
        Symmetric; degree ``<= k + 1``; connected, diameter exactly ``k``, and
        consecutive positions are adjacent (the Gray path is Hamiltonian).  For
        ``n = 2^k``: isomorphic to ``Q_k`` (``n·k/2`` undirected edges).

    Examples
    --------
    >>> from structattn.graphs import hypercube
    >>> hypercube(8).indices[:4].tolist()   # row 0 (Gray labels 0,1,3,2,6,7,5,4)
    [0, 1, 3, 7]
    """

    def build(m: int) -> AttentionGraph:
        nbr = hypercube_neighbors(m)  # (m, k), -1 for dropped slots
        r = np.repeat(np.arange(m, dtype=np.int64), nbr.shape[1])
        c = nbr.reshape(-1)
        keep = c >= 0
        ar = np.arange(m, dtype=np.int64)
        return AttentionGraph.from_edges(
            np.concatenate([r[keep], ar]), np.concatenate([c[keep], ar]), m
        )

    return _blocked(n, block_size, build)

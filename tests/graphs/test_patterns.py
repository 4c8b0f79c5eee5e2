"""Generators against networkx as the independent oracle: edges, degrees, nnz,
symmetry, connectivity, diameter; hypercube structure for every n."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest

from structattn.graphs import (
    AttentionGraph,
    bigbird,
    dilated,
    fixed,
    full,
    global_tokens,
    gray_code,
    hypercube,
    inverse_gray_code,
    longformer,
    random,
    star_transformer,
    strided,
    window,
)

from ._oracles import rule_digraph

NS = (1, 2, 3, 7, 16, 33, 64)

# name -> (generator(n), edge rule(n) -> rule(i, j), undirected diameter(n) or None, symmetric)
DETERMINISTIC = {
    "full": (full, lambda n: lambda i, j: True, lambda n: 1, True),
    "window(3)": (lambda n: window(n, 3), lambda n: lambda i, j: abs(i - j) <= 3,
                  lambda n: math.ceil((n - 1) / 3), True),
    "dilated(2,1)": (lambda n: dilated(n, 2, 1), lambda n: lambda i, j: abs(i - j) <= 2,
                     lambda n: math.ceil((n - 1) / 2), True),
    "dilated(2,3)": (lambda n: dilated(n, 2, 3),
                     lambda n: lambda i, j: abs(i - j) <= 6 and (i - j) % 3 == 0, None, True),
    "global(2)": (lambda n: global_tokens(n, min(2, n)),
                  lambda n: lambda i, j: i == j or i < 2 or j < 2, lambda n: 2, True),
    "global([1,5])": (lambda n: global_tokens(n, [g for g in (1, 5) if g < n]),
                      lambda n: lambda i, j: i == j or i in (1, 5) or j in (1, 5),
                      lambda n: 2, True),
    "star_transformer": (star_transformer,
                         lambda n: lambda i, j: abs(i - j) <= 1 or i == 0 or j == 0,
                         lambda n: 2, True),
    "longformer(2,1)": (lambda n: longformer(n, 2, 1),
                        lambda n: lambda i, j: abs(i - j) <= 2 or i == 0 or j == 0,
                        lambda n: 2, True),
    "fixed(4,1)": (lambda n: fixed(n, 4, 1),
                   lambda n: lambda i, j: i // 4 == j // 4 or j % 4 == 3, lambda n: 2, False),
    "fixed(5,2)": (lambda n: fixed(n, 5, 2),
                   lambda n: lambda i, j: i // 5 == j // 5 or j % 5 >= 3, lambda n: 2, False),
    "strided(4)": (lambda n: strided(n, 4),
                   lambda n: lambda i, j: abs(i - j) < 4 or (i - j) % 4 == 0,
                   lambda n: 2, True),
}


def undirected(g: AttentionGraph) -> nx.Graph:
    return g.to_networkx(directed=False, self_loops=False)


@pytest.mark.parametrize("name", list(DETERMINISTIC))
def test_generator_matches_networkx_oracle(name):
    make, rule, diam, symmetric = DETERMINISTIC[name]
    for n in NS:
        g = make(n)
        G = rule_digraph(n, rule(n))
        assert set(g.to_networkx(directed=True).edges) == set(G.edges), (name, n)
        np.testing.assert_array_equal(g.degrees, [G.out_degree(i) for i in range(n)])
        np.testing.assert_array_equal(g.in_degrees, [G.in_degree(i) for i in range(n)])
        assert g.nnz == G.number_of_edges()
        assert g.has_self_loops
        assert g.is_symmetric == nx.utils.graphs_equal(G, G.reverse()), (name, n)
        if symmetric:
            assert g.is_symmetric
        U = undirected(g)
        if n > 1 and diam is not None:
            assert nx.is_connected(U)
            if name.startswith(("window", "dilated(2,1)", "full")):  # exact formula
                assert nx.diameter(U) == diam(n), (name, n)
            else:  # "<= 2" in the table, reached once n is large
                assert nx.diameter(U) <= diam(n), (name, n)
                if n == max(NS):
                    assert nx.diameter(U) == diam(n), (name, n)


@pytest.mark.parametrize("n", [1, 7, 33, 64])
def test_dilated_components_are_residues(n):
    U = undirected(dilated(n, 2, 3))
    comps = sorted(sorted(c) for c in nx.connected_components(U))
    expected = sorted(sorted(range(r, n, 3)) for r in range(min(3, n)))
    assert comps == expected


def test_star_transformer_degree_four():
    g = star_transformer(40, relay=0)
    assert np.all(g.degrees[2:-1] == 4) and g.degrees[0] == 40


@pytest.mark.parametrize("n", [1, 2, 7, 33, 64])
def test_random_exact_per_row_count_and_seed(n):
    r = min(3, n)
    g0 = random(n, r, seed=11, self_loops=False)
    assert np.all(g0.degrees == r)  # exact before the union with self-loops
    assert random(n, r, seed=11, self_loops=False) == g0
    g1 = random(n, r, seed=11)
    assert g1 == g0.with_self_loops()
    assert np.all((g1.degrees == r) | (g1.degrees == r + 1))
    if n >= 33:
        assert random(n, r, seed=12, self_loops=False) != g0


@pytest.mark.parametrize("n", [2, 7, 33, 64, 1500])
def test_bigbird_is_window_global_random_union(n):
    r = min(4, n)
    g = bigbird(n, 2, 1, r, seed=5)
    assert g == bigbird(n, 2, 1, r, seed=np.random.default_rng(5))
    expected = longformer(n, 2, 1) | random(n, r, seed=5, self_loops=False)
    assert g == expected
    if n <= 64:
        assert nx.diameter(undirected(g)) <= 2
    assert np.all(g.degrees[1:] <= 5 + 1 + r)  # non-global rows
    sym = bigbird(n, 2, 1, r, seed=5, symmetrize=True)
    assert sym.is_symmetric and sym == longformer(n, 2, 1) | random(
        n, r, seed=5, self_loops=False).symmetrize()


@pytest.mark.parametrize("make", [
    lambda n, b: window(n, 1, block_size=b),
    lambda n, b: longformer(n, 1, 1, block_size=b),
    lambda n, b: bigbird(n, 1, 1, 2, seed=0, block_size=b),
    lambda n, b: random(n, 2, seed=0, block_size=b),
    lambda n, b: hypercube(n, block_size=b),
    lambda n, b: fixed(n, 2, 1, block_size=b),
    lambda n, b: strided(n, 2, block_size=b),
    lambda n, b: global_tokens(n, 1, block_size=b),
    lambda n, b: dilated(n, 1, 2, block_size=b),
    lambda n, b: full(n, block_size=b),
])
def test_block_variants_are_expanded_block_layouts(make):
    n, b = 96, 16
    g = make(n, b)
    L = make(n // b, None)
    assert g == L.block_expand(b) and g.nnz == L.nnz * b * b
    np.testing.assert_array_equal(g.to_dense(), np.kron(L.to_dense(), np.ones((b, b), bool)))
    with pytest.raises(ValueError, match="multiple of block_size=16"):
        make(100, 16)


# -------------------------------------------------------------------- hypercube
def test_gray_code_round_trip():
    i = np.arange(5000)
    g = gray_code(i)
    assert np.all(np.bitwise_count(g[1:] ^ g[:-1]) == 1)
    np.testing.assert_array_equal(inverse_gray_code(g), i)


def nx_cube(k):
    """networkx Q_k with integer vertex labels (bit tuples read as binary numbers)."""
    Q = nx.hypercube_graph(k) if k else nx.empty_graph(1)
    return nx.relabel_nodes(
        Q, lambda t: int("".join(map(str, t)), 2) if isinstance(t, tuple) else int(t))


def edge_set(G):
    return set(map(frozenset, G.edges))


def by_gray_label(U, n):
    labels = gray_code(np.arange(n))
    return nx.relabel_nodes(U, {i: int(labels[i]) for i in range(n)})


@pytest.mark.parametrize("k", range(0, 8))
def test_hypercube_power_of_two_is_Qk(k):
    n = 2**k
    g = hypercube(n)
    U = undirected(g)
    Q = nx_cube(k)
    # explicit isomorphism: position i -> its Gray label
    assert edge_set(by_gray_label(U, n)) == edge_set(Q)
    if k <= 5:
        assert nx.is_isomorphic(U, nx.hypercube_graph(k) if k else nx.empty_graph(1))
    assert U.number_of_edges() == n * k // 2 and g.nnz == n * (k + 1)
    assert np.all(g.degrees == k + 1)
    if k:
        assert nx.is_bipartite(U) and nx.diameter(U) == k


HYPER_NS = [*range(2, 40), 100, 127, 128, 129, 200, 255, 256, 257]


@pytest.mark.parametrize("n", HYPER_NS)
def test_hypercube_any_n(n):
    g = hypercube(n)
    U = undirected(g)
    k = math.ceil(math.log2(n))
    assert g.is_symmetric and g.has_self_loops
    assert nx.is_connected(U)
    assert nx.diameter(U) == k
    assert all(U.has_edge(i, i + 1) for i in range(n - 1))  # consecutive positions adjacent
    assert max(d for _, d in U.degree()) <= k
    lab = gray_code(np.arange(n))
    if n <= 40:  # isometric: graph distance = Hamming distance of the Gray labels
        dist = dict(nx.all_pairs_shortest_path_length(U))
        ham = np.bitwise_count(lab[:, None] ^ lab[None, :])
        assert all(dist[i][j] == ham[i, j] for i in range(n) for j in range(n))
    # the induced subgraph of Q_k on the Gray-code prefix
    sub = nx_cube(k).subgraph(lab.tolist())
    assert edge_set(by_gray_label(U, n)) == edge_set(sub)


@pytest.mark.parametrize("n,edges", [(100, 316), (200, 732), (129, 449)])
def test_hypercube_edge_counts(n, edges):
    assert undirected(hypercube(n)).number_of_edges() == edges


def test_hypercube_anchors():
    assert hypercube(8).indices[:4].tolist() == [0, 1, 3, 7]
    g = hypercube(257)
    assert g.degrees.min() == 2  # last position: one neighbour plus its self-loop


def test_bad_generator_arguments():
    with pytest.raises(TypeError, match="n must be an int"):
        window(10.0, 2)
    with pytest.raises(ValueError, match="w must be >= 0"):
        window(10, -1)
    with pytest.raises(ValueError, match="r must be >= 1"):
        dilated(10, 2, 0)
    with pytest.raises(ValueError, match="num_random=5 exceeds"):
        random(4, 5, seed=0)
    with pytest.raises(TypeError, match="seed"):
        random(10, 2, seed=None)
    with pytest.raises(TypeError, match="seed"):
        bigbird(10, 1, 1, 2, seed=None)
    with pytest.raises(ValueError, match="num_global=3 exceeds"):
        global_tokens(2, 3)
    with pytest.raises(ValueError, match="num_global must hold indices"):
        global_tokens(4, [7])
    with pytest.raises(ValueError, match="c must be <= l"):
        fixed(10, 2, 3)
    with pytest.raises(ValueError, match="relay"):
        star_transformer(5, relay=5)

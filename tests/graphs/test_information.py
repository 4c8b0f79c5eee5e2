"""Transfer matrix, payload and NIP: brute-force walks, closed forms, invariances."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest

from structattn.graphs import (
    AttentionGraph,
    bigbird,
    fixed,
    full,
    gray_code,
    hypercube,
    information_payload,
    nip,
    star_transformer,
    strided,
    transfer_matrix,
    window,
)

SMALL = {
    "full": full,
    "window": lambda n: window(n, 1),
    "star": star_transformer,
    "bigbird": lambda n: bigbird(n, 1, 1, min(2, n), seed=0),
    "fixed": lambda n: fixed(n, 3, 1),
    "strided": lambda n: strided(n, 3),
    "hypercube": hypercube,
    "user-directed": lambda n: AttentionGraph.from_dense(
        np.random.default_rng(n).random((n, n)) < 0.4).with_self_loops(),
}


def brute_force_transfer(graph, h):
    """Σ over every length-h walk i = x0 -> ... -> xh = j of Π 1/deg(x_t)."""
    n = graph.num_nodes
    nbrs = [graph.indices[graph.indptr[i]:graph.indptr[i + 1]].tolist() for i in range(n)]
    T = np.zeros((n, n))
    for i in range(n):
        stack = [(i, 1.0, 0)]
        while stack:
            x, w, t = stack.pop()
            if t == h:
                T[i, x] += w
                continue
            for y in nbrs[x]:
                stack.append((y, w / len(nbrs[x]), t + 1))
    return T


@pytest.mark.parametrize("name", list(SMALL))
def test_transfer_matrix_equals_walk_enumeration(name):
    for n in (1, 2, 5, 8):
        g = SMALL[name](n)
        for h in range(5):
            T = transfer_matrix(g, h)
            np.testing.assert_allclose(T, brute_force_transfer(g, h), rtol=0, atol=1e-14)
            np.testing.assert_allclose(T.sum(1), 1.0, atol=1e-14)


def test_transfer_matrix_of_rows_without_neighbours():
    g = AttentionGraph.from_edges([0, 0, 2], [1, 2, 2], 3)  # row 1 empty
    T = transfer_matrix(g, 2)
    np.testing.assert_allclose(T, brute_force_transfer(g, 2), atol=1e-15)
    assert np.all(T[1] == 0)


@pytest.mark.parametrize("n", [1, 3, 16, 33])
def test_full_graph_closed_form(n):
    g = full(n)
    for h in (1, 2, 5):
        np.testing.assert_allclose(transfer_matrix(g, h), np.full((n, n), 1 / n), atol=1e-15)
        for reduce in ("min", "mean_entropy"):
            assert nip(g, h, reduce) == pytest.approx(1.0, abs=1e-12)
            assert information_payload(g, h, reduce) == pytest.approx(1.0, abs=1e-12)


def krawtchouk_transfer(k, h, r):
    """T_h(r) = 2^-k Σ_s K_s(r) ((k+1-2s)/(k+1))^h for Q_k with self-loops."""
    total = 0.0
    for s in range(k + 1):
        K = sum((-1) ** t * math.comb(r, t) * math.comb(k - r, s - t)
                for t in range(0, min(r, s) + 1))
        total += K * ((k + 1 - 2 * s) / (k + 1)) ** h
    return total / 2**k


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_hypercube_krawtchouk_closed_form(k):
    n = 2**k
    lab = gray_code(np.arange(n))
    r = np.bitwise_count(lab[:, None] ^ lab[None, :])
    for h in range(0, k + 3):
        T = transfer_matrix(hypercube(n), h)
        expected = np.vectorize(lambda rr, h=h: krawtchouk_transfer(k, h, int(rr)))(r)
        np.testing.assert_allclose(T, expected, rtol=0, atol=1e-14)
    antipodal = transfer_matrix(hypercube(n), k)[0, np.argmax(r[0])]
    assert antipodal == pytest.approx(math.factorial(k) / (k + 1) ** k, rel=1e-12)


def test_hypercube_anchor_values():
    assert math.factorial(3) / 4**3 == 0.09375
    for k, anchor in ((6, 3.581), (7, 4.922), (8, 6.821)):
        n = 2**k
        g = hypercube(n)
        value = nip(g, k, "min")
        closed = n * math.factorial(k) / (k + 1) ** k * n / (k + 1)
        assert value == pytest.approx(closed, rel=1e-10)
        assert round(value, 3) == anchor
        # bipartite parity: h = k + 1 gives the same value; h = k + 2 roughly doubles it
        assert nip(g, k + 1, "min") == pytest.approx(value, rel=1e-10)
        assert 1.5 < nip(g, k + 2, "min") / value < 2.5


@pytest.mark.parametrize("graph", [window(20, 2), hypercube(20), star_transformer(15),
                                   bigbird(30, 1, 1, 2, seed=3)])
def test_min_payload_zero_exactly_below_the_diameter(graph):
    U = graph.to_networkx(directed=True, self_loops=False)
    dist = dict(nx.all_pairs_shortest_path_length(U))
    n = graph.num_nodes
    D = np.array([[dist[i].get(j, np.inf) for j in range(n)] for i in range(n)])
    ecc = D.max()
    for h in range(0, int(ecc) + 2):
        T = transfer_matrix(graph, h)
        np.testing.assert_array_equal(T > 0, D <= h)  # self-loops: reachable in <= h
        payload = information_payload(graph, h, "min")
        assert (payload == 0) == (h < ecc)


def test_relabelling_invariance():
    g = bigbird(24, 1, 1, 3, seed=8)
    perm = np.random.default_rng(0).permutation(24)
    gp = g.permute(perm)
    np.testing.assert_allclose(transfer_matrix(gp, 3), transfer_matrix(g, 3)[perm][:, perm],
                               atol=1e-15)
    for reduce in ("min", "mean_entropy"):
        assert nip(gp, 3, reduce) == pytest.approx(nip(g, 3, reduce), rel=1e-12)


def test_mean_entropy_and_normalization():
    g = window(32, 2)
    e = information_payload(g, 4, "mean_entropy")
    assert 0 < e < 1
    assert nip(g, 4, "mean_entropy") == pytest.approx(e * 32 / g.mean_degree, rel=1e-12)
    assert nip(g, 4, "mean_entropy", normalization="none") == e
    # identity hops: every row is a point mass, entropy 0
    assert information_payload(g, 0, "mean_entropy") == 0.0


def test_window_needs_many_hops():
    g = window(64, 1)
    assert information_payload(g, 62, "min") == 0.0
    assert 0 < information_payload(g, 63, "min") < 1e-20


def test_bad_arguments():
    g = hypercube(8)
    with pytest.raises(ValueError, match="reduce must be one of"):
        nip(g, 3, "max")
    with pytest.raises(ValueError, match="hops must be >= 0"):
        transfer_matrix(g, -1)
    with pytest.raises(TypeError, match="hops must be an int"):
        information_payload(g, 2.0, "min")
    with pytest.raises(TypeError, match="graph must be an AttentionGraph"):
        nip(np.eye(3), 1, "min")
    with pytest.raises(ValueError, match="normalization must be one of"):
        nip(g, 1, "min", normalization="density")
    with pytest.raises(ValueError, match="max_nodes"):
        transfer_matrix(hypercube(64), 1, max_nodes=32)
    with pytest.raises(ValueError, match="no edges"):
        nip(AttentionGraph([0, 0], []), 1, "min")

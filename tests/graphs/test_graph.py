"""AttentionGraph: CSR invariants, constructors, exporters, operations, bad input."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp

from structattn.graphs import AttentionGraph, hypercube, window

RNG = np.random.default_rng(4)


def random_dense(n, p=0.3, seed=0):
    return np.random.default_rng(seed).random((n, n)) < p


def test_csr_storage_and_properties():
    A = random_dense(9, seed=1)
    g = AttentionGraph.from_dense(A)
    assert g.num_nodes == g.n == 9 and g.shape == (9, 9)
    np.testing.assert_array_equal(g.to_dense(), A)
    np.testing.assert_array_equal(g.degrees, A.sum(1))
    np.testing.assert_array_equal(g.in_degrees, A.sum(0))
    assert g.nnz == A.sum()
    assert g.density == pytest.approx(A.sum() / 81)
    assert g.mean_degree == pytest.approx(A.sum() / 9)
    assert g.max_degree == A.sum(1).max()
    assert g.indptr.dtype == g.indices.dtype == np.int64
    for i in range(9):
        row = g.indices[g.indptr[i]:g.indptr[i + 1]]
        np.testing.assert_array_equal(row, np.flatnonzero(A[i]))
    with pytest.raises(ValueError):
        g.indices[0] = 1  # read-only storage


def test_to_scipy():
    A = random_dense(12, seed=2)
    S = AttentionGraph.from_dense(A).to_scipy()
    assert isinstance(S, sp.csr_array) and S.shape == (12, 12) and S.dtype == np.float64
    np.testing.assert_array_equal(S.toarray(), A.astype(float))
    assert AttentionGraph.from_scipy(S) == AttentionGraph.from_dense(A)


def test_from_edges_canonicalizes_unsorted_and_duplicates():
    g = AttentionGraph.from_edges([2, 0, 0, 2, 0], [1, 2, 0, 1, 2], 3)
    np.testing.assert_array_equal(g.indptr, [0, 2, 2, 3])
    np.testing.assert_array_equal(g.indices, [0, 2, 1])


def test_networkx_round_trip():
    G = nx.gnp_random_graph(20, 0.2, seed=3, directed=True)
    g = AttentionGraph.from_networkx(G)
    assert set(g.to_networkx(directed=True).edges) == set(G.edges)
    U = nx.gnp_random_graph(15, 0.3, seed=5)
    gu = AttentionGraph.from_networkx(U)
    assert gu.is_symmetric and gu.nnz == 2 * U.number_of_edges()
    back = gu.to_networkx()
    assert isinstance(back, nx.Graph) and not back.is_directed()
    assert nx.utils.graphs_equal(back, U)
    loops = AttentionGraph.from_networkx(U, self_loops=True)
    assert loops.has_self_loops and loops.nnz == gu.nnz + 15


def test_from_networkx_nodelist_and_labels():
    G = nx.path_graph(["a", "b", "c"])
    with pytest.raises(ValueError, match=r"integers 0\.\.n-1"):
        AttentionGraph.from_networkx(G)
    g = AttentionGraph.from_networkx(G, nodelist=["c", "b", "a"])
    np.testing.assert_array_equal(g.to_dense(), [[0, 1, 0], [1, 0, 1], [0, 1, 0]])
    with pytest.raises(ValueError, match="every node"):
        AttentionGraph.from_networkx(G, nodelist=["a", "b"])
    with pytest.raises(TypeError, match="networkx"):
        AttentionGraph.from_networkx(np.eye(3))


def test_causal_symmetrize_transpose_self_loops():
    A = random_dense(11, seed=6)
    g = AttentionGraph.from_dense(A)
    np.testing.assert_array_equal(g.causal().to_dense(), np.tril(A))
    np.testing.assert_array_equal(g.symmetrize().to_dense(), A | A.T)
    np.testing.assert_array_equal(g.T.to_dense(), A.T)
    np.testing.assert_array_equal(g.with_self_loops().to_dense(), A | np.eye(11, dtype=bool))
    assert g.symmetrize().is_symmetric
    B = random_dense(11, seed=7)
    np.testing.assert_array_equal((g | AttentionGraph.from_dense(B)).to_dense(), A | B)
    perm = RNG.permutation(11)
    np.testing.assert_array_equal(g.permute(perm).to_dense(), A[perm][:, perm])


@pytest.mark.parametrize("b", [1, 2, 5, 16])
def test_block_expand_is_kronecker(b):
    L = random_dense(7, p=0.4, seed=b)
    g = AttentionGraph.from_dense(L).block_expand(b)
    assert g.nnz == L.sum() * b * b
    np.testing.assert_array_equal(g.to_dense(), np.kron(L, np.ones((b, b), dtype=bool)))
    h = hypercube(8).block_expand(b)  # block layout with self-loops: token degree b(k+1)
    assert np.all(h.degrees == b * 4)


def test_empty_and_single_node_graphs():
    g = AttentionGraph([0], [])
    assert g.num_nodes == 0 and g.nnz == 0 and g.density == 0.0
    one = AttentionGraph([0, 1], [0])
    assert one.has_self_loops and one.is_symmetric and one.density == 1.0
    assert window(1, 3) == one


# ------------------------------------------------------------------- bad input
def test_rejects_unsorted_indices():
    with pytest.raises(ValueError, match=r"row 0 are unsorted .*from_edges"):
        AttentionGraph([0, 2, 3], [1, 0, 1])


def test_rejects_duplicate_indices():
    with pytest.raises(ValueError, match="row 1 are duplicated"):
        AttentionGraph([0, 1, 3], [0, 1, 1])


def test_rejects_out_of_range_indices():
    with pytest.raises(ValueError, match=r"\[0, 2\).*got index 2"):
        AttentionGraph([0, 1, 2], [0, 2])
    with pytest.raises(ValueError, match="got index -1"):
        AttentionGraph([0, 1, 2], [-1, 0])
    with pytest.raises(ValueError, match="cols must lie in"):
        AttentionGraph.from_edges([0], [5], 3)


def test_rejects_malformed_indptr():
    with pytest.raises(ValueError, match=r"indptr\[0\] must be 0"):
        AttentionGraph([1, 2], [0, 0])
    with pytest.raises(ValueError, match="non-decreasing"):
        AttentionGraph([0, 2, 1], [0, 1])
    with pytest.raises(ValueError, match=r"len\(indices\)=3"):
        AttentionGraph([0, 1, 2], [0, 1, 1])
    with pytest.raises(ValueError, match="num_nodes=3"):
        AttentionGraph([0, 1, 2], [0, 1], num_nodes=3)
    with pytest.raises(TypeError, match="integer dtype"):
        AttentionGraph([0, 1, 2], [0.0, 1.0])
    with pytest.raises(ValueError, match="empty"):
        AttentionGraph([], [])


def test_rejects_bad_operations():
    g = window(5, 1)
    with pytest.raises(ValueError, match="same number of nodes"):
        g | window(6, 1)
    with pytest.raises(ValueError, match="permutation"):
        g.permute([0, 0, 1, 2, 3])
    with pytest.raises(ValueError, match="b must be >= 1"):
        g.block_expand(0)
    with pytest.raises(ValueError, match="square"):
        AttentionGraph.from_dense(np.ones((2, 3)))


def test_package_exports():
    import structattn.graphs as graphs

    for name in graphs.__all__:
        assert getattr(graphs, name) is not None
    from structattn.graphs import DiffusionMask, RandomWalkMask, ResolventMask, TreeDistanceMask

    assert all(isinstance(c, type) for c in (DiffusionMask, RandomWalkMask, ResolventMask,
                                             TreeDistanceMask))

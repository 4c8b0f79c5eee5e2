"""TreeDistanceMask: the two-pass DP against dense shortest-path (BFS/Dijkstra) masks."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch

from structattn import PositiveRandomFeatures, kernel_attention, softmax_attention
from structattn.graphs import AttentionGraph
from structattn.graphs.kernels import TreeDistanceMask
from structattn.masks import Dense
from structattn.testing import MaskTestCase, assert_close, to_numpy

from ..conftest import convert


def random_tree(n: int, seed: int, weighted: bool = True) -> nx.Graph:
    """Random recursive tree: node i attaches to a uniform earlier node."""
    rng = np.random.default_rng(seed)
    G = nx.Graph()
    G.add_nodes_from(range(n))
    for i in range(1, n):
        j = int(rng.integers(0, i))
        G.add_edge(i, j, weight=float(rng.uniform(0.2, 2.0)) if weighted else 1.0)
    return G


def dense_tree_mask(G: nx.Graph, decay) -> np.ndarray:
    """Independent reference: networkx shortest-path lengths, Σ a r^dist entrywise."""
    n = G.number_of_nodes()
    if all(w == 1 for _, _, w in G.edges(data="weight", default=1)):
        lengths = dict(nx.all_pairs_shortest_path_length(G))  # BFS
    else:
        lengths = dict(nx.all_pairs_dijkstra_path_length(G))
    D = np.array([[lengths[i][j] for j in range(n)] for i in range(n)], dtype=np.float64)
    pairs = [(1.0, decay)] if np.isscalar(decay) else decay
    with np.errstate(under="ignore"):
        return sum(a * np.exp(D * np.log(r)) for a, r in pairs)


TREES = {
    "path": lambda: nx.path_graph(23),
    "star": lambda: nx.star_graph(19),  # 20 nodes, centre 0
    "random": lambda: random_tree(31, seed=3, weighted=False),
    "random-weighted": lambda: random_tree(40, seed=4),
    "balanced": lambda: nx.balanced_tree(3, 3),
    "single": lambda: nx.empty_graph(1),
}


class TestTreePathMask(MaskTestCase):
    def make_operator(self):
        return TreeDistanceMask(nx.path_graph(17), 0.8)

    def dense_reference(self):
        return dense_tree_mask(nx.path_graph(17), 0.8)


class TestTreeWeightedSumMask(MaskTestCase):
    decay = ((1.0, 0.6), (0.5, 0.95), (2.0, 0.2))

    def make_operator(self):
        return TreeDistanceMask(random_tree(19, seed=7), self.decay, root=5)

    def dense_reference(self):
        return dense_tree_mask(random_tree(19, seed=7), self.decay)


class TestTreeStarMask(MaskTestCase):
    def make_operator(self):
        return TreeDistanceMask(nx.star_graph(12), 0.5, root=3)  # root at a leaf

    def dense_reference(self):
        return dense_tree_mask(nx.star_graph(12), 0.5)


@pytest.mark.parametrize("name", sorted(TREES))
@pytest.mark.parametrize("decay", [0.7, 1.0, ((1.0, 0.9), (-0.3, 0.4))])
def test_dp_matches_dense_mask(name, decay, backend, dtype):
    G = TREES[name]()
    mask = TreeDistanceMask(G, decay)
    ref = dense_tree_mask(G, decay)
    n = G.number_of_nodes()
    X = np.random.default_rng(1).standard_normal((2, n, 6))
    (Xb,) = convert(backend, dtype, X)
    Y = mask.matmat(Xb, backend=backend)
    assert Y.dtype == Xb.dtype
    assert_close(Y, ref @ X, what=f"{name} {backend}")
    assert_close(mask.to_dense(), ref, dtype="float64", what="to_dense")


@pytest.mark.parametrize("root", [0, 7, 29])
def test_root_does_not_change_the_mask(root):
    G = random_tree(30, seed=11)
    assert_close(TreeDistanceMask(G, 0.8, root=root).to_dense(), dense_tree_mask(G, 0.8),
                 dtype="float64")


def test_input_formats_agree():
    G = random_tree(15, seed=2)
    ref = dense_tree_mask(G, 0.6)
    W = nx.to_numpy_array(G, nodelist=range(15))
    for graph in (G, W, nx.to_scipy_sparse_array(G, nodelist=range(15)), G.to_directed(),
                  W + np.eye(15)):  # self-loops are ignored
        assert_close(TreeDistanceMask(graph, 0.6).to_dense(), ref, dtype="float64")
    unweighted = random_tree(15, seed=2, weighted=False)
    ag = AttentionGraph.from_networkx(unweighted)
    assert_close(TreeDistanceMask(ag, 0.6).to_dense(), dense_tree_mask(unweighted, 0.6),
                 dtype="float64")


def test_deep_tree_is_log_scale_safe():
    """A 3000-node path: r^dist underflows far off the diagonal, nothing overflows/NaNs."""
    n, r = 3000, 0.6
    G = nx.path_graph(n)
    mask = TreeDistanceMask(G, r)
    X = np.random.default_rng(0).standard_normal((n, 3))
    i = np.arange(n)
    with np.errstate(under="ignore"):
        ref = np.exp(np.abs(i[:, None] - i[None, :]) * np.log(r)) @ X
    for backend in ("numba", "numpy"):
        Y = mask.matmat(X, backend=backend)
        assert np.all(np.isfinite(Y))
        assert_close(Y, ref, dtype="float64")
    Yt = mask.matmat(torch.as_tensor(X, dtype=torch.float32))
    assert torch.isfinite(Yt).all()
    assert_close(Yt, ref, dtype="float32")
    # very strong decay with long edges: most entries are exactly 0, still exact
    G2 = random_tree(200, seed=5)
    for u, v in G2.edges:
        G2[u][v]["weight"] *= 400.0
    assert_close(TreeDistanceMask(G2, 0.5).to_dense(), dense_tree_mask(G2, 0.5),
                 dtype="float64")


def test_through_kernel_and_softmax_attention(backend, dtype):
    G = random_tree(37, seed=9)
    mask = TreeDistanceMask(G, ((1.0, 0.7), (0.3, 0.98)))
    dense = Dense(dense_tree_mask(G, ((1.0, 0.7), (0.3, 0.98))))
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((2, 3, 37, 8)) * 0.5 for _ in range(3))
    phi = PositiveRandomFeatures(dim=8, num_features=16, seed=0)
    qb, kb, vb = convert(backend, dtype, q, k, v)
    ref_k = kernel_attention(q, k, v, phi, mask=dense, backend="numpy")
    out_k = kernel_attention(qb, kb, vb, phi, mask=mask, backend=backend)
    assert_close(out_k, ref_k, what="kernel_attention")
    ref_s = softmax_attention(q, k, v, mask=dense)
    out_s = softmax_attention(qb, kb, vb, mask=mask, backend=backend)
    assert_close(out_s, ref_s, what="softmax_attention")


def test_torch_gradient_of_attention_float64():
    G = random_tree(12, seed=1)
    mask = TreeDistanceMask(G, 0.75)
    phi = PositiveRandomFeatures(dim=4, num_features=6, seed=0)
    rng = np.random.default_rng(2)
    q, k, v = (torch.tensor(rng.standard_normal((1, 12, 4)), requires_grad=True)
               for _ in range(3))
    assert torch.autograd.gradcheck(lambda a, b, c: kernel_attention(a, b, c, phi, mask=mask),
                                    (q, k, v), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_backends_agree_float32_and_numba_subtraction_free():
    """α ≈ 1 (r = 1 - 1e-7) on a star: the sibling-sum numba DP keeps float32 accuracy."""
    G = nx.star_graph(400)
    mask = TreeDistanceMask(G, 1 - 1e-7)
    ref = dense_tree_mask(G, 1 - 1e-7)
    X = np.random.default_rng(3).uniform(0.1, 1.0, (401, 4))
    for backend in ("numba", "numpy"):
        assert_close(mask.matmat(X.astype(np.float32), backend=backend), ref @ X, rtol=1e-6)
    assert_close(to_numpy(mask.matmat(torch.as_tensor(X, dtype=torch.float32))), ref @ X,
                 rtol=1e-6)


# ---------------------------------------------------------------------- bad input
def test_non_tree_raises():
    with pytest.raises(ValueError, match=r"tree must be a tree .*n=5 nodes, 5 edges"):
        TreeDistanceMask(nx.cycle_graph(5), 0.5)
    forest = nx.Graph([(0, 1), (2, 3)])
    with pytest.raises(ValueError, match=r"2 connected component"):
        TreeDistanceMask(forest, 0.5)
    W = nx.to_numpy_array(nx.path_graph(4))
    W[0, 1] = 3.0  # asymmetric lengths
    with pytest.raises(ValueError, match="not symmetric"):
        TreeDistanceMask(W, 0.5)


@pytest.mark.parametrize("decay", [0.0, -0.5, 1.5, float("nan"), [], [(1.0,)],
                                   [(float("inf"), 0.5)], [(1.0, 0.5), (1.0, 2.0)], True])
def test_invalid_decay_raises(decay):
    with pytest.raises(ValueError, match="decay must be a float r with 0 < r <= 1"):
        TreeDistanceMask(nx.path_graph(4), decay)


def test_graph_size_differs_from_length_raises():
    with pytest.raises(ValueError, match=r"tree has 6 nodes but the mask was requested for "
                                         r"length L=8"):
        TreeDistanceMask(nx.path_graph(6), 0.5, length=8)
    mask = TreeDistanceMask(nx.path_graph(6), 0.5)
    q = np.ones((8, 4))
    with pytest.raises(ValueError, match=r"mask has shape \(6, 6\) but the attention is"):
        softmax_attention(q, q, q, mask=mask)


def test_negative_edge_length_raises():
    W = -nx.to_numpy_array(nx.path_graph(3))
    with pytest.raises(ValueError, match="nonnegative edge weights"):
        TreeDistanceMask(W, 0.5)

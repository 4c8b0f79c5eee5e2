"""DiffusionMask and ResolventMask against dense scipy.linalg.expm / numpy solve."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
import scipy.linalg
import torch

from structattn import PositiveRandomFeatures, kernel_attention, softmax_attention
from structattn.graphs import AttentionGraph
from structattn.graphs.kernels import DiffusionMask, ResolventMask, spectral_radius
from structattn.masks import Dense
from structattn.testing import MaskTestCase, assert_close, relative_error

from ..conftest import convert


def grid_adjacency(n1: int = 4, n2: int = 5, weighted: bool = False, seed: int = 0):
    G = nx.convert_node_labels_to_integers(nx.grid_2d_graph(n1, n2))
    if weighted:
        rng = np.random.default_rng(seed)
        for u, v in G.edges:
            G[u][v]["weight"] = float(rng.uniform(0.2, 1.5))
    return G, nx.to_numpy_array(G, nodelist=range(G.number_of_nodes()))


def directed_adjacency(n: int = 15, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    W = (rng.random((n, n)) < 0.25) * rng.uniform(0.1, 1.0, (n, n))
    W[np.arange(n), (np.arange(n) + 1) % n] = 0.5  # a cycle: no isolated node
    return W


def dense_generator(W: np.ndarray, t: float, operator: str) -> np.ndarray:
    """Independent dense construction of A with M = expm(A)."""
    d = W.sum(axis=1)
    n = len(W)
    if operator == "adjacency":
        return t * W
    if operator == "laplacian":
        return -t * (np.diag(d) - W)
    if operator == "normalized_laplacian":
        s = np.array([1 / np.sqrt(x) if x > 0 else 0.0 for x in d])
        return -t * (np.eye(n) - s[:, None] * W * s[None, :])
    inv = np.array([1 / x if x > 0 else 0.0 for x in d])
    return -t * (np.eye(n) - inv[:, None] * W)


_, GRID = grid_adjacency()
_, GRID_W = grid_adjacency(weighted=True)


class TestDiffusionMask(MaskTestCase):
    def make_operator(self):
        return DiffusionMask(GRID_W, 0.8)

    def dense_reference(self):
        return scipy.linalg.expm(dense_generator(GRID_W, 0.8, "laplacian"))


class TestDiffusionDirectedAdjacency(MaskTestCase):
    W = directed_adjacency()

    def make_operator(self):
        return DiffusionMask(self.W, 0.6, operator="adjacency")

    def dense_reference(self):
        return scipy.linalg.expm(0.6 * self.W)


class TestResolventSeries(MaskTestCase):
    def make_operator(self):
        return ResolventMask(GRID_W, 0.25, method="series")

    def dense_reference(self):
        return np.linalg.inv(np.eye(len(GRID_W)) - 0.25 * GRID_W)


class TestResolventDirected(MaskTestCase):
    W = directed_adjacency(12, seed=4)

    def make_operator(self):
        return ResolventMask(self.W, 0.5 / spectral_radius(self.W))

    def dense_reference(self):
        return np.linalg.inv(np.eye(12) - 0.5 / spectral_radius(self.W) * self.W)


@pytest.mark.parametrize("operator", ["laplacian", "normalized_laplacian",
                                      "random_walk_laplacian", "adjacency"])
@pytest.mark.parametrize("t", [0.0, 0.3, 2.5])
def test_diffusion_matches_expm(operator, t):
    for W in (GRID_W, directed_adjacency()):
        mask = DiffusionMask(W, t, operator=operator)
        ref = scipy.linalg.expm(dense_generator(W, t, operator))
        assert_close(mask.to_dense(), ref, rtol=10 * mask.tol, what=operator)
        X = np.random.default_rng(0).standard_normal((2, len(W), 3))
        assert_close(mask.matmat(X), ref @ X, rtol=10 * mask.tol)
        assert_close(mask.T.matmat(X), ref.T @ X, rtol=10 * mask.tol)


def test_diffusion_converges_with_tolerance():
    """The error follows the tolerance: below tol at every tol, decreasing with it."""
    ref = scipy.linalg.expm(dense_generator(GRID_W, 1.5, "laplacian"))
    errors = []
    for tol in (1e-2, 1e-4, 1e-6, 1e-8, 1e-10, 1e-12):
        mask = DiffusionMask(GRID_W, 1.5, tol=tol)
        errors.append(relative_error(mask.to_dense(), ref))
        assert errors[-1] <= tol, (tol, errors[-1])
    assert all(b <= a for a, b in itertools.pairwise(errors))
    assert errors[-1] < 1e-12


def test_diffusion_expm_multiply_and_torch_backends(backend, dtype):
    ref = scipy.linalg.expm(dense_generator(GRID_W, 1.0, "laplacian"))
    X = np.random.default_rng(1).standard_normal((3, len(GRID_W), 4))
    (Xb,) = convert(backend, dtype, X)
    out = DiffusionMask(GRID_W, 1.0).matmat(Xb, backend=backend)
    assert_close(out, ref @ X, rtol=1e-9 if dtype == "float64" else 1e-5)
    if backend != "torch":
        out = DiffusionMask(GRID_W, 1.0, method="expm_multiply").matmat(Xb, backend=backend)
        assert_close(out, ref @ X, rtol=1e-12 if dtype == "float64" else 1e-6)
    else:
        with pytest.raises(TypeError, match="numpy arrays only"):
            DiffusionMask(GRID_W, 1.0, method="expm_multiply").matmat(Xb)


@pytest.mark.parametrize("method", ["series", "cg"])
@pytest.mark.parametrize("fraction", [0.1, 0.6, 0.95])
def test_resolvent_matches_solve(method, fraction):
    rho = spectral_radius(GRID_W)
    assert rho == pytest.approx(np.max(np.abs(np.linalg.eigvalsh(GRID_W))), rel=1e-12)
    lam = fraction / rho
    ref = np.linalg.inv(np.eye(len(GRID_W)) - lam * GRID_W)
    mask = ResolventMask(GRID_W, lam, method=method)
    assert mask.method == method
    X = np.random.default_rng(2).standard_normal((2, len(GRID_W), 5))
    I_minus = np.eye(len(GRID_W)) - lam * GRID_W
    solved = np.stack([np.linalg.solve(I_minus, x) for x in X])  # dense solve
    for backend, Xb in (("numpy", X), ("numba", X), ("torch", torch.as_tensor(X))):
        assert_close(mask.matmat(Xb, backend=backend), solved, rtol=10 * mask.tol)
    assert_close(mask.to_dense(), ref, rtol=10 * mask.tol)


def test_resolvent_converges_with_tolerance():
    lam = 0.9 / spectral_radius(GRID_W)
    ref = np.linalg.inv(np.eye(len(GRID_W)) - lam * GRID_W)
    for method in ("series", "cg"):
        errors = [relative_error(ResolventMask(GRID_W, lam, method=method, tol=tol).to_dense(),
                                 ref) for tol in (1e-2, 1e-5, 1e-8, 1e-11)]
        for tol, err in zip((1e-2, 1e-5, 1e-8, 1e-11), errors, strict=True):
            assert err <= tol, (method, tol, err)
        assert errors[-1] < errors[0]
    # auto picks CG near the boundary (far fewer sparse products than the series)
    assert ResolventMask(GRID_W, 0.99 / spectral_radius(GRID_W)).method == "cg"
    assert ResolventMask(GRID_W, 0.05).method == "series"


def test_cg_torch_gradcheck():
    lam = 0.7 / spectral_radius(GRID)
    mask = ResolventMask(GRID, lam, method="cg", tol=1e-14)
    X = torch.tensor(np.random.default_rng(3).standard_normal((len(GRID), 2)),
                     requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: mask.matmat(x), (X,), eps=1e-6, atol=1e-7)


def test_graph_kernel_masks_in_attention(backend, dtype):
    G, W = grid_adjacency(5, 6)
    ag = AttentionGraph.from_networkx(G)
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal((2, 30, 8)) * 0.5 for _ in range(3))
    phi = PositiveRandomFeatures(dim=8, num_features=16, seed=1)
    qb, kb, vb = convert(backend, dtype, q, k, v)
    n = len(W)
    for mask, ref in (
        (DiffusionMask(ag, 0.5), scipy.linalg.expm(dense_generator(W, 0.5, "laplacian"))),
        (ResolventMask(G, 0.2), np.linalg.inv(np.eye(n) - 0.2 * W)),
    ):
        assert_close(kernel_attention(qb, kb, vb, phi, mask=mask, backend=backend),
                     kernel_attention(q, k, v, phi, mask=Dense(ref)), rtol=1e-9
                     if dtype == "float64" else 1e-4)
        assert_close(softmax_attention(qb, kb, vb, mask=mask, backend=backend),
                     softmax_attention(q, k, v, mask=Dense(ref)), rtol=1e-9
                     if dtype == "float64" else 1e-4)


def test_large_adjacency_diffusion_is_normalized_without_overflow():
    """exp(t·W) with t·ρ = 120 overflows float32; attention's row normalization does not."""
    _, W = grid_adjacency(3, 4)
    t = 120.0 / spectral_radius(W)
    mask = DiffusionMask(W, t, operator="adjacency")
    norm = mask._normalized()
    c = -norm._log_scale
    ref = scipy.linalg.expm(t * W - c * np.eye(len(W)))  # e^{-c} exp(tW), in range
    assert_close(norm.to_dense(), ref, rtol=1e-9)
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((12, 4)).astype(np.float32) for _ in range(3))
    phi = PositiveRandomFeatures(dim=4, num_features=8, seed=0)
    out = kernel_attention(q, k, v, phi, mask=mask)
    assert np.all(np.isfinite(out))
    expected = kernel_attention(*(a.astype(np.float64) for a in (q, k, v)), phi,
                                mask=Dense(ref))
    assert_close(out, expected, rtol=1e-4)
    with np.errstate(over="ignore"):
        assert not np.all(np.isfinite(mask.matmat(np.ones((12, 1), np.float32))))


# ---------------------------------------------------------------------- bad input
def test_resolvent_outside_convergence_raises():
    rho = spectral_radius(GRID)
    with pytest.raises(ValueError, match=r"lam \* rho\(W\) must be < 1 .*lam\*rho=1"):
        ResolventMask(GRID, 1.0 / rho)
    with pytest.raises(ValueError, match=r"lam \* rho\(W\) must be < 1"):
        ResolventMask(GRID, 2.0 / rho)
    with pytest.raises(ValueError, match="lam must be a finite float >= 0"):
        ResolventMask(GRID, -0.1)


def test_graph_size_differs_from_length_raises():
    with pytest.raises(ValueError, match=r"graph has 20 nodes but the mask was requested for "
                                         r"length L=16"):
        DiffusionMask(GRID, 0.5, length=16)
    with pytest.raises(ValueError, match=r"graph has 20 nodes"):
        ResolventMask(GRID, 0.1, length=21)
    q = np.ones((16, 4))
    with pytest.raises(ValueError, match=r"mask has shape \(20, 20\)"):
        kernel_attention(q, q, q, PositiveRandomFeatures(4, 8, seed=0),
                         mask=DiffusionMask(GRID, 0.5))


def test_invalid_diffusion_arguments_raise():
    with pytest.raises(ValueError, match="t must be a finite float >= 0"):
        DiffusionMask(GRID, -1.0)
    with pytest.raises(ValueError, match="operator must be one of"):
        DiffusionMask(GRID, 1.0, operator="heat")
    with pytest.raises(ValueError, match="tol must be a float with 0 < tol < 1"):
        DiffusionMask(GRID, 1.0, tol=0.0)
    with pytest.raises(ValueError, match="method='cg' needs a symmetric"):
        ResolventMask(directed_adjacency(), 0.01, method="cg")
    with pytest.raises(ValueError, match="square"):
        DiffusionMask(np.ones((3, 4)), 1.0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        DiffusionMask(np.full((3, 3), np.nan), 1.0)
    with pytest.raises(TypeError, match="must be an AttentionGraph, a networkx graph"):
        DiffusionMask([[0, 1], [1, 0]], 1.0)


@pytest.mark.parametrize("lam", [0.3, 0.5, 2.0])
def test_resolvent_on_a_dag_is_the_finite_series(lam):
    # nilpotent W (rho = 0): a numerical spectral radius would give degree 0 (the
    # identity); the longest path gives the exact finite series instead
    rng = np.random.default_rng(5)
    W = np.tril(rng.random((9, 9)), -1)  # a weighted causal DAG, no self-loops
    M = ResolventMask(W, lam, method="series")
    assert M.plan["series_degree"] == 8
    ref = np.linalg.inv(np.eye(9) - lam * W)
    np.testing.assert_allclose(M.to_dense(), ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


def test_resolvent_non_normal_without_a_norm_bound_raises():
    n = 20
    W = np.diag(3.0 * np.ones(n - 1), 1)
    W[-1, 0] = 1e-12  # a cycle: rho ~ 0.71 but ||W|| = 3, strongly non-normal
    from structattn.graphs.kernels import spectral_radius

    with pytest.raises(ValueError, match="no a-priori error bound"):
        ResolventMask(W, 0.5 / spectral_radius(W))
    M = ResolventMask(W, 0.3)  # nu = 0.9 < 1: the norm bound holds
    ref = np.linalg.inv(np.eye(n) - 0.3 * W)
    err = np.abs(M.to_dense() - ref).max() / np.abs(ref).max()
    assert err <= 1e-10


def test_resolvent_within_rounding_of_the_radius_raises():
    import networkx as nx

    from structattn.graphs.kernels import spectral_radius

    A = nx.to_numpy_array(nx.path_graph(14))
    with pytest.raises(ValueError, match="must be < 1"):
        ResolventMask(A, (1 - 1e-15) / spectral_radius(A))

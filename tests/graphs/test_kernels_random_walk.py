"""RandomWalkMask (graph random features): products, unbiasedness, error ∝ walks^-1/2."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from structattn import PositiveRandomFeatures, kernel_attention, softmax_attention
from structattn.graphs import AttentionGraph
from structattn.graphs.kernels import RandomWalkMask
from structattn.masks import Dense
from structattn.testing import MaskTestCase, assert_close

from ..conftest import convert


def weighted_graph(n: int = 9, seed: int = 0, directed: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    W = (rng.random((n, n)) < 0.35) * rng.uniform(0.2, 1.0, (n, n))
    W[np.arange(n), (np.arange(n) + 1) % n] = 0.6  # a ring keeps every node connected
    np.fill_diagonal(W, 0.0)
    if not directed:
        W = np.maximum(W, W.T)
    return W


def expected_mask(W: np.ndarray, f) -> np.ndarray:
    """Independent reference: F(W) = Σ f_l W^l by explicit powers, E[M̂] = F Fᵀ."""
    F = sum(c * np.linalg.matrix_power(W, l) for l, c in enumerate(f))
    return F @ F.T


MOD = (1.0, 0.5, 0.25, 0.1)


class TestRandomWalkMask(MaskTestCase):
    W = weighted_graph(11, seed=2, directed=True)

    def make_operator(self):
        return RandomWalkMask(self.W, 6, 0.3, MOD, seed=5)

    def dense_reference(self):
        psi, psi_prime = self.make_operator().features
        return (psi @ psi_prime.T).toarray()


def test_deterministic_given_seed():
    W = weighted_graph()
    a = RandomWalkMask(W, 8, 0.4, MOD, seed=3).to_dense()
    b = RandomWalkMask(W, 8, 0.4, MOD, seed=3).to_dense()
    c = RandomWalkMask(W, 8, 0.4, MOD, seed=4).to_dense()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    g = np.random.default_rng(3)
    RandomWalkMask(W, 8, 0.4, MOD, seed=g)  # a Generator is used as is (advanced)


@pytest.mark.parametrize("directed", [False, True])
def test_unbiased_within_five_standard_errors(directed):
    W = weighted_graph(8, seed=1, directed=directed)
    target = expected_mask(W, MOD)
    F = sum(c * np.linalg.matrix_power(W, l) for l, c in enumerate(MOD))
    R = 400
    masks, feats = [], []
    for s in range(R):
        psi, psi_prime = RandomWalkMask(W, 4, 0.35, MOD, seed=s).features
        masks.append((psi @ psi_prime.T).toarray())
        feats.append(psi.toarray())
    for samples, truth in ((np.array(masks), target), (np.array(feats), F)):
        mean = samples.mean(axis=0)
        se = samples.std(axis=0, ddof=1) / np.sqrt(R)
        random_entries = se > 0
        z = np.abs(mean - truth)[random_entries] / se[random_entries]
        assert z.max() <= 5.0, z.max()
        # entries the walks cannot randomise are exact
        np.testing.assert_allclose(mean[~random_entries], truth[~random_entries],
                                   rtol=1e-12, atol=1e-12)


def test_error_decays_like_inverse_sqrt_walks():
    W = weighted_graph(16, seed=3)
    target = expected_mask(W, MOD)
    # M̂ - M = (Ψ-F)F'ᵀ + F(Ψ'-F')ᵀ + (Ψ-F)(Ψ'-F')ᵀ: the last term is O(1/n) and steepens
    # the slope while the relative error is O(1) (measured: -0.64 over n = 4…256), so the
    # fit uses budgets in the asymptotic regime (relative error 0.25 … 0.03)
    budgets = np.array([128, 512, 2048, 8192])
    errors = []
    for n in budgets:
        errs = [np.linalg.norm(RandomWalkMask(W, int(n), 0.4, MOD, seed=100 + s).to_dense()
                               - target) / np.linalg.norm(target) for s in range(16)]
        errors.append(np.sqrt(np.mean(np.square(errs))))  # RMS error over seeds
    slope = np.polyfit(np.log(budgets), np.log(errors), 1)[0]
    assert -0.6 <= slope <= -0.4, (slope, errors)


def test_modulation_zero_beyond_and_expected_dense():
    W = weighted_graph(10, seed=4)
    mask = RandomWalkMask(W, 4, 0.5, (1.0, 0.0, 0.3), seed=0)
    assert_close(mask.expected_dense(), expected_mask(W, (1.0, 0.0, 0.3)), dtype="float64")
    only_start = RandomWalkMask(W, 4, 0.5, (2.0,), seed=0)  # f = 2·δ_0: M̂ = 4·I exactly
    assert_close(only_start.to_dense(), 4.0 * np.eye(10), dtype="float64")
    t = 0.4
    f = RandomWalkMask.diffusion_modulation(t, 12)
    import scipy.linalg

    assert_close(expected_mask(W, f), scipy.linalg.expm(t * W), rtol=1e-10)


def test_through_attention_equals_dense_realisation(backend, dtype):
    G = nx.convert_node_labels_to_integers(nx.grid_2d_graph(4, 6))
    mask = RandomWalkMask(AttentionGraph.from_networkx(G), 8, 0.5, MOD, seed=1)
    M = Dense(mask.to_dense())
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 24, 8)) * 0.5 for _ in range(3))
    phi = PositiveRandomFeatures(dim=8, num_features=16, seed=0)
    qb, kb, vb = convert(backend, dtype, q, k, v)
    assert_close(kernel_attention(qb, kb, vb, phi, mask=mask, backend=backend),
                 kernel_attention(q, k, v, phi, mask=M))
    assert_close(softmax_attention(qb, kb, vb, mask=mask, backend=backend),
                 softmax_attention(q, k, v, mask=M))


def test_nnz_and_cost_grow_linearly_in_walks():
    G = nx.convert_node_labels_to_integers(nx.grid_2d_graph(10, 10))
    nnz = [RandomWalkMask(G, n, 0.5, MOD, seed=0).nnz for n in (2, 4, 8)]
    assert nnz[0] < nnz[1] < nnz[2] <= 2 * 100 * 8 * len(MOD)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("p", [0.0, 1.0, -0.2, 1.5, float("nan"), True])
def test_halting_probability_outside_open_unit_interval_raises(p):
    with pytest.raises(ValueError, match="halting_prob must be a probability strictly "
                                         "between 0 and 1"):
        RandomWalkMask(weighted_graph(), 4, p, MOD, seed=0)


def test_other_invalid_arguments_raise():
    W = weighted_graph()
    with pytest.raises(ValueError, match="num_walks must be an integer >= 1"):
        RandomWalkMask(W, 0, 0.5, MOD, seed=0)
    with pytest.raises(ValueError, match="modulation must be a non-empty 1-D sequence"):
        RandomWalkMask(W, 4, 0.5, [], seed=0)
    with pytest.raises(ValueError, match="modulation must be"):
        RandomWalkMask(W, 4, 0.5, [1.0, float("inf")], seed=0)
    with pytest.raises(TypeError, match="seed must be a non-negative int"):
        RandomWalkMask(W, 4, 0.5, MOD, seed=None)


def test_graph_size_differs_from_length_raises():
    with pytest.raises(ValueError, match=r"graph has 9 nodes but the mask was requested for "
                                         r"length L=10"):
        RandomWalkMask(weighted_graph(), 4, 0.5, MOD, seed=0, length=10)

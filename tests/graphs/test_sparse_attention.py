"""sparse_attention == dense masked float64 reference, every generator and backend."""

from __future__ import annotations

import numpy as np
import pytest

from structattn.graphs import (
    AttentionGraph,
    bigbird,
    dilated,
    fixed,
    full,
    global_tokens,
    hypercube,
    longformer,
    random,
    sparse_attention,
    sparse_attention_matrix,
    star_transformer,
    strided,
    window,
)
from structattn.testing import relative_error

from ..conftest import convert, to_np, torch
from ._oracles import dense_masked_attention, torch_dense_masked

TOL = {"float64": 1e-12, "float32": 1e-5}
NS = (1, 2, 3, 7, 33, 100, 257)

GENERATORS = {
    "full": full,
    "window": lambda n: window(n, 2),
    "dilated": lambda n: dilated(n, 2, 3),
    "global_tokens": lambda n: global_tokens(n, min(2, n)),
    "star_transformer": star_transformer,
    "longformer": lambda n: longformer(n, 3, 1),
    "bigbird": lambda n: bigbird(n, 2, 1, min(3, n), seed=7),
    "random": lambda n: random(n, min(4, n), seed=3),
    "fixed": lambda n: fixed(n, 4, 2),
    "strided": lambda n: strided(n, 5),
    "hypercube": hypercube,
}


def qkv(n, batch=(1, 4), d=8, dv=5, seed=0):
    rng = np.random.default_rng(seed + n)
    return (rng.standard_normal((*batch, n, d)), rng.standard_normal((*batch, n, d)),
            rng.standard_normal((*batch, n, dv)))


def check_all_backends(q, k, v, graph, *, scale=None, dtypes=("float64", "float32")):
    for causal in (False, True):
        A = (graph.causal() if causal else graph).to_dense()
        ref, _ = dense_masked_attention(q, k, v, A, scale)
        for backend in ("numpy", "numba", "torch"):
            for dtype in dtypes:
                args = convert(backend, dtype, q, k, v)
                out = sparse_attention(*args, graph, scale=scale, causal=causal,
                                       backend=backend)
                assert type(out) is type(args[0]) and str(out.dtype).endswith(dtype)
                got = to_np(out)
                assert np.all(np.isfinite(got))
                err = relative_error(got, ref) if np.any(ref) else np.abs(got).max()
                assert err <= TOL[dtype], (backend, dtype, causal, err)


@pytest.mark.parametrize("name", list(GENERATORS))
def test_matches_dense_masked_reference(name):
    for n in NS:
        check_all_backends(*qkv(n), GENERATORS[name](n))


@pytest.mark.parametrize("n", [33, 100])
def test_block_patterns_match_reference(n):
    b = 11 if n == 33 else 4
    for graph in (hypercube(n, block_size=b), bigbird(n, 1, 1, 2, seed=1, block_size=b)):
        check_all_backends(*qkv(n, batch=(2,)), graph)


def test_adversarial_score_ranges():
    """Integer q, k: scores are exact in float32 and float64 and spread over ±1e4, so
    every path must subtract the row maximum over the neighbours only."""
    rng = np.random.default_rng(9)
    for n in (7, 100, 257):
        q = rng.integers(-60, 61, (2, n, 4)).astype(float)
        k = rng.integers(-60, 61, (2, n, 4)).astype(float)
        q[:, ::3] *= -1  # some rows with huge negative scores everywhere
        v = rng.standard_normal((2, n, 3))
        S = np.einsum("bid,bjd->bij", q, k)
        assert S.max() > 5e3 and S.min() < -5e3
        for graph in (hypercube(n), bigbird(n, 1, 1, 2, seed=0), window(n, 1)):
            check_all_backends(q, k, v, graph, scale=1.0)


def test_single_neighbour_rows_are_the_value():
    n = 9
    graph = AttentionGraph(np.arange(n + 1), (np.arange(n) + 1) % n)  # i -> i+1 only
    q, k, v = qkv(n, batch=(3,))
    for backend in ("numpy", "numba", "torch"):
        out = to_np(sparse_attention(*convert(backend, "float64", q, k, v), graph,
                                     backend=backend))
        np.testing.assert_allclose(out, np.roll(v, -1, axis=-2), rtol=0, atol=1e-15)


def user_graph_with_empty_rows(n=12, seed=2):
    A = np.random.default_rng(seed).random((n, n)) < 0.3
    A[[0, 4, 5, n - 1]] = False
    return AttentionGraph.from_dense(A)


def test_user_csr_with_empty_rows_gives_zeros():
    graph = user_graph_with_empty_rows()
    assert np.any(graph.degrees == 0)
    q, k, v = qkv(12)
    check_all_backends(q, k, v, graph)
    for backend in ("numpy", "numba", "torch"):
        out = to_np(sparse_attention(*convert(backend, "float64", q, k, v), graph,
                                     backend=backend))
        assert np.all(out[..., graph.degrees == 0, :] == 0)
        P = to_np(sparse_attention_matrix(*convert(backend, "float64", q, k), graph,
                                          backend=backend))
        assert np.all(np.isfinite(P)) and np.all(P[..., graph.degrees == 0, :] == 0)
    empty = AttentionGraph(np.zeros(13, dtype=int), [])
    assert np.all(sparse_attention(q, k, v, empty) == 0)
    # torch: finite gradients through empty rows
    tq, tk, tv = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    sparse_attention(tq, tk, tv, graph).sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (tq, tk, tv))


@pytest.mark.parametrize("name", ["hypercube", "bigbird", "window"])
def test_matrix_matches_reference(name):
    n = 33
    graph = GENERATORS[name](n)
    q, k, v = qkv(n)
    for causal in (False, True):
        _, P_ref = dense_masked_attention(q, k, v, (graph.causal() if causal else graph)
                                          .to_dense())
        for backend in ("numpy", "numba", "torch"):
            P = to_np(sparse_attention_matrix(*convert(backend, "float64", q, k), graph,
                                              causal=causal, backend=backend))
            assert relative_error(P, P_ref) <= 1e-12
            np.testing.assert_allclose(P.sum(-1), 1.0, atol=1e-12)


def test_causal_flag_equals_causal_graph():
    q, k, v = qkv(33)
    g = hypercube(33)
    np.testing.assert_array_equal(sparse_attention(q, k, v, g, causal=True),
                                  sparse_attention(q, k, v, g.causal()))


def test_permutation_equivariance():
    n = 40
    graph = bigbird(n, 2, 1, 3, seed=4)
    q, k, v = qkv(n, batch=(2,))
    perm = np.random.default_rng(1).permutation(n)
    for backend in ("numba", "torch"):
        out = to_np(sparse_attention(*convert(backend, "float64", q, k, v), graph,
                                     backend=backend))
        pq, pk, pv = (x[..., perm, :] for x in (q, k, v))
        pout = to_np(sparse_attention(*convert(backend, "float64", pq, pk, pv),
                                      graph.permute(perm), backend=backend))
        np.testing.assert_allclose(pout, out[..., perm, :], rtol=0, atol=1e-13)


# ---------------------------------------------------------------------- autograd
@pytest.mark.parametrize("graph", [hypercube(7), bigbird(9, 1, 1, 2, seed=0),
                                   user_graph_with_empty_rows(8)], ids=["hyper", "bb", "empty"])
def test_torch_gradcheck(graph):
    n = graph.num_nodes
    rng = np.random.default_rng(n)
    args = [torch.tensor(rng.standard_normal((2, n, d)), requires_grad=True)
            for d in (3, 3, 2)]
    assert torch.autograd.gradcheck(lambda q, k, v: sparse_attention(q, k, v, graph),
                                    args)
    assert torch.autograd.gradcheck(
        lambda q, k: sparse_attention_matrix(q, k, graph, causal=True), args[:2])


def test_torch_gradients_equal_dense_autograd():
    n = 33
    graph = longformer(n, 2, 1) | random(n, 3, seed=2)
    q, k, v = qkv(n)
    grads = []
    for fn in (lambda a, b, c: sparse_attention(a, b, c, graph),
               lambda a, b, c: torch_dense_masked(a, b, c, graph.to_dense())):
        ts = [torch.tensor(x, requires_grad=True) for x in (q, k, v)]
        out = fn(*ts)
        out.backward(torch.as_tensor(np.random.default_rng(0).standard_normal(out.shape)))
        grads.append([t.grad.numpy() for t in ts])
    for a, b in zip(*grads, strict=True):
        assert relative_error(a, b) <= 1e-12


# --------------------------------------------------------------------- bad input
def test_graph_size_must_equal_length():
    q, k, v = qkv(10)
    with pytest.raises(ValueError, match=r"graph has 11 nodes but the sequence length is L=10"):
        sparse_attention(q, k, v, hypercube(11))
    with pytest.raises(ValueError, match="graph has 9 nodes"):
        sparse_attention_matrix(q, k, window(9, 1))


def test_bad_inputs():
    q, k, v = qkv(10)
    with pytest.raises(TypeError, match=r"graph must be a structattn\.graphs\.AttentionGraph"):
        sparse_attention(q, k, v, np.ones((10, 10), bool))
    with pytest.raises(ValueError, match="L_q == L_k"):
        sparse_attention(q[..., :5, :], k, v, hypercube(10))
    q_nan = q.copy()
    q_nan[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="q contains NaN"):
        sparse_attention(q_nan, k, v, hypercube(10))
    with pytest.raises(TypeError, match="backend='torch' requires torch"):
        sparse_attention(q, k, v, hypercube(10), backend="torch")
    with pytest.raises(TypeError, match="causal must be a bool"):
        sparse_attention(q, k, v, hypercube(10), causal=1)
    with pytest.raises(ValueError, match="scale must be a finite number"):
        sparse_attention(q, k, v, hypercube(10), scale=float("inf"))


def test_unbatched_and_many_leading_dims():
    g = hypercube(17)
    q, k, v = qkv(17, batch=(2, 3, 2))
    ref, _ = dense_masked_attention(q, k, v, g.to_dense())
    for backend in ("numpy", "numba", "torch"):
        out = to_np(sparse_attention(*convert(backend, "float64", q, k, v), g, backend=backend))
        assert out.shape == (2, 3, 2, 17, 5) and relative_error(out, ref) <= 1e-12
        one = to_np(sparse_attention(*convert(backend, "float64", q[0, 0, 0], k[0, 0, 0],
                                               v[0, 0, 0]), g, backend=backend))
        assert one.shape == (17, 5) and relative_error(one, ref[0, 0, 0]) <= 1e-12

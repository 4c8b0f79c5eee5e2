"""Regression tests for issue 13 ("no silent wrong results"): every example of the issue.

Each test failed before the change (checked against the previous commit); together with
``tests/test_fuzz.py`` they pin the contracts documented in ``docs/reliability.rst``.
"""

from __future__ import annotations

import warnings

import networkx as nx
import numpy as np
import pytest
import torch

import structattn as sa
from structattn import eigen, estimators, graphs, layers, masks, mra, solvers
from structattn._validate import ArgumentTypeError


# ------------------------------------------------------------ tiny normalizers
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_one_token_prf_output_equals_v(causal, backend):
    """L = 1: the output must equal v (it was [[1, 1, 0]], no warning)."""
    q = np.float32([[31.229883]])
    k = np.float32([[-83.72612]])
    v = np.float32([[1.3552465, 1.227432, 0.8615645]])
    phi = sa.PositiveRandomFeatures(dim=1, num_features=8, seed=318, hyperbolic=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = sa.kernel_attention(q, k, v, phi, causal=causal, backend=backend)
    np.testing.assert_allclose(out, v, rtol=1e-6)


def test_prf_rows_stay_in_convex_hull_at_extreme_magnitudes_float64():
    """A subnormal normalizer (5e-324) gave rows outside the range of v."""
    rng = np.random.default_rng(3)
    phi = sa.PositiveRandomFeatures(dim=2, num_features=4, seed=5, hyperbolic=True)
    for scale in (10.0, 40.0, 120.0):
        q = rng.standard_normal((6, 2)) * scale
        k = rng.standard_normal((6, 2)) * scale
        v = rng.standard_normal((6, 3))
        out = sa.kernel_attention(q, k, v, phi)
        assert np.all(out >= v.min(0) - 1e-9) and np.all(out <= v.max(0) + 1e-9)


def test_subnormal_normalizer_is_zero_row_with_warning():
    """Rows whose normalizer is subnormal are reported and defined (zeros), not garbage."""
    q = np.array([[-1.0, 0.0], [1.0, 0.0]])
    k = np.array([[1e-170, 0.0], [1e-170, 0.0]])
    v = np.array([[5.0], [-3.0]])
    with pytest.warns(sa.NormalizerWarning, match="zero normalizer"):
        out = sa.kernel_attention(q * 1e-150, k, v, sa.ReluFeatures())
    assert np.all(out == 0.0)


# ------------------------------------------------------------ finite gradients
@pytest.mark.parametrize("causal", [False, True])
def test_prf_torch_gradients_finite_at_large_inputs(causal):
    g = torch.Generator().manual_seed(16)
    q = (torch.randn(4, 4, generator=g) * 30).requires_grad_()
    k = (torch.randn(4, 4, generator=g) * 30).requires_grad_()
    v = torch.randn(4, 4, generator=g).requires_grad_()
    phi = sa.PositiveRandomFeatures(dim=4, num_features=16, seed=16)
    out = sa.kernel_attention(q, k, v, phi, causal=causal)
    out.square().sum().backward()
    assert torch.isfinite(out).all()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()


def test_context_pool_gradients_finite_on_large_inputs():
    torch.manual_seed(0)
    pool = layers.ContextPool(16)
    x = (torch.randn(2, 12, 16) * 1e3).requires_grad_()
    y = pool(x)
    y.square().sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in pool.parameters())


@pytest.mark.parametrize("half_width", [None, 2])
def test_gaussian_pooling_sigma_zero_has_finite_gradients(half_width):
    x = torch.randn(1, 6, 3, dtype=torch.float64, requires_grad=True)
    logw = torch.zeros(1, 6, dtype=torch.float64, requires_grad=True)
    sigma = torch.zeros(1, 6, dtype=torch.float64, requires_grad=True)
    y = layers.gaussian_pooling(x, logw, sigma, half_width=half_width)
    torch.testing.assert_close(y, x)  # σ = 0: the identity
    y.square().sum().backward()
    for t in (x, logw, sigma):
        assert torch.isfinite(t.grad).all()


def test_gaussian_pooling_negative_sigma_refused():
    x = torch.randn(1, 5, 2)
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        layers.gaussian_pooling(x, torch.zeros(1, 5), -torch.ones(1, 5), check_finite=True)
    with sa.debug(), pytest.raises(ValueError, match="sigma"):
        layers.gaussian_pooling(x, torch.zeros(1, 5), -torch.ones(1, 5))


# ------------------------------------------------------------ simplex maps
@pytest.mark.parametrize(("dtype", "big"), [(np.float64, 1e200), (np.float32, 1e30)])
@pytest.mark.parametrize("alpha", [1.5, 1.3, 2.0])
def test_entmax_overflow_safe(dtype, big, alpha):
    x = np.array([[1.0, 2.0, 3.0], [-3.0, 0.5, -1.0]], dtype=dtype) * dtype(big)
    p = solvers.entmax(x, alpha)
    np.testing.assert_array_equal(p, np.array([[0, 0, 1], [0, 1, 0]], dtype=dtype))
    p_bisect = solvers.entmax(x, alpha, method="bisect")
    np.testing.assert_allclose(p, p_bisect, atol=1e-6)


@pytest.mark.parametrize("fn", ["entmax15", "sparsemax", "entmax13"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_simplex_maps_backward_finite_at_any_magnitude(fn, dtype):
    big = 1e30 if dtype == torch.float32 else 1e300
    x = (torch.tensor([[1.0, 2.0, 3.0, -5.0]], dtype=dtype) * big).requires_grad_()
    f = {"entmax15": lambda t: solvers.entmax(t, 1.5), "sparsemax": solvers.sparsemax,
         "entmax13": lambda t: solvers.entmax(t, 1.3)}[fn]
    p = f(x)
    (p * torch.arange(4, dtype=dtype)).sum().backward()
    assert torch.equal(p.detach(), torch.tensor([[0, 0, 1, 0]], dtype=dtype))
    assert torch.isfinite(x.grad).all()


# ------------------------------------------------------------ cosFormer warning
def test_cosformer_zero_normalizers_warn_like_kernel_attention():
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((3, 5, 4))
    with pytest.warns(sa.NormalizerWarning):
        sa.kernel_attention(-abs(q), abs(k), v, sa.ReluFeatures())
    with pytest.warns(sa.NormalizerWarning, match="cosformer"):
        out = estimators.cosformer(-abs(q), abs(k), v)
    assert np.all(out == 0.0)


# ------------------------------------------------------------ refused input
def test_feature_map_called_directly_refuses_nan():
    with pytest.raises(ValueError, match="NaN or Inf"):
        sa.ReluFeatures()(np.full((2, 2), np.nan))
    phi = sa.PositiveRandomFeatures(dim=2, num_features=4, seed=0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        phi(np.array([[np.inf, 0.0]]))
    assert np.isnan(phi(np.array([[np.nan, 0.0]]), check_finite=False)).all()


@pytest.mark.parametrize(("fn", "arg", "err"), [
    (graphs.gray_code, -1, ValueError), (graphs.gray_code, 1.5, TypeError),
    (graphs.inverse_gray_code, -2, ValueError), (graphs.cube_dimension, -1, ValueError),
    (graphs.cube_dimension, 2.0, TypeError),
])
def test_hypercube_labels_validated(fn, arg, err):
    with pytest.raises(err):
        fn(arg)


def test_tree_distance_mask_refuses_multigraph():
    G = nx.MultiGraph()
    G.add_edges_from([(0, 1), (1, 2), (0, 1)])
    with pytest.raises(ValueError, match="simple graph"):
        graphs.TreeDistanceMask(G, 0.5)
    ok = graphs.TreeDistanceMask(nx.Graph(G), 0.5).to_dense()
    assert ok[0, 1] == 0.5


def test_masks_copy_the_arrays_they_are_built_from():
    W = np.ones((3, 3))
    D = masks.Dense(W)
    W[0, 0] = 5.0
    assert D.to_dense()[0, 0] == 1.0
    c = np.ones(5)
    T = masks.Toeplitz(c)
    c[:] = 7.0
    assert np.all(T.to_dense() == 1.0)
    U = np.ones((3, 1))
    lr = masks.LowRank(U, U)
    U[:] = 2.0
    assert np.all(lr.to_dense() == 1.0)
    with pytest.raises(ValueError):  # the kept copy is read-only
        D.matrix[0, 0] = 2.0


# ------------------------------------------------------------ degenerate shapes
@pytest.mark.parametrize("like", ["numpy", "torch"])
def test_empty_lengths_give_empty_or_zero_results(like):
    def arr(*shape):
        a = np.ones(shape)
        return torch.as_tensor(a) if like == "torch" else a

    q, k, v = arr(2, 0, 4), arr(2, 0, 4), arr(2, 0, 3)
    assert tuple(sa.softmax_attention(q, k, v).shape) == (2, 0, 3)
    assert tuple(sa.kernel_attention(q, k, v, sa.EluFeatures()).shape) == (2, 0, 3)
    q1 = arr(2, 5, 4)
    out = sa.softmax_attention(q1, k, v)
    assert tuple(out.shape) == (2, 5, 3) and float(abs(out).sum()) == 0.0
    assert tuple(sa.attention_matrix(q1, k).shape) == (2, 5, 0)


def test_zero_feature_or_value_size_is_a_named_error():
    rng = np.random.default_rng(0)
    q, v = rng.standard_normal((5, 4)), rng.standard_normal((5, 2))
    with pytest.raises(ValueError, match="feature size d >= 1"):
        sa.softmax_attention(q[:, :0], q[:, :0], v)
    with pytest.raises(ValueError, match="value size d_v >= 1"):
        sa.kernel_attention(q, q, v[:, :0], sa.EluFeatures(), causal=True)
    with pytest.raises(ValueError, match="value size d_v >= 1"):
        graphs.sparse_attention(q, q, v[:, :0], graphs.window(5, 1))


def test_mask_batch_that_does_not_broadcast_is_named():
    x = np.ones((2, 5, 4))
    with pytest.raises(ValueError, match=r"mask has batch dimensions \(3,\)"):
        sa.softmax_attention(x, x, x, mask=np.ones((3, 5, 5), dtype=bool))


def test_eigen_attention_large_inputs_refused_at_the_boundary():
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((3, 1, 6, 4)) * 1e3
    with pytest.raises(ValueError, match="softmax kernel exp"):
        eigen.softmax_eigenfeatures(q[0], k[0], 3)
    with pytest.raises(ValueError, match="softmax kernel exp"):
        eigen.EigenAttention(3)(q, k, v)


def test_consistent_attention_newton_at_saturated_scores():
    rng = np.random.default_rng(0)
    th = [rng.standard_normal((8, 8)) * 1e3, rng.standard_normal((4, 4)) * 1e3]
    ref = solvers.consistent_attention(th, [2], method="closed_form")
    res = solvers.consistent_attention(th, [2], method="newton")
    assert res.converged
    np.testing.assert_allclose(res.maps[0], ref.maps[0], atol=1e-9)


# ------------------------------------------------------------ keyword contracts
@pytest.mark.parametrize("fn", ["softmax", "sparse", "mra", "randomized"])
def test_scale_has_one_contract(fn):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 16, 4))
    call = {
        "softmax": lambda s: sa.softmax_attention(x, x, x, scale=s),
        "sparse": lambda s: graphs.sparse_attention(x, x, x, graphs.window(16, 2), scale=s),
        "mra": lambda s: mra.mra_attention(x, x, x, block_size=4, blocks_per_row=2, scale=s),
        "randomized": lambda s: estimators.randomized_attention(
            x, x, x, num_samples=4, seed=0, scale=s),
    }[fn]
    call(0.5)
    for bad in (-0.5, 0.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="scale must be a finite number > 0"):
            call(bad)
    for bad in ("a", True, None if False else [1.0]):
        with pytest.raises(TypeError, match="scale must be a real number"):
            call(bad)


def test_argument_type_error_is_also_a_value_error():
    with pytest.raises(ArgumentTypeError):
        sa.PositiveRandomFeatures(dim=2.0, num_features=4, seed=0)
    assert issubclass(ArgumentTypeError, TypeError) and issubclass(ArgumentTypeError, ValueError)


def test_mra_key_mask_true_attends_and_old_keyword_still_works():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 16, 4))
    real = np.ones((1, 16), dtype=bool)
    real[:, 12:] = False
    new = mra.mra_attention(x, x, x, block_size=4, blocks_per_row=4, key_mask=real)
    with pytest.warns(DeprecationWarning, match="key_padding_mask"):
        old = mra.mra_attention(x, x, x, block_size=4, blocks_per_row=4,
                                key_padding_mask=~real)
    np.testing.assert_array_equal(new, old)
    ref = sa.softmax_attention(x[:, :12], x[:, :12], x[:, :12])
    np.testing.assert_allclose(new[:, :12], ref, atol=1e-10)
    with pytest.raises(TypeError, match="key_mask= only"):
        mra.mra_attention(x, x, x, block_size=4, blocks_per_row=4, key_mask=real,
                          key_padding_mask=~real)


def test_iteration_counts_and_seeds_have_one_name():
    x = np.random.default_rng(0).standard_normal((2, 7))
    new = solvers.entmax(x, 1.3, max_iter=30)
    with pytest.warns(DeprecationWarning, match="n_iter= is deprecated"):
        old = solvers.entmax(x, 1.3, n_iter=30)
    np.testing.assert_array_equal(new, old)
    D = np.random.default_rng(1).standard_normal((6, 4))
    X = np.random.default_rng(2).standard_normal((6, 3))
    a = solvers.lasso(D, X, 0.1, max_iter=5, tol=0.0, warn=False, backend="numpy").Z
    with pytest.warns(DeprecationWarning, match="n_iter= is deprecated"):
        b = solvers.lasso(D, X, 0.1, n_iter=5, tol=0.0, warn=False, backend="numpy").Z
    np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="unexpected keyword argument 'steps'"):
        solvers.entmax(x, 1.3, steps=3)

    from scipy import sparse

    from structattn.graphs.kernels.random_walk import sample_walk_features

    W = sparse.csr_array(nx.to_scipy_sparse_array(nx.path_graph(5), format="csr"))
    f = np.array([1.0, 0.5, 0.25])
    new = sample_walk_features(W, 3, 0.3, f, seed=4)
    with pytest.warns(DeprecationWarning, match="rng= is deprecated"):
        old = sample_walk_features(W, 3, 0.3, f, rng=np.random.default_rng(4))
    assert (new != old).nnz == 0


# -------------------------------------- issue 13 item 4: the last keyword unifications
def test_gridrpe_key_mask_is_the_one_boolean_mask_keyword():
    """``GridRPE(key_mask=)`` (True = real token) as ``mra_attention(key_mask=)``;
    ``padding=`` still works with a DeprecationWarning; both at once is a named error."""
    rng = np.random.default_rng(0)
    c = rng.standard_normal((2 * 3 - 1, 2 * 4 - 1))
    real = np.ones((3, 4), dtype=bool)
    real[2, 1:] = False
    new = masks.GridRPE((3, 4), c, num_special=1, key_mask=real)
    assert new.key_mask is not None
    with pytest.warns(DeprecationWarning, match="padding= is deprecated, use key_mask="):
        old = masks.GridRPE((3, 4), c, num_special=1, padding=real)
    np.testing.assert_array_equal(new.to_dense(), old.to_dense())
    dense = new.to_dense()
    flat = np.concatenate([[True], real.ravel()])
    assert np.all(dense[~flat] == 0) and np.all(dense[:, ~flat] == 0)
    assert np.all(dense[np.ix_(flat, flat)] != 0)
    with pytest.warns(DeprecationWarning, match="padding= is deprecated"):
        logged = masks.GridRPE.from_log(c, (3, 4), padding=real)
    np.testing.assert_array_equal(
        logged.to_dense(), masks.GridRPE.from_log(c, (3, 4), key_mask=real).to_dense())
    with pytest.raises(TypeError, match="pass key_mask= only"):
        masks.GridRPE((3, 4), c, key_mask=real, padding=real)
    with pytest.raises(ValueError, match=r"key_mask must have shape \(\.\.\., 3, 4\)"):
        masks.GridRPE((3, 4), c, key_mask=np.ones((4, 3), dtype=bool))


def test_vars_attention_fixed_step_count_is_steps():
    """A fixed number of steps is ``steps`` (``max_iter`` is a convergence budget):
    ``vars_attention(steps=)``; ``n_steps=`` still works with a DeprecationWarning."""
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((6, 4)) for _ in range(3))
    new = solvers.vars_attention(q, k, v, features="random", num_features=8, seed=0,
                                 lam=0.05, steps=3)
    with pytest.warns(DeprecationWarning, match="n_steps= is deprecated, use steps="):
        old = solvers.vars_attention(q, k, v, features="random", num_features=8, seed=0,
                                     lam=0.05, n_steps=3)
    np.testing.assert_array_equal(new, old)
    one = solvers.vars_attention(q, k, v, features="random", num_features=8, seed=0,
                                 lam=0.05, steps=1)
    assert not np.allclose(new, one)
    with pytest.raises(TypeError, match="pass steps= only"):
        solvers.vars_attention(q, k, v, steps=2, n_steps=3)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        solvers.vars_attention(q, k, v, steps=0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_iter'"):
        solvers.vars_attention(q, k, v, n_iter=3)
    from structattn.studies.solvers import VarsAttention

    op = VarsAttention(num_features=8, seed=0, steps=2)
    assert op.steps == 2

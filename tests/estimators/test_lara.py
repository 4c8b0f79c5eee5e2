"""LARA: the log-domain estimator against a naive float64 reference, MIS weights,
landmark pooling, reproducibility, backend parity and gradients."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from structattn import NormalizerWarning
from structattn.estimators import (
    LinearRandomizedAttention,
    lara,
    lara_parts,
    pooling_matrix,
)
from structattn.testing import assert_close

from ..conftest import convert, to_np, torch

L, D, DV, C = 12, 4, 3, 4


def small_inputs(seed=0, L=L, d=D, dv=DV, scale=0.7):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((2, L, d)) * scale, rng.standard_normal((2, L, d)) * scale,
            rng.standard_normal((2, L, dv)))


def naive_lara(q, k, v, eps, *, mis, lam=1.0, antithetic=False, P=None):
    """Direct transcription of kernels.md §2.1 with plain exponentials (one batch element)."""
    d = q.shape[-1]
    qs, ks = q / d ** 0.25, k / d ** 0.25
    P = pooling_matrix(len(q), C) if P is None else P
    qbar = P @ qs
    mu = qbar + P @ ks
    w = np.concatenate([mu + eps, mu - eps]) if antithetic else mu + eps
    prop = np.tile(np.arange(C), 2) if antithetic else np.arange(C)

    def xi(x, w):  # (len x, len w)
        return np.exp(x @ w.T - 0.5 * np.sum(x * x, axis=1)[:, None])

    kx = xi(ks, w)  # (L, n)
    f = (kx.T @ v) / kx.sum(axis=0)[:, None]  # (n, dv)
    p_tilde = xi(qs, w) * kx.sum(axis=0)[None, :]  # (L, n)
    dens = xi(mu, w)  # (C, n): q_c(w_s) / N(w_s; 0, I)
    own = dens[prop, np.arange(len(prop))]
    mix = dens.sum(axis=0)
    if mis == "bh":
        weight = p_tilde / mix
    elif mis == "biased":
        a = np.exp(qs @ mu.T)
        a /= a.sum(axis=1, keepdims=True)
        weight = a[:, prop] * p_tilde / mix
    else:
        t = np.exp(qs @ qbar.T)
        t /= t.sum(axis=0, keepdims=True)
        alpha = own / mix + lam * (t - t.mean(axis=1, keepdims=True))[:, prop]
        weight = alpha * p_tilde / own
    return (weight @ f) / weight.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("mis", ["opt", "bh", "biased"])
@pytest.mark.parametrize("antithetic", [False, True])
def test_matches_naive_reference(mis, antithetic):
    q, k, v = small_inputs(1)
    eps = np.random.default_rng(5).standard_normal((2, C, D))
    out = lara(q, k, v, num_landmarks=C, mis=mis, antithetic=antithetic, noise=eps,
               alpha_coeff=1.5)
    for b in range(2):
        ref = naive_lara(q[b], k[b], v[b], eps[b], mis=mis, lam=1.5, antithetic=antithetic)
        assert_close(out[b], ref, dtype="float64")


def test_weights_sum_to_one_and_matrix_is_the_operator():
    q, k, v = small_inputs(2)
    for kwargs in ({"mis": "opt"}, {"mis": "bh"}, {"mis": "biased"},
                   {"antithetic": True}, {"deterministic": True},
                   {"alpha_floor": 1e-8}, {"landmarks": "adaptive-2d", "grid_shape": (3, 4)}):
        p = lara_parts(q, k, v, num_landmarks=C, seed=0, **kwargs)
        np.testing.assert_allclose(p.weights.sum(axis=-1), 1.0, rtol=1e-13, err_msg=kwargs)
        M = p.matrix()
        np.testing.assert_allclose(M.sum(axis=-1), 1.0, rtol=1e-13, err_msg=kwargs)
        assert_close(M @ v, p.output, dtype="float64")


def test_bh_alpha_is_the_query_independent_balance_heuristic():
    q, k, v = small_inputs(3)
    p = lara_parts(q, k, v, num_landmarks=C, seed=1, mis="bh")
    # alpha_c(w_c) = q_c(w_c) / sum_c' q_c'(w_c), from the samples and means alone
    w, mu = p.samples, p.means
    logq = (w @ mu.transpose(0, 2, 1) - 0.5 * np.sum(mu ** 2, axis=-1)[:, None, :])  # (b,s,c)
    dens = np.exp(logq)
    expected = dens[:, np.arange(C), np.arange(C)] / dens.sum(axis=-1)
    np.testing.assert_allclose(p.alpha, np.broadcast_to(expected[:, None, :], p.alpha.shape),
                               rtol=1e-12)
    assert np.ptp(p.alpha, axis=1).max() == 0.0  # identical for every query
    for mis in ("opt", "biased"):  # the others depend on the query
        with warnings.catch_warnings():  # opt may have a non-positive normalizer here
            warnings.simplefilter("ignore", NormalizerWarning)
            other = lara_parts(q, k, v, num_landmarks=C, seed=1, mis=mis)
        assert np.ptp(other.alpha, axis=1).max() > 1e-6


def test_opt_correction_sums_to_zero_and_floor_is_a_no_op_when_positive():
    q, k, v = small_inputs(4)
    bh = lara_parts(q, k, v, num_landmarks=C, seed=2, mis="bh")
    opt = lara_parts(q, k, v, num_landmarks=C, seed=2, mis="opt", alpha_coeff=2.0)
    np.testing.assert_allclose((opt.alpha - bh.alpha).sum(axis=-1), 0.0, atol=1e-15)
    assert np.all(opt.alpha > 1e-8)
    floored = lara(q, k, v, num_landmarks=C, seed=2, alpha_coeff=2.0, alpha_floor=1e-8)
    assert_close(floored, opt.output, dtype="float64")
    # alpha_coeff = 0: mis="opt" is the balance heuristic
    assert_close(lara(q, k, v, num_landmarks=C, seed=2, alpha_coeff=0.0), bh.output,
                 dtype="float64")


def test_negative_mis_weights_are_reported():
    rng = np.random.default_rng(0)
    q = k = rng.standard_normal((1, 16, 4)) * 3
    v = rng.standard_normal((1, 16, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for s in range(20):
            lara(q, k, v, num_landmarks=8, seed=s, alpha_coeff=50.0, alpha_floor=None)
    assert any(issubclass(w.category, NormalizerWarning) for w in caught)


def test_default_opt_weights_are_a_convex_combination_at_the_papers_size():
    # L = 196 tokens, d = 64, C = 49 landmarks (the paper's ImageNet setting): the signed
    # mis="opt" weights have a non-positive normaliser in every run; the default clamp
    # (alpha_floor="auto" = ALPHA_FLOOR) keeps every output row in the convex hull of V
    from structattn.estimators import ALPHA_FLOOR

    assert ALPHA_FLOOR == 1e-8
    rng = np.random.default_rng(11)
    q, k, v = (rng.standard_normal((2, 196, 64)) for _ in range(3))
    for s in range(3):
        p = lara_parts(q, k, v, num_landmarks=49, seed=s, alpha_coeff=2.0)
        assert np.all(p.weights >= 0)
        np.testing.assert_allclose(p.weights.sum(axis=-1), 1.0, rtol=1e-12)
        out = p.output
        assert np.all(out <= v.max(axis=-2, keepdims=True) + 1e-12)
        assert np.all(out >= v.min(axis=-2, keepdims=True) - 1e-12)
        floored = lara(q, k, v, num_landmarks=49, seed=s, alpha_coeff=2.0, alpha_floor=1e-8)
        np.testing.assert_array_equal(out, floored)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lara(q, k, v, num_landmarks=49, seed=0, alpha_coeff=2.0, alpha_floor=None)
    assert any(issubclass(w.category, NormalizerWarning) for w in caught)


def test_deterministic_and_seeded_runs_are_reproducible():
    q, k, v = small_inputs(5)
    a = lara(q, k, v, num_landmarks=C, deterministic=True)
    np.testing.assert_array_equal(a, lara(q, k, v, num_landmarks=C, deterministic=True))
    s1 = lara(q, k, v, num_landmarks=C, seed=7)
    np.testing.assert_array_equal(s1, lara(q, k, v, num_landmarks=C, seed=7))
    assert not np.allclose(s1, lara(q, k, v, num_landmarks=C, seed=8))
    assert not np.allclose(s1, a)
    op = LinearRandomizedAttention(num_landmarks=C, seed=7)
    np.testing.assert_array_equal(op(q, k, v), s1)
    assert_close(op.matrix(q, k) @ v, s1, dtype="float64")


def test_segment_pooling_uneven_lengths():
    P = pooling_matrix(10, 4)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    sizes = (P > 0).sum(axis=1)
    assert sorted(set(sizes)) == [2, 3] and sizes.sum() == 10  # floor(L/C), floor(L/C)+1
    assert np.all((P > 0).sum(axis=0) == 1)  # disjoint segments covering every token
    np.testing.assert_array_equal(pooling_matrix(8, 8), np.eye(8))


@pytest.mark.parametrize("grid,c", [((5, 7), 4), ((6, 6), 9), ((4, 4), 16)])
def test_adaptive_2d_pooling_matches_torch(grid, c):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((grid[0] * grid[1], 3))
    P = pooling_matrix(grid[0] * grid[1], c, "adaptive-2d", grid)
    side = math.isqrt(c)
    img = torch.tensor(x.T.reshape(1, 3, *grid))
    ref = torch.nn.functional.adaptive_avg_pool2d(img, side).reshape(3, c).T.numpy()
    np.testing.assert_allclose(P @ x, ref, rtol=1e-12)


def test_all_tokens_as_landmarks_is_reported_not_asserted():
    q, k, v = small_inputs(6)
    from structattn import softmax_attention

    exact = softmax_attention(q, k, v)
    err = np.linalg.norm(lara(q, k, v, num_landmarks=L, seed=0) - exact) / np.linalg.norm(exact)
    assert np.isfinite(err)  # kernels.md §2.4(a): near RA level expected; value in the docs


def test_backend_parity(backend, dtype):
    q, k, v = small_inputs(7)
    for kwargs in ({"mis": "opt"}, {"mis": "bh", "antithetic": True}, {"mis": "biased"}):
        ref = lara(q, k, v, num_landmarks=C, seed=3, **kwargs)
        args = convert(backend, dtype, q, k, v)
        out = lara(*args, num_landmarks=C, seed=3, backend=backend, **kwargs)
        assert type(out) is type(args[0]) and str(out.dtype).endswith(dtype)
        assert_close(to_np(out), ref, rtol={"float64": 1e-12, "float32": 1e-5}[dtype])


def test_gradcheck_float64():
    q, k, v = (torch.tensor(x[:1], requires_grad=True) for x in small_inputs(8, L=6))
    for kwargs in ({"mis": "opt"}, {"mis": "bh", "antithetic": True}, {"mis": "biased"}):
        def fn(q, k, v, kwargs=kwargs):
            return lara(q, k, v, num_landmarks=3, seed=1, **kwargs)

        assert torch.autograd.gradcheck(fn, (q, k, v))


def test_cross_attention_lengths_pool_each_side():
    rng = np.random.default_rng(9)
    q, k, v = rng.standard_normal((2, 7, D)), rng.standard_normal((2, 10, D)), \
        rng.standard_normal((2, 10, DV))
    p = lara_parts(q, k, v, num_landmarks=3, seed=0)
    assert p.weights.shape == (2, 7, 3) and p.key_weights.shape == (2, 3, 10)
    expected_mu = (pooling_matrix(7, 3) @ q + pooling_matrix(10, 3) @ k) / D ** 0.25
    np.testing.assert_allclose(p.means, expected_mu, rtol=1e-13)
    assert_close(p.matrix() @ v, p.output, dtype="float64")


def test_adaptive_2d_landmarks_match_naive_reference():
    q, k, v = small_inputs(10)  # L = 12 tokens on a 3 x 4 grid, 2 x 2 landmarks
    eps = np.random.default_rng(1).standard_normal((2, C, D))
    out = lara(q, k, v, num_landmarks=C, landmarks="adaptive-2d", grid_shape=(3, 4),
               noise=eps, mis="bh")
    P = pooling_matrix(L, C, "adaptive-2d", (3, 4))
    for b in range(2):
        ref = naive_lara(q[b], k[b], v[b], eps[b], mis="bh", P=P)
        assert_close(out[b], ref, dtype="float64")

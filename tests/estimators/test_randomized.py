"""Randomized attention: unbiasedness, MC rate, the exact identity by quadrature, modes,
causality, backend parity and gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest

from structattn import softmax_attention
from structattn.estimators import RandomizedAttention, randomized_attention
from structattn.testing import assert_close

from ..conftest import convert, to_np, torch

L, D, DV = 8, 4, 3


def small_inputs(seed: int = 0, L: int = L, d: int = D, dv: int = DV, scale: float = 0.7):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((1, L, d)) * scale, rng.standard_normal((1, L, d)) * scale,
            rng.standard_normal((1, L, dv)))


def replicated(R: int, seed: int = 0):
    """R copies of one problem in the batch dimension: R independent RA draws at once."""
    q, k, v = small_inputs(seed)
    return tuple(np.broadcast_to(x, (R, *x.shape[1:])).copy() for x in (q, k, v))


@pytest.mark.parametrize("causal", [False, True])
def test_unbiased_within_5_se(causal):
    R = 20000
    q, k, v = replicated(R)
    est = randomized_attention(q, k, v, num_samples=1, seed=11, causal=causal)
    exact = softmax_attention(q[:1], k[:1], v[:1], causal=causal)[0]
    mean, se = est.mean(axis=0), est.std(axis=0, ddof=1) / math.sqrt(R)
    # causal row 0 sees one key: no randomness (SE = 0), exact to rounding
    ok = np.abs(mean - exact) <= 5 * se + 1e-12
    z = np.abs(mean - exact) / np.maximum(se, 1e-300)
    assert np.all(ok), f"max z = {z[~ok].max():.2f} over {z.size} entries (SE <= {se.max():.4f})"


def test_rmse_slope_is_minus_one_half():
    sizes, seeds = (16, 64, 256, 1024), 50
    q, k, v = replicated(seeds)
    exact = softmax_attention(q, k, v)
    rmse = []
    for S in sizes:
        est = randomized_attention(q, k, v, num_samples=S, seed=S)  # 50 independent runs
        rmse.append(math.sqrt(np.mean((est - exact) ** 2)))
    slope = np.polyfit(np.log(sizes), np.log(rmse), 1)[0]
    assert -0.6 <= slope <= -0.4, f"slope {slope:.3f}, RMSE {np.round(rmse, 5)}"


@pytest.mark.parametrize("causal", [False, True])
def test_infinite_samples_equal_exact_attention_by_gauss_hermite(causal):
    """d = 1: E_{w ~ p_n}[f(w)] by quadrature over w for every mixture component equals
    exact attention, evaluating f with the implementation (explicit components/noise)."""
    Lq, G = 5, 200
    q, k, v = small_inputs(3, L=Lq, d=1, dv=2, scale=1.0)
    nodes, gw = np.polynomial.hermite.hermgauss(G)  # ∫ e^{-x²} g(x) dx
    noise = np.broadcast_to((math.sqrt(2) * nodes)[:, None, None, None], (G, 1, Lq, 1))
    scores = (q @ k.transpose(0, 2, 1))[0]  # d = 1: scale 1
    if causal:
        scores = np.where(np.tril(np.ones((Lq, Lq), bool)), scores, -np.inf)
    pi = np.exp(scores - scores.max(axis=1, keepdims=True))
    pi /= pi.sum(axis=1, keepdims=True)
    total = np.zeros((Lq, 2))
    for m in range(Lq):
        comp = np.full((G, 1, Lq), m)
        if causal:
            comp = np.minimum(comp, np.arange(Lq))  # rows < m never pick m (pi = 0 there)
        per_node = randomized_attention(q, k, v, num_samples=G, noise=noise, components=comp,
                                        causal=causal, return_samples=True)[:, 0]
        integral = np.tensordot(gw / math.sqrt(math.pi), per_node, axes=(0, 0))
        total += pi[:, m:m + 1] * integral
    exact = softmax_attention(q, k, v, causal=causal)[0]
    np.testing.assert_allclose(total, exact, rtol=0, atol=1e-10)


def test_deterministic_modes_match_hand_formulas():
    q, k, v = small_inputs(5)
    t = D ** -0.5
    qs, ks = q[0] * t ** 0.5, k[0] * t ** 0.5

    def f(w):
        logits = w @ ks.T - 0.5 * np.sum(ks ** 2, axis=1)
        g = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (g / g.sum(axis=1, keepdims=True)) @ v[0]

    s = qs @ ks.T
    pi = np.exp(s - s.max(axis=1, keepdims=True))
    pi /= pi.sum(axis=1, keepdims=True)
    mixture = randomized_attention(q, k, v, num_samples=1, mode="mixture-mean",
                                   deterministic=True)[0]
    np.testing.assert_allclose(mixture, f(qs + pi @ ks), rtol=1e-12)
    keymean = randomized_attention(q, k, v, num_samples=1, mode="key-mean",
                                   deterministic=True)[0]
    np.testing.assert_allclose(keymean, f(qs + ks.mean(axis=0)), rtol=1e-12)
    prefix = np.cumsum(ks, axis=0) / np.arange(1, L + 1)[:, None]
    causal_km = randomized_attention(q, k, v, num_samples=1, mode="key-mean",
                                     deterministic=True, causal=True)[0]
    keep = np.tril(np.ones((L, L), bool))
    w = qs + prefix
    logits = np.where(keep, w @ ks.T - 0.5 * np.sum(ks ** 2, axis=1), -np.inf)
    g = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(causal_km, (g / g.sum(axis=1, keepdims=True)) @ v[0],
                               rtol=1e-12)
    # noise_scale=0 is the deterministic mode; a noisy draw with the same seed differs
    a = randomized_attention(q, k, v, num_samples=2, seed=1, noise_scale=0.0)
    b = randomized_attention(q, k, v, num_samples=2, seed=1, deterministic=True)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, randomized_attention(q, k, v, num_samples=2, seed=1))


def test_explicit_draws_and_seed_reproduce_each_other():
    q, k, v = small_inputs(1)
    S = 3
    rng = np.random.default_rng(9)
    uniforms = rng.random((S, 1, L))
    noise = rng.standard_normal((S, 1, L, D))
    s = (q @ k.transpose(0, 2, 1)) / math.sqrt(D)
    pi = np.exp(s - s.max(axis=-1, keepdims=True))
    cdf = np.cumsum(pi / pi.sum(axis=-1, keepdims=True), axis=-1)
    comp = np.sum(cdf[None] < uniforms[..., None] * cdf[None, ..., -1:], axis=-1)
    a = randomized_attention(q, k, v, num_samples=S, seed=9)
    b = randomized_attention(q, k, v, num_samples=S, components=comp, noise=noise)
    np.testing.assert_allclose(a, b, rtol=1e-13)


def test_causal_rows_bit_identical_under_future_perturbation():
    q, k, v = small_inputs(2, L=12)
    i = 5
    k2, v2 = k.copy(), v.copy()
    k2[:, i + 1:] += 3.0
    v2[:, i + 1:] -= 2.0
    for mode in ("one-sample", "mixture-mean", "key-mean"):
        a = randomized_attention(q, k, v, num_samples=4, seed=0, mode=mode, causal=True)
        b = randomized_attention(q, k2, v2, num_samples=4, seed=0, mode=mode, causal=True)
        np.testing.assert_array_equal(a[:, :i + 1], b[:, :i + 1])
        assert not np.array_equal(a[:, i + 1:], b[:, i + 1:])


def test_matrix_applies_the_same_draws():
    q, k, v = small_inputs(4)
    for causal in (False, True):
        op = RandomizedAttention(num_samples=5, seed=2, causal=causal)
        P = op.matrix(q, k)
        np.testing.assert_allclose(P.sum(axis=-1), 1.0, rtol=1e-13)
        assert_close(P @ v, op(q, k, v), dtype="float64")
        if causal:
            assert np.all(np.triu(P[0], 1) == 0)


def test_row_blocks_give_the_same_result(monkeypatch):
    from structattn.estimators import _randomized

    q, k, v = small_inputs(6, L=10)
    full = randomized_attention(q, k, v, num_samples=3, seed=0, causal=True)
    monkeypatch.setattr(_randomized, "_BLOCK_ENTRIES", 3 * 10)  # blocks of 3 rows
    blocked = randomized_attention(q, k, v, num_samples=3, seed=0, causal=True)
    np.testing.assert_allclose(blocked, full, rtol=1e-14)


@pytest.mark.parametrize("mode", ["one-sample", "mixture-mean", "key-mean"])
def test_backend_parity(backend, dtype, mode):
    q, k, v = small_inputs(7)
    ref = randomized_attention(q, k, v, num_samples=3, seed=4, mode=mode, causal=True)
    args = convert(backend, dtype, q, k, v)
    out = randomized_attention(*args, num_samples=3, seed=4, mode=mode, causal=True,
                               backend=backend)
    assert type(out) is type(args[0]) and str(out.dtype).endswith(dtype)
    tol = {"float64": 1e-12, "float32": 1e-5}[dtype]
    assert_close(to_np(out), ref, rtol=tol)


def test_gradcheck_float64():
    q, k, v = (torch.tensor(x, requires_grad=True) for x in small_inputs(8, L=5))
    comp = np.random.default_rng(0).integers(0, 5, size=(2, 1, 5))
    comp = np.minimum(comp, np.arange(5))
    noise = np.random.default_rng(1).standard_normal((2, 1, 5, D))

    def fn(q, k, v):
        return randomized_attention(q, k, v, num_samples=2, components=comp, noise=noise,
                                    causal=True)

    assert torch.autograd.gradcheck(fn, (q, k, v))

    def mixture(q, k, v):
        return randomized_attention(q, k, v, num_samples=2, seed=3, mode="mixture-mean")

    assert torch.autograd.gradcheck(mixture, (q, k, v))


def test_cross_attention_lengths():
    rng = np.random.default_rng(12)
    q = rng.standard_normal((4000, 3, D)) * 0.7
    k = np.broadcast_to(rng.standard_normal((1, 9, D)) * 0.7, (4000, 9, D)).copy()
    v = np.broadcast_to(rng.standard_normal((1, 9, 2)), (4000, 9, 2)).copy()
    q[:] = q[:1]
    est = randomized_attention(q, k, v, num_samples=1, seed=0)
    exact = softmax_attention(q[:1], k[:1], v[:1])[0]
    se = est.std(axis=0, ddof=1) / math.sqrt(len(est))
    assert np.all(np.abs(est.mean(axis=0) - exact) <= 5 * se + 1e-12)

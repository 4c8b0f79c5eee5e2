"""Feature maps: unbiasedness, orthogonal draws, stabilizers, error rates, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from structattn import (
    EluFeatures,
    PositiveRandomFeatures,
    ReluFeatures,
    TrigonometricRandomFeatures,
    kernel_attention,
    orthogonal_gaussian,
    softmax_attention,
)
from structattn.features import gaussian_projection
from structattn.testing import assert_close

from .conftest import convert, to_np

D = 4
PAIRS = np.random.default_rng(0).standard_normal((2, 6, D)) * 0.6  # |x_s| <= ~1


def kernel_draws(make, R: int):
    """R independent estimates of exp(q·k/sqrt(d)) for the 6 (q, k) pairs."""
    q, k = PAIRS
    est = np.empty((R, len(q)))
    for r in range(R):
        phi = make(r)
        est[r] = np.sum(phi(q) * phi(k), axis=-1)
    return est


@pytest.mark.parametrize(
    "make",
    [
        lambda s: PositiveRandomFeatures(D, 8, seed=s, orthogonal=False),
        lambda s: PositiveRandomFeatures(D, 8, seed=s, orthogonal=True),
        lambda s: PositiveRandomFeatures(D, 8, seed=s, hyperbolic=True),
        lambda s: TrigonometricRandomFeatures(D, 8, seed=s),
    ],
    ids=["prf-iid", "prf-orthogonal", "prf-hyperbolic", "trig"],
)
def test_kernel_estimates_unbiased_within_5_se(make):
    R = 3000
    est = kernel_draws(make, R)
    q, k = PAIRS
    exact = np.exp(np.sum(q * k, axis=-1) / math.sqrt(D))
    mean, se = est.mean(axis=0), est.std(axis=0, ddof=1) / math.sqrt(R)
    z = np.abs(mean - exact) / se
    assert np.all(z <= 5), f"z-scores {z.round(2)} (SE {se.round(4)})"


def test_orthogonal_rows_are_orthogonal_within_blocks_with_chi_norms():
    W = orthogonal_gaussian(10, 4, seed=1)
    block = W[:4] / np.linalg.norm(W[:4], axis=1, keepdims=True)
    np.testing.assert_allclose(block @ block.T, np.eye(4), atol=1e-12)
    fixed = orthogonal_gaussian(8, 4, seed=1, scaling="sqrt_d")
    np.testing.assert_allclose(np.linalg.norm(fixed, axis=1), 2.0, rtol=1e-12)
    # chi_d norms: E|w|^2 = d
    sq = np.concatenate([np.sum(orthogonal_gaussian(4, 4, seed=s) ** 2, axis=1)
                         for s in range(2000)])
    assert abs(sq.mean() - 4) <= 5 * sq.std(ddof=1) / math.sqrt(sq.size)


def test_orthogonal_draws_isotropic_only_with_sign_fix():
    R, d = 4000, 3
    with_fix = np.array([orthogonal_gaussian(d, d, seed=s)[0] for s in range(R)])
    without = np.array([orthogonal_gaussian(d, d, seed=s, sign_fix=False)[0] for s in range(R)])
    se = with_fix.std(axis=0, ddof=1) / math.sqrt(R)
    assert np.all(np.abs(with_fix.mean(axis=0)) <= 5 * se), with_fix.mean(axis=0)
    # documented bias without the fix: the first coordinate has a fixed sign
    se0 = without[:, 0].std(ddof=1) / math.sqrt(R)
    assert abs(without[:, 0].mean()) > 20 * se0


@pytest.mark.parametrize(
    ("cls", "scale", "R"),
    [(PositiveRandomFeatures, 0.2, 2000), (TrigonometricRandomFeatures, 0.5, 300)],
    ids=["prf", "trig"],
)
def test_orthogonal_features_lower_mse_than_iid(cls, scale, R):
    """ORF < iid in kernel-matrix MSE at m = d over R seeds, t-statistic > 3.

    For positive features the gain is small next to the heavy-tailed MSE at larger
    norms (measured t ~ 1 at scale 1), so the check uses small-norm inputs.
    """
    d, L = 16, 12
    x = np.random.default_rng(2).standard_normal((L, d)) * scale
    exact = np.exp(x @ x.T / math.sqrt(d))
    diffs = []
    for s in range(R):
        errs = []
        for ortho in (True, False):
            f = cls(d, d, seed=s, orthogonal=ortho)(x)
            errs.append(np.mean((f @ f.T - exact) ** 2))
        diffs.append(errs[1] - errs[0])
    diffs = np.array(diffs)
    t = diffs.mean() / (diffs.std(ddof=1) / math.sqrt(R))
    assert t > 3, f"t = {t:.2f}"


def test_prf_attention_error_shrinks_like_inverse_sqrt_m():
    d, L, seeds = 8, 32, 24
    rng = np.random.default_rng(3)
    q, k = rng.standard_normal((2, L, d)) * 0.5
    v = rng.standard_normal((L, 4))
    exact = softmax_attention(q, k, v)
    ms = np.array([16, 64, 256, 1024])
    rmse = []
    for m in ms:
        errs = [np.mean((kernel_attention(q, k, v, PositiveRandomFeatures(d, int(m), seed=s),
                                          backend="numpy") - exact) ** 2)
                for s in range(seeds)]
        rmse.append(math.sqrt(np.mean(errs)))
    slope = np.polyfit(np.log(ms), np.log(rmse), 1)[0]
    assert -0.6 <= slope <= -0.4, f"slope {slope:.3f}, rmse {np.round(rmse, 5)}"


@pytest.mark.parametrize("hyperbolic", [False, True])
def test_stabilized_features_give_the_raw_feature_attention(backend, dtype, hyperbolic):
    """Stabilizers cancel: attention from queries()/keys() == from raw features."""
    rng = np.random.default_rng(4)
    q, k, v = rng.standard_normal((3, 2, 20, 6)) * 1.5
    phi = PositiveRandomFeatures(6, 32, seed=0, hyperbolic=hyperbolic)
    for causal in (False, True):
        fq, fk = phi(q), phi(k)
        A = fq @ np.swapaxes(fk, -1, -2)
        if causal:
            A = np.tril(A)
        expected = (A @ v) / A.sum(-1, keepdims=True)
        out = kernel_attention(*convert(backend, dtype, q, k, v), phi, causal=causal,
                               backend=backend)
        assert_close(out, expected, dtype=dtype, what=f"causal={causal}")


def test_features_identical_on_numpy_and_torch(dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 9, 5))
    for phi in (PositiveRandomFeatures(5, 7, seed=1, hyperbolic=True),
                TrigonometricRandomFeatures(5, 7, seed=1), EluFeatures(), ReluFeatures(0.1)):
        (xn,), (xt,) = convert("numpy", dtype, x), convert("torch", dtype, x)
        for f in ("queries", "keys", "__call__"):
            a, b = getattr(phi, f)(xn), to_np(getattr(phi, f)(xt))
            assert_close(b, a, rtol=1e-12 if dtype == "float64" else 1e-5, what=f)


def test_keys_never_overflow_for_large_inputs():
    phi = PositiveRandomFeatures(16, 64, seed=0)
    x = np.random.default_rng(6).standard_normal((50, 16)).astype(np.float32) * 30
    for causal in (False, True):
        assert np.all(np.isfinite(phi.keys(x, causal=causal)))
    assert np.all(np.isfinite(phi.queries(x)))
    # a zero first key and later keys aligned with projection rows: their log-features
    # reach |w_r|^2/2 ~ 256 at d = 512, so the first-key shift alone would overflow
    # float32; the causal shift then falls back to the data-independent cap
    big = PositiveRandomFeatures(512, 8, seed=0)
    z = np.zeros((9, 512), dtype=np.float32)
    z[1:] = big.projection / math.sqrt(big.temperature)
    assert np.max(big._log_features(z[1:].astype(np.float64))) > 200
    feats = big.keys(z, causal=True)
    assert np.all(np.isfinite(feats)) and np.count_nonzero(feats) > 0
    assert np.max(feats) <= math.exp(60.0) / math.sqrt(8) * (1 + 1e-4)  # float32 exp
    z = np.random.default_rng(7).standard_normal((50, 16)).astype(np.float32)
    # without overflow the first key alone sets the shift: its largest feature is m^-1/2
    np.testing.assert_allclose(np.max(phi.keys(z, causal=True)[0]), 1 / math.sqrt(64),
                               rtol=1e-6)


def test_deterministic_maps():
    x = np.array([[-2.0, 0.0, 3.0]])
    np.testing.assert_allclose(EluFeatures()(x), [[math.exp(-2.0), 1.0, 4.0]])
    np.testing.assert_allclose(ReluFeatures(eps=0.5)(x), [[0.5, 0.5, 3.5]])
    assert EluFeatures().feature_dim(3) == 3


def test_seed_reproducibility_and_explicit_redraw():
    a = PositiveRandomFeatures(4, 6, seed=3)
    b = PositiveRandomFeatures(4, 6, seed=3)
    np.testing.assert_array_equal(a.projection, b.projection)
    c = a.redraw(4)
    assert not np.allclose(c.projection, a.projection)
    np.testing.assert_array_equal(c.projection, PositiveRandomFeatures(4, 6, seed=4).projection)
    gen = np.random.default_rng(0)
    g1, g2 = PositiveRandomFeatures(4, 6, seed=gen), PositiveRandomFeatures(4, 6, seed=gen)
    assert not np.allclose(g1.projection, g2.projection)  # the generator advances


def test_projection_can_be_shared():
    W = gaussian_projection(6, 4, seed=0)
    phi = PositiveRandomFeatures(4, 6, projection=W)
    np.testing.assert_array_equal(phi.projection, W)


@pytest.mark.parametrize("m", [0, -3, 2.5, True])
def test_num_features_must_be_positive_int(m):
    with pytest.raises(ValueError, match="num_features must be an integer >= 1"):
        PositiveRandomFeatures(4, m, seed=0)


def test_feature_map_input_errors():
    with pytest.raises(TypeError, match="explicit seed="):
        PositiveRandomFeatures(4, 8)
    with pytest.raises(TypeError, match="seed must be a non-negative int"):
        PositiveRandomFeatures(4, 8, seed=-1)
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        PositiveRandomFeatures(4, 8, seed=0, scale=-1.0)
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        PositiveRandomFeatures(4, 8, seed=0, eps=-1e-3)
    with pytest.raises(ValueError, match=r"projection must have shape \(num_features, dim\)"):
        PositiveRandomFeatures(4, 8, projection=np.ones((8, 3)))
    phi = PositiveRandomFeatures(4, 8, seed=0)
    with pytest.raises(ValueError, match=r"q.shape\[-1\] must equal the feature map's dim=4"):
        phi.queries(np.ones((3, 5)))
    with pytest.raises(TypeError, match="floating dtype"):
        phi(np.ones((3, 4), dtype=np.int32))
    with pytest.raises(ValueError, match="scaling must be"):
        orthogonal_gaussian(4, 4, seed=0, scaling="unit")


def test_causal_trig_keys_overflow_is_reported():
    phi = TrigonometricRandomFeatures(4, 4, seed=0)
    big = np.full((3, 4), 30.0, dtype=np.float32)  # |k_s|^2/2 = 900 > log(float32 max)
    big[0] = 0.0  # the first key sets the causal shift
    with pytest.raises(ValueError, match="causal trigonometric features overflow"):
        phi.keys(big, causal=True)

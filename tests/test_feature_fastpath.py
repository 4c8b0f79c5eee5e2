"""The fused numba path of PositiveRandomFeatures.attention_features (numpy inputs).

Checked against the array-API path (the same stabilizers, written as whole-array
expressions) and against a dense float64 reference of the attention it feeds.
"""

from __future__ import annotations

import numpy as np
import pytest

import structattn.features as features_module
from structattn import PositiveRandomFeatures, kernel_attention


def _generic(phi, q, k, causal, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(features_module, "_fused_applies", lambda q, k: False)
        return phi.attention_features(q, k, causal=causal)


def _inputs(dtype, shape=(2, 3, 70, 8), scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal(shape).astype(dtype) * scale for _ in range(3))
    return q, k, v


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("hyperbolic", [False, True])
@pytest.mark.parametrize("eps", [0.0, 1e-3])
def test_fused_matches_generic_path(dtype, tol, causal, hyperbolic, eps, monkeypatch):
    q, k, _ = _inputs(dtype, scale=1.5)
    phi = PositiveRandomFeatures(8, 12, seed=1, hyperbolic=hyperbolic, eps=eps)
    fq, fk = phi.attention_features(q, k, causal=causal)
    gq, gk = _generic(phi, q, k, causal, monkeypatch)
    assert fq.dtype == fk.dtype == dtype
    assert fq.shape == gq.shape and fk.shape == gk.shape
    np.testing.assert_allclose(fq, gq, rtol=tol, atol=0)
    np.testing.assert_allclose(fk, gk, rtol=tol, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_causal_cap_path_matches(dtype, monkeypatch):
    # a later key far larger than the first one: the data-independent cap takes over
    q, k, _ = _inputs(dtype, shape=(2, 40, 8))
    k[0, 7] *= 60.0
    phi = PositiveRandomFeatures(8, 16, seed=2)
    fq, fk = phi.attention_features(q, k, causal=True)
    gq, gk = _generic(phi, q, k, True, monkeypatch)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(fq, gq, rtol=tol)
    np.testing.assert_allclose(fk, gk, rtol=tol)
    assert np.all(np.isfinite(fk)) and np.all(np.isfinite(fq))


@pytest.mark.parametrize("causal", [False, True])
def test_kernel_attention_against_dense_reference(causal):
    q, k, v = _inputs(np.float64, shape=(2, 50, 8))
    phi = PositiveRandomFeatures(8, 32, seed=3)
    out = kernel_attention(q, k, v, phi, causal=causal, backend="numba")
    raw_q, raw_k = phi(q), phi(k)  # unstabilized features: the dense reference
    W = raw_q @ np.swapaxes(raw_k, -1, -2)
    if causal:
        W = W * np.tril(np.ones((50, 50)))
    ref = (W @ v) / W.sum(-1, keepdims=True)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)
    out32 = kernel_attention(*(x.astype(np.float32) for x in (q, k, v)), phi,
                             causal=causal, backend="numba")
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, ref, rtol=1e-4, atol=1e-5)


def test_prefix_consistency_bit_for_bit():
    q, k, v = _inputs(np.float32, shape=(2, 600, 8))
    phi = PositiveRandomFeatures(8, 16, seed=4)
    fq, fk = phi.attention_features(q, k, causal=True)
    for n in (1, 2, 255, 256, 257, 300, 599):  # across the kernels' 256-row blocks
        pq, pk = phi.attention_features(q[:, :n], k[:, :n], causal=True)
        np.testing.assert_array_equal(pq, fq[:, :n])
        np.testing.assert_array_equal(pk, fk[:, :n])
    # end to end, every prefix length (the scan's chunk length never depends on L)
    full = kernel_attention(q, k, v, phi, causal=True, backend="numba")
    for n in (1, 2, 17, 255, 256, 257, 599):
        part = kernel_attention(q[:, :n], k[:, :n], v[:, :n], phi, causal=True,
                                backend="numba")
        np.testing.assert_array_equal(part, full[:, :n])


def test_unbatched_and_non_contiguous_inputs(monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 30, 2))
    q, k = x[..., 0].T, x[..., 1].T  # (30, 8), non-contiguous
    phi = PositiveRandomFeatures(8, 10, seed=6)
    for causal in (False, True):
        fq, fk = phi.attention_features(q, k, causal=causal)
        gq, gk = _generic(phi, q, k, causal, monkeypatch)
        np.testing.assert_allclose(fq, gq, rtol=1e-10)
        np.testing.assert_allclose(fk, gk, rtol=1e-10)


def test_different_query_and_key_lengths(monkeypatch):
    rng = np.random.default_rng(7)
    q = rng.standard_normal((3, 5, 8))
    k = rng.standard_normal((3, 300, 8))
    phi = PositiveRandomFeatures(8, 10, seed=8, hyperbolic=True)
    fq, fk = phi.attention_features(q, k)
    gq, gk = _generic(phi, q, k, False, monkeypatch)
    np.testing.assert_allclose(fq, gq, rtol=1e-10)
    np.testing.assert_allclose(fk, gk, rtol=1e-10)


def test_nan_input_propagates_like_generic_path(monkeypatch):
    q, k, _ = _inputs(np.float64, shape=(2, 20, 8))
    k[1, 3, 2] = np.nan
    q[0, 4, 1] = np.nan
    phi = PositiveRandomFeatures(8, 10, seed=9)
    for causal in (False, True):
        fq, fk = phi.attention_features(q, k, causal=causal)
        gq, gk = _generic(phi, q, k, causal, monkeypatch)
        np.testing.assert_array_equal(np.isnan(fq), np.isnan(gq))
        np.testing.assert_array_equal(np.isnan(fk), np.isnan(gk))

"""The no-autograd torch path of PositiveRandomFeatures.attention_features (issue 21).

Without gradients the torch features run in place (one tensor per side); checked against
the autograd-safe whole-tensor path (same stabilizers), the numpy path, a dense float64
reference of the attention they feed, prefix consistency and the no-sync guard.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import structattn as sa
import structattn.backends.torch.features as tfeatures
from structattn import PositiveRandomFeatures, kernel_attention

from ._guard import no_host_sync


def _inputs(dtype, shape=(2, 3, 70, 8), scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return [torch.from_numpy(rng.standard_normal(shape).astype(dtype) * scale)
            for _ in range(3)]


def _generic(phi, q, k, causal, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(tfeatures, "applies", lambda q, k, W=None: False)
        return phi.attention_features(q, k, causal=causal)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("hyperbolic", [False, True])
@pytest.mark.parametrize("eps", [0.0, 1e-3])
def test_fast_path_matches_generic_path(dtype, tol, causal, hyperbolic, eps, monkeypatch):
    q, k, _ = _inputs(dtype, scale=1.5)
    phi = PositiveRandomFeatures(8, 12, seed=1, hyperbolic=hyperbolic, eps=eps)
    with torch.no_grad():
        fq, fk = phi.attention_features(q, k, causal=causal)
        gq, gk = _generic(phi, q, k, causal, monkeypatch)
    assert fq.dtype == fk.dtype == q.dtype
    # keys carry the same shift; queries differ by a per-row factor (the skipped
    # -|q|²/2, removed by the row maximum in both): compare rows normalized by their max
    np.testing.assert_allclose(fk.numpy(), gk.numpy(), rtol=tol, atol=0)
    np.testing.assert_allclose(fq.numpy(), gq.numpy(), rtol=tol, atol=0)
    nq, nk = phi.attention_features(q.numpy(), k.numpy(), causal=causal)  # numba path
    np.testing.assert_allclose(fq.numpy(), nq, rtol=tol)
    np.testing.assert_allclose(fk.numpy(), nk, rtol=tol)


def test_fast_path_only_without_autograd():
    q, k, _ = _inputs(np.float64)
    phi = PositiveRandomFeatures(8, 12, seed=1)
    assert tfeatures.applies(q, k)
    assert not tfeatures.applies(q.clone().requires_grad_(), k)
    with torch.no_grad():
        assert tfeatures.applies(q.clone().requires_grad_(), k)
    assert not tfeatures.applies(q.half(), k.half())
    assert not tfeatures.applies(q[:1], k)  # batch shapes differ: generic path
    assert not tfeatures.applies(q, k, torch.ones(2, requires_grad=True))  # trainable W
    qg = q.clone().requires_grad_()
    fq, _ = phi.attention_features(qg, k, causal=True)
    assert fq.requires_grad  # the generic path kept the graph


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_causal_cap_path_matches(dtype, monkeypatch):
    # a later key far larger than the first one: the data-independent cap takes over
    q, k, _ = _inputs(dtype, shape=(2, 40, 8))
    k[0, 7] *= 60.0
    phi = PositiveRandomFeatures(8, 16, seed=2)
    with torch.no_grad():
        fq, fk = phi.attention_features(q, k, causal=True)
        gq, gk = _generic(phi, q, k, True, monkeypatch)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(fq.numpy(), gq.numpy(), rtol=tol)
    np.testing.assert_allclose(fk.numpy(), gk.numpy(), rtol=tol)
    assert torch.isfinite(fk).all() and torch.isfinite(fq).all()


def test_nan_input_propagates_like_generic_path(monkeypatch):
    q, k, _ = _inputs(np.float64, shape=(2, 20, 8))
    k[1, 3, 2] = float("nan")
    q[0, 4, 1] = float("nan")
    phi = PositiveRandomFeatures(8, 10, seed=9)
    for causal in (False, True):
        with torch.no_grad():
            fq, fk = phi.attention_features(q, k, causal=causal)
            gq, gk = _generic(phi, q, k, causal, monkeypatch)
        np.testing.assert_array_equal(torch.isnan(fq).numpy(), torch.isnan(gq).numpy())
        np.testing.assert_array_equal(torch.isnan(fk).numpy(), torch.isnan(gk).numpy())


@pytest.mark.parametrize("causal", [False, True])
def test_kernel_attention_against_dense_reference(causal):
    q, k, v = _inputs(np.float64, shape=(2, 50, 8))
    phi = PositiveRandomFeatures(8, 32, seed=3)
    with torch.no_grad():
        out = kernel_attention(q, k, v, phi, causal=causal).numpy()
        out32 = kernel_attention(q.float(), k.float(), v.float(), phi, causal=causal)
    raw_q, raw_k = phi(q.numpy()), phi(k.numpy())  # unstabilized: the dense reference
    W = raw_q @ np.swapaxes(raw_k, -1, -2)
    if causal:
        W = W * np.tril(np.ones((50, 50)))
    ref = (W @ v.numpy()) / W.sum(-1, keepdims=True)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.numpy(), ref, rtol=1e-4, atol=1e-5)


def test_prefix_consistency_bit_for_bit():
    q, k, v = _inputs(np.float32, shape=(2, 300, 8))
    phi = PositiveRandomFeatures(8, 16, seed=4)
    with torch.no_grad():
        fq, fk = phi.attention_features(q, k, causal=True)
        full = kernel_attention(q, k, v, phi, causal=True)
        for n in (1, 2, 31, 32, 33, 299):
            pq, pk = phi.attention_features(q[:, :n], k[:, :n], causal=True)
            np.testing.assert_array_equal(pq.numpy(), fq[:, :n].numpy())
            np.testing.assert_array_equal(pk.numpy(), fk[:, :n].numpy())
            part = kernel_attention(q[:, :n], k[:, :n], v[:, :n], phi, causal=True)
            np.testing.assert_array_equal(part.numpy(), full[:, :n].numpy())


@pytest.mark.parametrize("causal", [False, True])
def test_no_grad_forward_does_not_sync(causal):
    q, k, v = _inputs(np.float32, shape=(2, 2, 64, 8))
    phi = PositiveRandomFeatures(8, 16, seed=0)
    with torch.no_grad():
        ref = kernel_attention(q, k, v, phi, causal=causal)  # warm-up: device caches
        with no_host_sync():
            out = kernel_attention(q, k, v, phi, causal=causal)
    assert torch.equal(out, ref)
    with torch.no_grad(), no_host_sync():
        sa.kernel_attention(q, k, v, phi, mask=sa.masks.DecayedCausal(64, 0.9))

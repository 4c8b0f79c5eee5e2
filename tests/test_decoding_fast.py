"""The fast step of LinearAttentionCache: validation once per cache, in-place state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import structattn as sa
from structattn.decoding import LinearAttentionCache
from structattn.masks import DecayedCausal, SumOfExponentials


def _count_general(monkeypatch, cache):
    calls = []
    orig = cache._prepare

    def spy(*args, **kw):
        calls.append(args[-1])
        return orig(*args, **kw)

    monkeypatch.setattr(cache, "_prepare", spy)
    return calls


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("mask", [None, DecayedCausal(60, 0.9, exclusive=True),
                                  SumOfExponentials(60, [0.7, 0.3], [0.99, 0.8])])
def test_fast_steps_validate_once_and_equal_full_rows(kind, mask, monkeypatch):
    L, prompt = 60, 5
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, L, 4)).astype(np.float32) for _ in range(3))
    if kind == "torch":
        q, k, v = (torch.from_numpy(x) for x in (q, k, v))
    phi = sa.PositiveRandomFeatures(4, 16, seed=0, hyperbolic=mask is not None)
    full = sa.kernel_attention(q, k, v, phi, mask=mask, causal=True)
    cache = LinearAttentionCache(phi, mask)
    calls = _count_general(monkeypatch, cache)
    ys = [cache.prefill(q[..., :prompt, :], k[..., :prompt, :], v[..., :prompt, :])]
    ys += [cache.step(q[..., t:t + 1, :], k[..., t:t + 1, :], v[..., t:t + 1, :])
           for t in range(prompt, L)]
    assert calls == ["prefill"]  # every step took the fast path
    y = torch.cat(ys, -2) if kind == "torch" else np.concatenate(ys, axis=-2)
    np.testing.assert_allclose(np.asarray(y), np.asarray(full), rtol=2e-4, atol=2e-5)
    assert cache.position == L


def test_fast_path_falls_back_for_bad_inputs_and_grad(monkeypatch):
    phi = sa.PositiveRandomFeatures(4, 8, seed=0)
    rng = np.random.default_rng(1)
    q, k, v = rng.standard_normal((3, 1, 6, 4))
    cache = LinearAttentionCache(phi)
    cache.prefill(q[:, :3], k[:, :3], v[:, :3])
    bad = v[:, 3:4].copy()
    bad[0, 0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        cache.step(q[:, 3:4], k[:, 3:4], bad)
    with pytest.raises(ValueError, match="do not match the cache"):
        cache.step(q[:, 3:4].astype(np.float32), k[:, 3:4].astype(np.float32),
                   v[:, 3:4].astype(np.float32))
    # torch: autograd-recorded steps run the general (out-of-place) path and backprop
    qt, kt, vt = (torch.from_numpy(x).requires_grad_() for x in (q, k, v))
    cache = LinearAttentionCache(phi)
    calls = _count_general(monkeypatch, cache)
    out = [cache.prefill(qt[:, :3], kt[:, :3], vt[:, :3])]
    out += [cache.step(qt[:, t:t + 1], kt[:, t:t + 1], vt[:, t:t + 1]) for t in range(3, 6)]
    assert calls == ["prefill", "step", "step", "step"]
    torch.cat(out, -2).sum().backward()
    full = sa.kernel_attention(qt, kt, vt, phi, causal=True)
    np.testing.assert_allclose(torch.cat(out, -2).detach().numpy(), full.detach().numpy(),
                               rtol=0, atol=1e-12)
    assert qt.grad is not None and torch.isfinite(qt.grad).all()

"""Recurrent decoding: every step equals the matching row of causal kernel attention."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import structattn as sa
from structattn.decoding import LinearAttentionCache
from structattn.masks import Causal, DecayedCausal, ExponentialDecay, SumOfExponentials, Toeplitz
from structattn.testing import assert_close


@pytest.fixture(autouse=True)
def _one_torch_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny per-step tensors (see tests/torch/conftest.py)
    yield
    torch.set_num_threads(prev)


MASKS = {
    "none": lambda L: None,
    "causal-exclusive": lambda L: Causal(L, exclusive=True),
    "decayed": lambda L: DecayedCausal(L, 0.97),
    "decayed-exclusive": lambda L: DecayedCausal(L, 0.9, exclusive=True),
    "exponential": lambda L: ExponentialDecay(L, 0.95),
    "sum-of-exponentials": lambda L: SumOfExponentials(L, [0.7, 0.3], [0.99, 0.8]),
}


def _decode(cache, q, k, v, prompt):
    xp_cat = torch.cat if isinstance(q, torch.Tensor) else np.concatenate
    ys = [cache.prefill(q[..., :prompt, :], k[..., :prompt, :], v[..., :prompt, :])] \
        if prompt else []
    for t in range(prompt, q.shape[-2]):
        ys.append(cache.step(q[..., t:t + 1, :], k[..., t:t + 1, :], v[..., t:t + 1, :]))
    return xp_cat(ys, -2) if isinstance(q, torch.Tensor) else xp_cat(ys, axis=-2)


def test_thousand_steps_torch():
    """1,000 generated tokens after a 24-token prompt, decayed mask, float64."""
    L, prompt = 1024, 24
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(3, 2, L, 8, generator=g, dtype=torch.float64).unbind(0)
    phi = sa.PositiveRandomFeatures(8, 32, seed=0)
    mask = DecayedCausal(L, 0.99)
    full = sa.kernel_attention(q, k, v, phi, mask=mask, causal=True)
    cache = LinearAttentionCache(phi, mask)
    y = _decode(cache, q, k, v, prompt)
    assert cache.position == L
    assert_close(y, full, rtol=1e-12, what="decoding vs causal kernel attention")
    rows = (y - full).abs().amax(dim=(0, 2))
    assert float(rows.max()) < 1e-12  # every row, not only in norm
    # the state does not grow with the position
    # state m x (d_v + 1), first key's log-features and current shift (m each), float64
    assert cache.state_nbytes == (32 * (8 + 1) + 2 * 32) * 2 * 8


@pytest.mark.parametrize("mask_name", list(MASKS))
@pytest.mark.parametrize("fmap", ["prf", "prf-hyperbolic", "elu", "trig"])
def test_step_equals_full_row_numpy(mask_name, fmap):
    L = 40
    rng = np.random.default_rng(1)
    q, k, v = rng.standard_normal((3, 2, L, 4))
    phi = {
        "prf": sa.PositiveRandomFeatures(4, 16, seed=0),
        "prf-hyperbolic": sa.PositiveRandomFeatures(4, 8, seed=1, hyperbolic=True),
        "elu": sa.EluFeatures(),
        "trig": sa.TrigonometricRandomFeatures(4, 16, seed=2),
    }[fmap]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sa.NormalizerWarning)
        full = sa.kernel_attention(q, k, v, phi, mask=MASKS[mask_name](L), causal=True)
        for prompt in (0, 9):
            y = _decode(LinearAttentionCache(phi, MASKS[mask_name](5)), q, k, v, prompt)
            tol = 1e-9 if fmap == "trig" else 1e-12  # signed features: cancellation
            assert_close(y, full, rtol=tol, what=f"{fmap} {mask_name} prompt={prompt}")


def test_stabilizer_cap_is_rescaled():
    """A late key far above the first one: the cache switches to the cap like the full
    computation (rescaling its state), and outputs still agree."""
    L = 30
    rng = np.random.default_rng(3)
    q, k, v = rng.standard_normal((3, 1, L, 4))
    k[:, 0] *= 0.01
    k[:, 20] *= 80.0  # log-features far above the first key's: the cap engages
    phi = sa.PositiveRandomFeatures(4, 16, seed=0)
    full = sa.kernel_attention(q, k, v, phi, causal=True)
    assert np.all(np.isfinite(full))
    y = _decode(LinearAttentionCache(phi), q, k, v, 5)
    assert_close(y, full, rtol=1e-10, what="capped stabilizer")


def test_bad_inputs():
    phi = sa.PositiveRandomFeatures(4, 8, seed=0)
    with pytest.raises(TypeError, match="feature_map must be a structattn FeatureMap"):
        LinearAttentionCache("phi")
    with pytest.raises(TypeError, match="mask must be None, Causal, DecayedCausal"):
        LinearAttentionCache(phi, Toeplitz(np.ones(9)))
    with pytest.raises(ValueError, match="terms towards later keys"):
        LinearAttentionCache(phi, ExponentialDecay(5, 0.9, 0.5))
    cache = LinearAttentionCache(phi)
    x = np.zeros((1, 3, 4))
    with pytest.raises(ValueError, match="step takes one token"):
        cache.step(x, x, x)
    cache.prefill(x, x, x)
    with pytest.raises(ValueError, match="do not match the cache"):
        cache.step(np.zeros((2, 1, 4)), np.zeros((2, 1, 4)), np.zeros((2, 1, 4)))
    cache.reset()
    assert cache.position == 0 and cache.state_nbytes == 0

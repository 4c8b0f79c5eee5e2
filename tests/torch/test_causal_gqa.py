"""Causal attention with L_q != L_k (bottom-right) and grouped-query attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import structattn as sa
from structattn.masks import BottomRightCausal
from structattn.testing import assert_close

PHI = sa.PositiveRandomFeatures(8, 16, seed=0)


def _dense_softmax(q, k, v, keep):
    s = (q @ np.swapaxes(k, -1, -2)) / np.sqrt(q.shape[-1])
    s = np.where(keep, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    w = np.where(keep, np.exp(s - m), 0.0)
    den = w.sum(-1, keepdims=True)
    return np.where(den > 0, (w @ v) / np.where(den > 0, den, 1.0), 0.0)


def _dense_kernel(q, k, v, keep):
    phi_q, phi_k = PHI.queries(q), PHI.keys(k)
    w = (phi_q @ np.swapaxes(phi_k, -1, -2)) * keep
    den = w.sum(-1, keepdims=True)
    return np.where(den > 0, (w @ v) / np.where(den > 0, den, 1.0), 0.0)


@pytest.mark.parametrize(("L_q", "L_k"), [(3, 11), (11, 11), (11, 4), (1, 9)])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_bottom_right_equals_dense_reference(L_q, L_k, kind):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, L_q, 8))
    k, v = rng.standard_normal((2, 2, L_k, 8))
    i, j = np.arange(L_q)[:, None], np.arange(L_k)[None, :]
    keep = j <= i + (L_k - L_q)  # the queries are the last L_q positions
    ref_s, ref_k = _dense_softmax(q, k, v, keep), _dense_kernel(q, k, v, keep)
    if kind == "torch":
        q, k, v = (torch.as_tensor(a) for a in (q, k, v))
    assert_close(sa.softmax_attention(q, k, v, causal=True), ref_s, what="softmax")
    assert_close(sa.kernel_attention(q, k, v, PHI, causal=True), ref_k, what="kernel")
    np.testing.assert_array_equal(BottomRightCausal(L_q, L_k).to_dense(), keep)


def test_bottom_right_last_rows_of_square_causal():
    """Queries = the last L_q tokens: rows equal the last rows of the square computation."""
    rng = np.random.default_rng(1)
    q, k, v = rng.standard_normal((3, 2, 16, 8))
    full = sa.kernel_attention(q, k, v, PHI, causal=True)
    tail = sa.kernel_attention(q[:, -5:], k, v, PHI, causal=True)
    assert_close(tail, full[:, -5:], rtol=1e-12, what="bottom-right tail")
    full_s = sa.softmax_attention(q, k, v, causal=True)
    assert_close(sa.softmax_attention(q[:, -5:], k, v, causal=True), full_s[:, -5:],
                 rtol=1e-12, what="softmax tail")


def test_bottom_right_matches_sdpa_convention():
    """torch SDPA's is_causal is top-left; its bottom-right variant is the explicit mask."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 2, 4, 8, generator=g, dtype=torch.float64)
    k, v = torch.randn(2, 2, 2, 10, 8, generator=g, dtype=torch.float64).unbind(0)
    keep = torch.ones(4, 10, dtype=torch.bool).tril(diagonal=10 - 4)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    assert_close(sa.softmax_attention(q, k, v, causal=True), ref, rtol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("fn", ["softmax", "kernel"])
def test_gqa_equals_repeated_heads(fn, causal):
    g = torch.Generator().manual_seed(2)
    q = torch.randn(2, 6, 12, 8, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 2, 12, 8, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 2, 12, 5, generator=g, dtype=torch.float64, requires_grad=True)

    def call(a, b, c, **kw):
        if fn == "softmax":
            return sa.softmax_attention(a, b, c, causal=causal, **kw)
        return sa.kernel_attention(a, b, c, PHI, causal=causal, **kw)

    out = call(q, k, v, enable_gqa=True)
    rep = call(q, k.repeat_interleave(3, dim=-3), v.repeat_interleave(3, dim=-3))
    assert out.shape == (2, 6, 12, 5)
    assert_close(out, rep, rtol=1e-13, what="GQA vs repeated heads")
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    grads_rep = torch.autograd.grad(rep.square().sum(), (q, k, v))
    for a, b in zip(grads, grads_rep, strict=True):
        assert_close(a, b, rtol=1e-12, what="GQA gradient")
    if fn == "softmax":
        ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
        assert_close(out, ref, rtol=1e-12, what="GQA vs SDPA")


def test_gqa_bad_heads():
    q = torch.randn(1, 6, 4, 8)
    k = v = torch.randn(1, 4, 4, 8)
    with pytest.raises(ValueError, match=r"number of query heads \(6\) to be a multiple"):
        sa.softmax_attention(q, k, v, enable_gqa=True)
    with pytest.raises(ValueError, match="same leading"):
        sa.softmax_attention(q, k, v)
    with pytest.raises(TypeError, match="enable_gqa must be a bool"):
        sa.kernel_attention(q, k, v, PHI, enable_gqa=1)

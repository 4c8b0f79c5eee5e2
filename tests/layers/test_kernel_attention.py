"""KernelAttention == structattn.kernel_attention on the same projections."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import structattn as sa
from structattn.layers import KernelAttention
from structattn.masks import Toeplitz
from structattn.testing import assert_close

D_MODEL, HEADS, HD = 12, 3, 4


def x_of(shape, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, D_MODEL, generator=g, dtype=torch.float64).to(dtype)


def feature_maps():
    return {
        "prf": sa.PositiveRandomFeatures(HD, 16, seed=0),
        "prf-hyp": sa.PositiveRandomFeatures(HD, 8, seed=1, hyperbolic=True),
        "elu": sa.EluFeatures(),
    }


def masks(L):
    return {
        None: None,
        "decayed": sa.DecayedCausal(L, gamma=0.8),
        "toeplitz": Toeplitz.from_log(np.linspace(-1.0, 0.5, 2 * L - 1)),
    }


def manual(layer: KernelAttention, x, context=None):
    """Projections by hand, then the library function, then the output projection."""
    h = layer.heads
    c = x if context is None else context

    def split(t):
        return t.reshape(*t.shape[:-1], HEADS, HD).movedim(-2, -3)

    q = split(x @ h.to_q.weight.T + h.to_q.bias)
    k = split(c @ h.to_k.weight.T + h.to_k.bias)
    v = split(c @ h.to_v.weight.T + h.to_v.bias)
    y = sa.kernel_attention(q, k, v, layer.feature_map, mask=layer.mask, causal=layer.causal)
    y = y.movedim(-3, -2).reshape(*y.shape[:-3], y.shape[-2], HEADS * HD)
    return y @ h.to_out.weight.T + h.to_out.bias, (q, k, v)


@pytest.mark.parametrize("fmap", ["prf", "prf-hyp", "elu"])
@pytest.mark.parametrize("mask", [None, "decayed", "toeplitz"])
@pytest.mark.parametrize("causal", [False, True])
def test_equals_library_function(fmap, mask, causal):
    L = 9
    torch.manual_seed(0)
    layer = KernelAttention(D_MODEL, HEADS, feature_maps()[fmap], mask=masks(L)[mask],
                            causal=causal).double()
    x = x_of((2, L))
    with torch.no_grad():
        got = layer(x)
        ref, (q, k, _) = manual(layer, x)
        assert_close(got, ref, rtol=1e-13, what="layer vs kernel_attention")
        P = layer.attention_matrix(x)
        assert P.shape == (2, HEADS, L, L)
        assert_close(P, sa.attention_matrix(q, k, feature_map=layer.feature_map,
                                            mask=layer.mask, causal=causal), rtol=1e-13)
        assert_close(got, layer.forward_with_operator(x, P), dtype="float64")


def test_cross_attention_and_float32():
    torch.manual_seed(0)
    layer = KernelAttention(D_MODEL, HEADS, sa.PositiveRandomFeatures(HD, 16, seed=0))
    x, c = x_of((2, 5), dtype=torch.float32), x_of((2, 8), seed=2, dtype=torch.float32)
    with torch.no_grad():
        got = layer(x, c)
        assert got.shape == (2, 5, D_MODEL) and got.dtype == torch.float32
        ref, _ = manual(layer.double(), x.double(), c.double())
    assert_close(got, ref, dtype="float32")


def test_causal_bit_identical():
    torch.manual_seed(0)
    layer = KernelAttention(D_MODEL, HEADS, sa.PositiveRandomFeatures(HD, 16, seed=0),
                            causal=True).double()
    x = x_of((2, 12))
    with torch.no_grad():
        y = layer(x)
        for i in (0, 4, 10):
            x2 = x.clone()
            x2[:, i + 1:] = 3 * x_of((2, 11 - i), seed=7 + i)
            assert torch.equal(layer(x2)[:, :i + 1], y[:, :i + 1])


@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_float64(causal):
    torch.manual_seed(0)
    layer = KernelAttention(D_MODEL, HEADS, sa.PositiveRandomFeatures(HD, 8, seed=0),
                            causal=causal).double()
    x = x_of((5,)).requires_grad_()
    w = layer.heads.to_q.weight.detach().clone().requires_grad_()

    def f(x, w):
        return torch.func.functional_call(layer, {"heads.to_q.weight": w}, (x,))

    assert torch.autograd.gradcheck(f, (x, w), fast_mode=True)

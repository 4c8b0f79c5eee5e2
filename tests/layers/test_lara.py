"""LARAAttention == structattn.estimators.lara on the projected inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from structattn.estimators import lara
from structattn.layers import LARAAttention
from structattn.testing import assert_close

D_MODEL, HEADS, HD = 12, 3, 4


def x_of(shape, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, D_MODEL, generator=g, dtype=torch.float64).to(dtype)


def projections(layer, x, context=None):
    h = layer.heads
    c = x if context is None else context

    def split(t):
        return t.reshape(*t.shape[:-1], HEADS, HD).movedim(-2, -3)

    return (split(x @ h.to_q.weight.T + h.to_q.bias), split(c @ h.to_k.weight.T + h.to_k.bias),
            split(c @ h.to_v.weight.T + h.to_v.bias))


def merge(layer, y):
    y = y.movedim(-3, -2).reshape(*y.shape[:-3], y.shape[-2], HEADS * HD)
    return y @ layer.heads.to_out.weight.T + layer.heads.to_out.bias


@pytest.mark.parametrize("mis", ["opt", "bh", "biased"])
@pytest.mark.parametrize("antithetic", [False, True])
def test_equals_lara_on_projections(mis, antithetic):
    torch.manual_seed(0)
    layer = LARAAttention(D_MODEL, HEADS, num_landmarks=3, mis=mis, alpha_coeff=0.5,
                          antithetic=antithetic, seed=0).double().train()
    x = x_of((2, 10))
    with torch.no_grad():
        got = layer(x, seed=5)
        q, k, v = projections(layer, x)
        ref = merge(layer, lara(q, k, v, num_landmarks=3, mis=mis, alpha_coeff=0.5,
                                antithetic=antithetic, seed=5))
        assert_close(got, ref, rtol=1e-13, what="layer vs lara")
        P = layer.attention_matrix(x, seed=5)
        assert P.shape == (2, HEADS, 10, 10)
        assert_close(P.sum(-1), torch.ones(2, HEADS, 10, dtype=P.dtype), rtol=1e-13)
        assert_close(layer.forward_with_operator(x, P), got, dtype="float64")


def test_eval_mode_is_deterministic_and_train_mode_draws():
    torch.manual_seed(0)
    layer = LARAAttention(D_MODEL, HEADS, num_landmarks=4, seed=0).double()
    x = x_of((12,))
    with torch.no_grad():
        a, b = layer(x), layer(x)  # train mode: the layer's generator advances
        assert not torch.allclose(a, b)
        layer.eval()
        c, d = layer(x), layer(x)
        assert torch.equal(c, d)
        q, k, v = projections(layer, x)
        assert_close(c, merge(layer, lara(q, k, v, num_landmarks=4, deterministic=True)),
                     rtol=1e-13)
    # the same seed reproduces a training pass
    fresh = LARAAttention(D_MODEL, HEADS, num_landmarks=4, seed=0).double()
    fresh.load_state_dict(layer.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x), a)


def test_cross_attention_float32_and_landmarks_2d():
    torch.manual_seed(0)
    layer = LARAAttention(D_MODEL, HEADS, num_landmarks=4, landmarks="adaptive-2d",
                          grid_shape=(4, 4), deterministic=True)
    x = x_of((2, 16), dtype=torch.float32)
    with torch.no_grad():
        got = layer(x)
        assert got.dtype == torch.float32
        ref_layer = layer.double()
        q, k, v = projections(ref_layer, x.double())
        ref = merge(ref_layer, lara(q, k, v, num_landmarks=4, landmarks="adaptive-2d",
                                    grid_shape=(4, 4), deterministic=True))
    assert_close(got, ref, dtype="float32")
    layer = LARAAttention(D_MODEL, HEADS, num_landmarks=2, deterministic=True).double()
    x, c = x_of((2, 5)), x_of((2, 8), seed=3)
    with torch.no_grad():
        q, k, v = projections(layer, x, c)
        assert_close(layer(x, c), merge(layer, lara(q, k, v, num_landmarks=2,
                                                    deterministic=True)), rtol=1e-13)


def test_gradcheck_float64():
    torch.manual_seed(0)
    layer = LARAAttention(D_MODEL, HEADS, num_landmarks=3, mis="bh", seed=0).double()
    x = x_of((7,)).requires_grad_()
    w = layer.heads.to_k.weight.detach().clone().requires_grad_()

    def f(x, w):
        out = torch.func.functional_call(layer, {"heads.to_k.weight": w}, (x,),
                                         {"seed": 11})
        return out

    assert torch.autograd.gradcheck(f, (x, w), fast_mode=True)


def test_bad_input():
    with pytest.raises(ValueError, match="num_landmarks must be an integer >= 1, got 0"):
        LARAAttention(8, 2, num_landmarks=0)
    with pytest.raises(ValueError, match="alpha_coeff must be a real number >= 0, got -1"):
        LARAAttention(8, 2, num_landmarks=2, alpha_coeff=-1)
    with pytest.raises(ValueError, match="mis"):
        LARAAttention(8, 2, num_landmarks=2, mis="balance")
    layer = LARAAttention(8, 2, num_landmarks=6)
    with pytest.raises(ValueError, match=r"num_landmarks \(6\) must be <= the sequence "
                                         r"length \(got inputs of length 5\)"):
        layer(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match="d_model = 8"):
        layer(torch.randn(2, 7, 6))
    assert np.isfinite(layer.eval()(torch.randn(2, 7, 8)).detach().numpy()).all()

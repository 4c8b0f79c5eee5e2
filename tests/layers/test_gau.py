"""Quadratic gated attention unit: definition, causal masking after relu², gradients."""

from __future__ import annotations

import pytest
import torch

from structattn.layers import GAU
from structattn.testing import assert_close

D_MODEL, QK = 6, 4


def make_gau(causal: bool, *, bias: int | None = 3, seed: int = 0, **kw) -> GAU:
    torch.manual_seed(seed)
    layer = GAU(D_MODEL, qk_dim=QK, causal=causal, rel_pos_bias=bias, residual=False,
                **kw).double()
    with torch.no_grad():
        layer.gamma.normal_()
        layer.beta.normal_(std=0.5)
        if layer.rel_bias is not None:
            layer.rel_bias.normal_()
    return layer


def x_of(shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, D_MODEL, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("scale", ["length", 0.4])
def test_operator_matches_paper_equations(causal, scale):
    layer = make_gau(causal, scale=scale)
    T = 9
    x = x_of((T,))
    with torch.no_grad():
        xn = torch.nn.functional.layer_norm(x, (D_MODEL,), layer.norm.weight, layer.norm.bias)
        uv = torch.nn.functional.silu(xn @ layer.to_uv.weight.T + layer.to_uv.bias)
        u, v = uv[:, :layer.hidden_dim], uv[:, layer.hidden_dim:]
        z = torch.nn.functional.silu(xn @ layer.to_z.weight.T + layer.to_z.bias)
        q = z * layer.gamma[0] + layer.beta[0]
        k = z * layer.gamma[1] + layer.beta[1]
        c = 1 / T if scale == "length" else scale
        i = torch.arange(T)
        b = layer.rel_bias[(i[:, None] - i[None, :]).clamp(-3, 3) + 3]
        A = torch.relu(q @ k.T * c + b) ** 2
        if causal:
            A = torch.tril(A)
        out = (u * (A @ v)) @ layer.to_out.weight.T + layer.to_out.bias
        assert_close(layer.dense_operator(x), A, rtol=1e-13)
        assert_close(layer(x), out, rtol=1e-13)
        assert_close(layer.forward_with_operator(x, A), out, rtol=1e-13)


def test_causal_mask_applied_after_activation():
    """With a positive bias a masked logit of 0 would still give relu²(b) > 0."""
    layer = make_gau(True)
    with torch.no_grad():
        layer.rel_bias.fill_(5.0)
    A = layer.dense_operator(x_of((7,))).detach()
    assert torch.all(torch.triu(A, diagonal=1) == 0)
    lower = torch.ones(7, 7, dtype=torch.bool).tril()
    assert torch.all(A[lower] > 0)


def test_leading_dimensions():
    layer = make_gau(False)
    x = x_of((2, 3, 5))
    with torch.no_grad():
        y = layer(x)
        for a in range(2):
            for b in range(3):
                assert_close(y[a, b], layer(x[a, b]), rtol=1e-14)


def test_float32_matches_float64():
    layer = make_gau(True)
    x = x_of((2, 8))
    with torch.no_grad():
        ref = layer(x)
        got = layer.float()(x.float())
    assert got.dtype == torch.float32
    assert_close(got, ref, dtype="float32")


@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_float64(causal):
    layer = make_gau(causal, bias=2)
    x = x_of((6,)).requires_grad_()
    names = ["gamma", "beta", "rel_bias", "to_z.weight"]
    params = tuple(layer.get_parameter(n).detach().clone().requires_grad_() for n in names)

    def f(x, *p):
        return torch.func.functional_call(layer, dict(zip(names, p, strict=True)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params), fast_mode=True)

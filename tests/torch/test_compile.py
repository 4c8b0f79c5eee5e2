"""torch.compile(fullgraph=True) of the attention functions and layers equals eager.

Backends ``"eager"`` (Dynamo capture only) and ``"aot_eager"`` (plus AOTAutograd, which
traces the backward) need no C compiler.  ``fullgraph=True`` makes any graph break an
error, so these tests are also the list of what compiles without breaks
(docs/torch.rst lists what does not).
"""

from __future__ import annotations

import pytest
import torch

import structattn as sa
from structattn.layers import FLASH, GAU, KernelAttention
from structattn.masks import DecayedCausal
from structattn.testing import assert_close

dynamo = pytest.importorskip("torch._dynamo")

PHI = sa.PositiveRandomFeatures(8, 16, seed=0)


def _qkv(L=40, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 2, 2, L, 8, generator=g, dtype=torch.float64)
    return [t.clone().requires_grad_(requires_grad) for t in x.unbind(0)]


FUNCTIONS = {
    "kernel": lambda q, k, v: sa.kernel_attention(q, k, v, PHI),
    "kernel-causal": lambda q, k, v: sa.kernel_attention(q, k, v, PHI, causal=True),
    "kernel-decayed": lambda q, k, v: sa.kernel_attention(
        q, k, v, PHI, mask=DecayedCausal(40, 0.9), causal=True),
    "softmax": lambda q, k, v: sa.softmax_attention(q, k, v),
    "softmax-causal": lambda q, k, v: sa.softmax_attention(q, k, v, causal=True),
}


def _grads(fn, inputs):
    out = fn(*inputs)
    (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum().backward()
    return out.detach(), [t.grad.clone() for t in inputs]


# aot_eager also traces the backward (the causal scan's custom autograd Function);
# "eager" checks Dynamo capture alone (cheaper)
CASES = [("kernel", "aot_eager"), ("kernel-causal", "aot_eager"),
         ("softmax-causal", "aot_eager"), ("kernel-decayed", "eager"), ("softmax", "eager")]


@pytest.mark.parametrize(("name", "backend"), CASES)
def test_functions_fullgraph(name, backend):
    fn = FUNCTIONS[name]
    dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    ref_out, ref_grads = _grads(fn, _qkv())
    out, grads = _grads(compiled, _qkv())
    assert_close(out, ref_out, rtol=1e-12, what=f"{name} compiled output")
    for g, r in zip(grads, ref_grads, strict=True):
        assert_close(g, r, rtol=1e-12, what=f"{name} compiled gradient")


def _layers():
    torch.manual_seed(0)
    return {
        "kernel": KernelAttention(16, 2, sa.PositiveRandomFeatures(8, 16, seed=0)),
        "kernel-causal": KernelAttention(16, 2, sa.PositiveRandomFeatures(8, 16, seed=0),
                                         causal=True),
        "gau": GAU(16, qk_dim=8, causal=True, rel_pos_bias=3),
        "flash": FLASH(16, chunk_size=8, qk_dim=8, causal=True),
        "flash-nc": FLASH(16, chunk_size=8, qk_dim=8),
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kernel-causal", "gau", "flash"])
def test_layers_fullgraph(name):
    layer = _layers()[name].double()
    x = torch.randn(2, 21, 16, dtype=torch.float64)
    dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    ye, yc = layer(xe), compiled(xc)
    assert_close(yc, ye, rtol=1e-12, what=f"{name} compiled layer")
    ye.square().sum().backward()
    yc.square().sum().backward()
    assert_close(xc.grad, xe.grad, rtol=1e-12, what=f"{name} compiled input gradient")

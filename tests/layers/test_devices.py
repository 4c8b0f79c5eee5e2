"""Every layer runs on the input's device (CUDA when available) and matches the CPU."""

from __future__ import annotations

import copy

import pytest
import torch

import structattn as sa
from structattn.layers import FLASH, GAU, ContextPool, KernelAttention, LARAAttention
from structattn.testing import assert_close

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def layers():
    torch.manual_seed(0)
    return {
        "flash": FLASH(8, chunk_size=3, qk_dim=4, causal=True, rel_pos_bias=2),
        "flash-nc": FLASH(8, chunk_size=4, qk_dim=4),
        "gau": GAU(8, qk_dim=4, causal=True, rel_pos_bias=2),
        "pool": ContextPool(8, max_sigma=2.0, truncation=3.0, causal=True, kernel_size=2),
        "kernel": KernelAttention(8, 2, sa.PositiveRandomFeatures(4, 8, seed=0), causal=True),
        "lara": LARAAttention(8, 2, num_landmarks=3, seed=0).eval(),
    }


@pytest.mark.parametrize("name", ["flash", "flash-nc", "gau", "pool", "kernel", "lara"])
def test_cuda_matches_cpu(name):
    layer = layers()[name].double()
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    dev = torch.device("cuda")
    gpu = copy.deepcopy(layer).to(dev)
    xg = x.to(dev).requires_grad_()
    out = gpu(xg)
    assert out.device.type == "cuda"
    out.sum().backward()
    assert xg.grad.device.type == "cuda"
    with torch.no_grad():
        assert_close(out.detach().cpu(), layer(x), rtol=1e-12, what=name)
        op = gpu.dense_operator(xg.detach())
        assert op.device.type == "cuda"
        assert_close(op.cpu(), layer.dense_operator(x), rtol=1e-12, what=f"{name} operator")

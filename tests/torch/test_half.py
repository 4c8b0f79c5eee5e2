"""float16/bfloat16 on the torch path: float32 accumulation, a tolerance row per dtype."""

from __future__ import annotations

import pytest
import torch

import structattn as sa
from structattn.decoding import LinearAttentionCache
from structattn.layers import FLASH, GAU, KernelAttention
from structattn.masks import DecayedCausal
from structattn.testing import PARITY_TOLERANCES, TOLERANCES, assert_close

PHI = sa.PositiveRandomFeatures(16, 64, seed=0)

FUNCTIONS = {
    "kernel": lambda q, k, v: sa.kernel_attention(q, k, v, PHI),
    "kernel-causal": lambda q, k, v: sa.kernel_attention(q, k, v, PHI, causal=True),
    "kernel-decayed": lambda q, k, v: sa.kernel_attention(
        q, k, v, PHI, mask=DecayedCausal(128, 0.95), causal=True),
    "softmax": lambda q, k, v: sa.softmax_attention(q, k, v),
    "softmax-causal": lambda q, k, v: sa.softmax_attention(q, k, v, causal=True),
}

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _qkv(device="cpu"):
    g = torch.Generator().manual_seed(0)
    return [t.to(device) for t in torch.randn(3, 2, 2, 128, 16, generator=g,
                                               dtype=torch.float64).unbind(0)]


def test_tolerance_rows():
    for table in (TOLERANCES, PARITY_TOLERANCES):
        assert set(table) >= {"float64", "float32", "float16", "bfloat16"}
        assert table["float32"] < table["float16"] < table["bfloat16"]


CASES = [(name, "bfloat16") for name in FUNCTIONS] + [
    ("kernel-causal", "float16"), ("softmax-causal", "float16")]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("name", "dtype"), CASES)
def test_half_precision_functions(name, dtype, device):
    fn = FUNCTIONS[name]
    q, k, v = _qkv(device)
    ref = fn(q, k, v)  # float64 reference
    half = getattr(torch, dtype)
    qh, kh, vh = (t.to(half).requires_grad_() for t in (q, k, v))
    out = fn(qh, kh, vh)
    assert out.dtype == half and out.device == q.device
    assert_close(out, ref, what=f"{name} {dtype}")  # row TOLERANCES[dtype]
    # rounding the float64 output once is the floor: the half path is within 4x of it
    assert_close(out, ref.to(half), dtype=dtype, rtol=PARITY_TOLERANCES[dtype],
                 what=f"{name} {dtype} vs rounded reference")
    out.float().square().sum().backward()
    assert qh.grad.dtype == half and torch.isfinite(qh.grad.float()).all()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_decoding(dtype):
    q, k, v = _qkv()
    half = getattr(torch, dtype)
    full = sa.kernel_attention(q, k, v, PHI, causal=True)
    cache = LinearAttentionCache(PHI)
    qh, kh, vh = (t.to(half) for t in (q, k, v))
    y = torch.cat([cache.prefill(qh[..., :100, :], kh[..., :100, :], vh[..., :100, :])]
                  + [cache.step(qh[..., t:t + 1, :], kh[..., t:t + 1, :], vh[..., t:t + 1, :])
                     for t in range(100, 128)], dim=-2)
    assert y.dtype == half and cache._S.dtype == torch.float32  # float32 prefix state
    assert_close(y, full, what=f"decoding {dtype}")


@pytest.mark.parametrize("layer_name", ["kernel", "gau", "flash"])
def test_half_layers_bf16(layer_name):
    torch.manual_seed(0)
    layer = {
        "kernel": lambda: KernelAttention(32, 2, sa.PositiveRandomFeatures(16, 32, seed=0),
                                          causal=True),
        "gau": lambda: GAU(32, qk_dim=16, causal=True),
        "flash": lambda: FLASH(32, chunk_size=16, qk_dim=16, causal=True),
    }[layer_name]().double()
    x = torch.randn(2, 64, 32, dtype=torch.float64)
    ref = layer(x)
    layer_bf16 = layer.to(torch.bfloat16)
    xb = x.bfloat16().requires_grad_()
    out = layer_bf16(xb)
    assert out.dtype == torch.bfloat16
    # bf16 weights and activations through the projections too: a few bf16 ulps
    assert_close(out, ref, rtol=4 * TOLERANCES["bfloat16"], what=f"{layer_name} bf16")
    out.float().sum().backward()
    assert xb.grad.dtype == torch.bfloat16

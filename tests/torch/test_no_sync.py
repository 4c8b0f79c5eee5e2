"""The default torch forward + backward never synchronizes with the host (issue 14).

The guard makes ``bool(tensor)``, ``.item()``, ``.cpu()``, ``.numpy()``, ``.tolist()``,
``int()``/``float()`` of a tensor raise; each call is warmed up once outside the guard
(one-time work such as the per-device parameter caches is allowed to happen there).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import structattn as sa
from structattn.graphs import sparse_attention, window
from structattn.layers import (
    FLASH,
    GAU,
    ContextPool,
    KernelAttention,
    LARAAttention,
    SlotAttention,
    TinyViT,
)
from structattn.masks import DecayedCausal, Toeplitz
from structattn.mra import mra_attention

from ._guard import HostSyncError, no_host_sync

PHI = sa.PositiveRandomFeatures(8, 16, seed=0)


def _qkv(L=32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 2, L, 8, generator=g)
    return [t.clone().requires_grad_() for t in x.unbind(0)]


def _run(fn, *args):
    fn(*args)  # warm-up: per-device caches, lazy imports
    with no_host_sync():
        out = fn(*args)
        out.float().square().sum().backward()
    return out


FUNCTIONS = {
    "kernel": lambda q, k, v: sa.kernel_attention(q, k, v, PHI),
    "kernel-causal": lambda q, k, v: sa.kernel_attention(q, k, v, PHI, causal=True),
    "kernel-hyperbolic": lambda q, k, v: sa.kernel_attention(
        q, k, v, sa.PositiveRandomFeatures(8, 8, seed=1, hyperbolic=True), causal=True),
    "kernel-trig": lambda q, k, v: sa.kernel_attention(
        q, k, v, sa.TrigonometricRandomFeatures(8, 8, seed=1)),
    "kernel-decayed": lambda q, k, v: sa.kernel_attention(q, k, v, PHI,
                                                          mask=DecayedCausal(32, 0.9)),
    "kernel-toeplitz": lambda q, k, v: sa.kernel_attention(
        q, k, v, PHI, mask=Toeplitz.from_log(np.linspace(-2.0, 0.0, 63)), causal=True),
    "kernel-bottom-right": lambda q, k, v: sa.kernel_attention(q[..., -8:, :], k, v, PHI,
                                                               causal=True),
    "kernel-gqa": lambda q, k, v: sa.kernel_attention(q, k[:, :1], v[:, :1], PHI,
                                                      enable_gqa=True),
    "softmax": lambda q, k, v: sa.softmax_attention(q, k, v),
    "softmax-causal": lambda q, k, v: sa.softmax_attention(q, k, v, causal=True),
    "softmax-bf16": lambda q, k, v: sa.softmax_attention(
        q.bfloat16(), k.bfloat16(), v.bfloat16(), causal=True),
    "sparse": lambda q, k, v: sparse_attention(q, k, v, window(32, 3)),
    "sparse-causal": lambda q, k, v: sparse_attention(q, k, v, window(32, 3), causal=True),
}


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_functions_do_not_sync(name):
    _run(FUNCTIONS[name], *_qkv())


@pytest.mark.parametrize("kw", [
    {}, {"mode": "sparse"}, {"prior_first": 1, "prior_diag": 2},
    {"key_mask": torch.arange(60) < 53},  # L not a multiple of b, padded keys
])
def test_mra_does_not_sync(kw):
    """MRA selects its blocks on the device: no readback, forward and backward."""
    L = 60 if "key_mask" in kw else 64
    q, k, v = _qkv(L)
    out = _run(lambda a, b, c: mra_attention(a, b, c, block_size=8, blocks_per_row=2, **kw),
               q, k, v)
    assert q.grad is not None and torch.isfinite(q.grad).all()
    ref = mra_attention(*(t.detach().numpy() for t in (q, k, v)), block_size=8,
                        blocks_per_row=2, backend="numpy",
                        **{n: (x.numpy() if n == "key_mask" else x) for n, x in kw.items()})
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-5, atol=1e-6)


def test_mra_debug_checks_sync():
    """Inside structattn.debug() MRA checks its inputs (and syncs); NaN is refused."""
    q, k, v = _qkv(64)
    with pytest.raises(HostSyncError), sa.debug(), no_host_sync():
        mra_attention(q, k, v, block_size=8, blocks_per_row=2)
    bad = v.detach().clone()
    bad[0, 0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"), sa.debug():
        mra_attention(q, k, bad, block_size=8, blocks_per_row=2)


def _layers():
    torch.manual_seed(0)
    layers = {
        "kernel": KernelAttention(16, 2, sa.PositiveRandomFeatures(8, 16, seed=0)),
        "kernel-causal-toeplitz": KernelAttention(
            16, 2, sa.PositiveRandomFeatures(8, 16, seed=0), causal=True,
            mask=Toeplitz.from_log(np.linspace(-2.0, 0.0, 23))),
        "kernel-elu-decayed": KernelAttention(16, 2, sa.EluFeatures(),
                                              mask=DecayedCausal(12, 0.8)),
        "gau": GAU(16, qk_dim=8, causal=True, rel_pos_bias=3),
        "flash": FLASH(16, chunk_size=4, qk_dim=8, causal=True),
        "flash-nc": FLASH(16, chunk_size=4, qk_dim=8),
        "pool": ContextPool(16, max_sigma=2.0, truncation=3.0, causal=True, kernel_size=2),
        "lara-eval": LARAAttention(16, 2, num_landmarks=3, seed=0).eval(),
        "lara-train": LARAAttention(16, 2, num_landmarks=3, seed=0),
    }
    return layers


@pytest.mark.parametrize("name", list(_layers()))
def test_layers_do_not_sync(name):
    layer = _layers()[name]
    x = torch.randn(2, 12, 16, requires_grad=True)
    _run(layer, x)
    assert x.grad is not None and x.grad.shape == x.shape


def _vision_models():
    torch.manual_seed(0)
    return {
        "tiny-vit-softmax": (TinyViT(8, 2, 16, 2, 2, 10), (2, 1, 8, 8)),
        "tiny-vit-kernel": (TinyViT(8, 4, 16, 1, 2, 10,
                                    attention=sa.FeatureMapAttention(
                                        sa.PositiveRandomFeatures(8, 16, seed=0))),
                            (2, 1, 8, 8)),
        "tiny-vit-mean-pool": (TinyViT(8, 4, 16, 1, 2, 10, pool="mean"), (2, 1, 8, 8)),
        "slot-attention": (SlotAttention(16, 3, iterations=2), (2, 10, 16)),
    }


@pytest.mark.parametrize("name", list(_vision_models()))
def test_vision_and_object_models_do_not_sync(name):
    """TinyViT and SlotAttention (default check_finite=None): forward + backward."""
    model, shape = _vision_models()[name]
    x = torch.randn(*shape, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    if isinstance(model, SlotAttention):
        model(x, generator=gen)  # warm-up
        with no_host_sync():
            out = model(x, generator=torch.Generator().manual_seed(0))
            out.square().sum().backward()
    else:
        _run(model, x)
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # the guard is live: inside structattn.debug() the same call checks (and syncs)
    with pytest.raises(HostSyncError), sa.debug(), no_host_sync():
        if isinstance(model, SlotAttention):
            model(x, generator=torch.Generator().manual_seed(0))
        else:
            model(x)


def test_debug_turns_checks_on():
    """Inside structattn.debug() the data-dependent checks run (and do sync)."""
    q, k, v = _qkv()
    with pytest.raises(HostSyncError), sa.debug(), no_host_sync():
        sa.kernel_attention(q, k, v, PHI)
    bad = v.detach().clone()
    bad[0, 0, 3, 1] = float("nan")
    sa.kernel_attention(q, k, bad, PHI)  # torch default: not checked
    with pytest.raises(ValueError, match="v contains NaN or Inf"), sa.debug():
        sa.kernel_attention(q, k, bad, PHI)
    with pytest.raises(ValueError, match="v contains NaN or Inf"):
        sa.softmax_attention(q, k, bad, check_finite=True)
    # numpy inputs are checked by default, as before
    with pytest.raises(ValueError, match="v contains NaN or Inf"):
        sa.softmax_attention(*(t.detach().numpy() for t in (q, k, bad)))

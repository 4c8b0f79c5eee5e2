"""Layer state: projections and mask coefficients are buffers (issue 14, item 1)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import structattn as sa
from structattn.layers import KernelAttention
from structattn.masks import Causal, Toeplitz
from structattn.testing import assert_close


def _layer(seed=0, mask=None, fm_seed=0):
    torch.manual_seed(seed)
    return KernelAttention(16, 2, sa.PositiveRandomFeatures(8, 12, seed=fm_seed), mask=mask)


def _x(dtype=torch.float32):
    return torch.randn(2, 9, 16, generator=torch.Generator().manual_seed(1)).to(dtype)


def test_projection_and_mask_are_buffers():
    mask = Toeplitz.from_log(np.linspace(-1.0, 0.5, 17))
    layer = _layer(mask=mask)
    state = layer.state_dict()
    assert "projection" in state and state["projection"].shape == (12, 8)
    assert "mask_coeffs" in state
    np.testing.assert_array_equal(state["projection"].numpy(), layer.feature_map.projection)
    np.testing.assert_array_equal(state["mask_coeffs"].numpy(), mask.coeffs)
    assert {name for name, _ in layer.named_buffers()} == {"projection", "mask_coeffs"}
    # no array in a structural mask, no projection in a deterministic map
    plain = KernelAttention(16, 2, sa.EluFeatures(), mask=Causal(9))
    assert not list(plain.named_buffers())


def test_state_dict_round_trip_into_another_draw():
    mask = Toeplitz.from_log(np.linspace(-1.0, 0.5, 17))
    src = _layer(seed=0, mask=mask, fm_seed=0)
    dst = _layer(seed=5, mask=Toeplitz.from_log(np.zeros(17)), fm_seed=7)
    x = _x()
    assert not torch.allclose(src(x), dst(x))
    dst.load_state_dict(src.state_dict())
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))
    np.testing.assert_array_equal(dst.feature_map.projection, src.feature_map.projection)
    np.testing.assert_array_equal(dst.mask.coeffs, mask.coeffs)


def test_to_float64_and_back():
    layer = _layer(mask=Toeplitz.from_log(np.linspace(-1.0, 0.5, 17)))
    x = _x()
    with torch.no_grad():
        before = layer(x)
        layer.to(torch.float64)
        assert layer.projection.dtype == torch.float64
        assert layer.mask_coeffs.dtype == torch.float64
        assert layer.heads.to_q.weight.dtype == torch.float64
        y64 = layer(x.double())
        assert y64.dtype == torch.float64
        assert_close(y64, before, dtype="float32", what="float64 vs float32 layer")
        layer.to(torch.float32)
        assert layer.projection.dtype == torch.float32
        assert torch.equal(layer(x), before)


def test_projection_used_from_the_buffer():
    """The forward reads the buffer: editing it (as load_state_dict does) changes outputs."""
    layer = _layer()
    x = _x()
    with torch.no_grad():
        before = layer(x)
        layer.projection.mul_(0.5)
        after = layer(x)
    assert not torch.allclose(before, after)
    ref = copy.deepcopy(layer)
    ref.feature_map = layer.feature_map.redraw(0)  # same draw, then the halved buffer
    with torch.no_grad():
        ref.projection.mul_(0.5)
        assert torch.equal(ref(x), after)


def test_redraw_projections():
    layer = _layer()
    buf = layer.projection
    first = buf.clone()
    layer.redraw_projections()
    assert layer.projection is buf  # in place: same buffer (optimizers, compile, devices)
    assert not torch.equal(buf, first)
    np.testing.assert_array_equal(buf.numpy(), layer.feature_map.projection)
    second = buf.clone()
    again = _layer()
    again.redraw_projections()  # deterministic stream: the same first redraw
    assert torch.equal(again.projection, second)
    layer.redraw_projections(seed=3)
    expected = sa.PositiveRandomFeatures(8, 12, seed=3).projection
    np.testing.assert_allclose(layer.projection.numpy(), expected, rtol=0, atol=0)
    with pytest.raises(TypeError, match="needs a random feature map"):
        KernelAttention(16, 2, sa.EluFeatures()).redraw_projections()


def test_mask_parameters_cached_per_device_and_dtype():
    """A numpy mask is converted to a device/dtype once, then reused."""
    mask = Toeplitz.from_log(np.linspace(-1.0, 0.5, 17))
    q, k, v = torch.randn(3, 2, 9, 8).unbind(0)
    phi = sa.PositiveRandomFeatures(8, 12, seed=0)
    sa.kernel_attention(q, k, v, phi, mask=mask)
    resolved = mask._state_cache()[("resolved", False)]
    cached = dict(resolved._state_cache())
    assert any(key[0] == "param" for key in cached)
    sa.kernel_attention(q, k, v, phi, mask=mask)
    for key, value in resolved._state_cache().items():
        assert value is cached[key]  # the same tensor object: no new host -> device copy
    # the cache is not pickled with the mask
    clone = copy.deepcopy(mask)
    assert "_sa_state_cache" not in clone.__dict__


def test_callers_feature_map_is_not_changed():
    phi = sa.PositiveRandomFeatures(8, 12, seed=0)
    layer = KernelAttention(16, 2, phi)
    q = torch.randn(1, 2, 5, 8)
    before = phi.queries(q)
    layer(torch.randn(1, 5, 16))
    layer.redraw_projections(seed=4)
    other = _layer(fm_seed=9)
    layer.load_state_dict(other.state_dict())
    assert torch.equal(phi.queries(q), before)
    np.testing.assert_array_equal(phi.projection,
                                  sa.PositiveRandomFeatures(8, 12, seed=0).projection)

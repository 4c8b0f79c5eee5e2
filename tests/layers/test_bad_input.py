"""Constructor parameters and forward inputs of the layers: clear errors, before work."""

from __future__ import annotations

import pytest
import torch

import structattn as sa
from structattn.layers import (
    FLASH,
    GAU,
    ContextPool,
    KernelAttention,
    gaussian_pooling,
    gaussian_pooling_matrix,
)


@pytest.mark.parametrize("chunk_size", [0, -3, 1.5, True, "8", None])
def test_flash_chunk_size_below_one(chunk_size):
    with pytest.raises(ValueError, match=r"chunk_size must be an integer >= 1, got"):
        FLASH(8, chunk_size=chunk_size)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"qk_dim": 0}, "qk_dim must be an integer >= 1, got 0"),
        ({"expansion_factor": 0.0}, "expansion_factor must be a finite number > 0"),
        ({"expansion_factor": 0.01}, "expansion_factor \\* d_model must round to >= 1"),
        ({"quadratic_scale": "length"}, "quadratic_scale must be a finite number > 0 or one of"),
        ({"quadratic_scale": -1.0}, "quadratic_scale must be a finite number > 0 or one of"),
        ({"linear_scale": "rows"}, "linear_scale must be a finite number > 0 or one of"),
        ({"linear_scale": float("inf")}, "linear_scale must be a finite number > 0"),
        ({"rel_pos_bias": -1}, "rel_pos_bias must be an integer >= 0, got -1"),
        ({"causal": 1}, "causal must be a bool, got 1"),
    ],
)
def test_flash_parameters(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        FLASH(8, **kw)


def test_gau_parameters():
    with pytest.raises(ValueError, match="d_model must be an integer >= 1, got 0"):
        GAU(0)
    with pytest.raises(ValueError, match="scale must be a finite number > 0 or one of"):
        GAU(8, scale="chunk")
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        GAU(8, scale=0.0)


@pytest.mark.parametrize("layer_cls", [FLASH, GAU])
def test_gated_forward_shapes_and_dtypes(layer_cls):
    layer = layer_cls(8, qk_dim=4)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., T, d_model\) with "
                                         r"d_model = 8 and T >= 1, got shape \(2, 5, 7\)"):
        layer(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="got shape \\(8,\\)"):
        layer(torch.randn(8))
    with pytest.raises(ValueError, match="T >= 1, got shape \\(2, 0, 8\\)"):
        layer(torch.randn(2, 0, 8))
    with pytest.raises(TypeError, match=r"x must have a dtype in .*, got int64"):
        layer(torch.ones(2, 5, 8, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor, got ndarray"):
        layer(torch.randn(2, 5, 8).numpy())
    with pytest.raises(TypeError, match="must have the dtype and device of the module's"):
        layer(torch.randn(2, 5, 8, dtype=torch.float64))
    bad = torch.randn(2, 5, 8)
    bad[0, 1, 2] = float("nan")
    layer(bad)  # torch default: no NaN scan (it would be a host synchronization)
    with pytest.raises(ValueError, match="x contains NaN or Inf"), sa.debug():
        layer(bad)
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        layer_cls(8, qk_dim=4, check_finite=True)(bad)
    x = torch.randn(5, 8)
    with pytest.raises(ValueError, match=r"operator must be a \(\.\.\., 5, 5\) tensor, got "
                                         r"\(5, 4\)"):
        layer.forward_with_operator(x, torch.zeros(5, 4))


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"max_sigma": 0.0}, "max_sigma must be a finite number > 0, got 0.0"),
        ({"truncation": -1.0}, "truncation must be a finite number > 0, got -1.0"),
        ({"kernel_size": 0}, "kernel_size must be an integer >= 1, got 0"),
        ({"kernel_size": 2}, "kernel_size must be odd when causal=False"),
        ({"causal": "yes"}, "causal must be a bool"),
    ],
)
def test_context_pool_parameters(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ContextPool(4, **kw)


def test_context_pool_inputs():
    pool = ContextPool(4, truncation=None)
    with pytest.raises(ValueError, match="d_model = 4"):
        pool(torch.randn(3, 5))
    with pytest.raises(ValueError, match="banded=True needs truncation"):
        pool.pooling_matrix(torch.randn(3, 4), banded=True)
    x = torch.randn(2, 6, 3)
    with pytest.raises(ValueError, match=r"log_weights must have shape \(\.\.\., T\) = "
                                         r"\(2, 6\).*got \(2, 5\)"):
        gaussian_pooling(x, torch.zeros(2, 5), torch.ones(2, 6))
    with pytest.raises(ValueError, match=r"sigma must have shape"):
        gaussian_pooling(x, torch.zeros(2, 6), torch.ones(6))
    with pytest.raises(ValueError, match="half_width must be an int >= 0 or None, got -1"):
        gaussian_pooling(x, torch.zeros(2, 6), torch.ones(2, 6), half_width=-1)
    with pytest.raises(TypeError, match="sigma must have x's dtype"):
        gaussian_pooling(x, torch.zeros(2, 6), torch.ones(2, 6, dtype=torch.float64))
    assert gaussian_pooling_matrix(torch.zeros(6), torch.ones(6)).shape == (6, 6)


def test_kernel_attention_parameters_and_inputs():
    phi = sa.PositiveRandomFeatures(4, 8, seed=0)
    with pytest.raises(ValueError, match=r"num_heads \(3\) must divide d_model \(8\)"):
        KernelAttention(8, 3, phi)
    with pytest.raises(ValueError, match=r"feature_map.dim \(4\) must equal head_dim \(2\)"):
        KernelAttention(8, 4, phi)
    with pytest.raises(TypeError, match="feature_map must be a structattn FeatureMap"):
        KernelAttention(8, 2, lambda x: x)
    with pytest.raises(TypeError, match="mask must be a structattn Mask or None"):
        KernelAttention(8, 2, phi, mask=torch.ones(5, 5))
    with pytest.raises(ValueError, match="backend must be 'auto' or 'torch'"):
        KernelAttention(8, 2, phi, backend="numba")
    layer = KernelAttention(8, 2, phi, mask=sa.DecayedCausal(6, gamma=0.9))
    with pytest.raises(ValueError, match=r"mask has shape \(6, 6\) but the input gives "
                                         r"L_q x L_k = 5 x 5"):
        layer(torch.randn(2, 5, 8))
    layer = KernelAttention(8, 2, phi, causal=True)
    with pytest.raises(ValueError, match="causal=True needs L_q == L_k, got 5 and 7"):
        layer(torch.randn(2, 5, 8), torch.randn(2, 7, 8))
    with pytest.raises(ValueError, match=r"context must have the leading dimensions of x, "
                                         r"\(2,\); got shape \(3, 5, 8\)"):
        layer(torch.randn(2, 5, 8), torch.randn(3, 5, 8))
    with pytest.raises(ValueError, match=r"context must have shape .* d_model = 8"):
        layer(torch.randn(2, 5, 8), torch.randn(2, 5, 6))

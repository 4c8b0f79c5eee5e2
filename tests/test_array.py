"""Input validation helpers in structattn._array."""

from __future__ import annotations

import numpy as np
import pytest

from structattn._array import (
    as_generator,
    as_like,
    describe_array,
    validate_attention_inputs,
    validate_float_array,
)

torch = pytest.importorskip("torch")


def test_validate_float_array_messages():
    with pytest.raises(TypeError, match=r"x must be a numpy\.ndarray or torch\.Tensor, got list"):
        validate_float_array([1.0], "x")
    with pytest.raises(TypeError, match=r"x must have a floating dtype in .* got float16"):
        validate_float_array(np.ones(2, dtype=np.float16), "x")
    with pytest.raises(ValueError, match=r"x must have at least 2 dimensions, got shape \(2,\)"):
        validate_float_array(np.ones(2), "x", min_ndim=2)
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        validate_float_array(torch.tensor([1.0, float("inf")]), "x")
    validate_float_array(np.array([np.nan]), "x", check_finite=False)


def test_validate_attention_inputs_returns_sizes():
    q = np.ones((2, 3, 5, 4))
    k = np.ones((2, 3, 7, 4))
    v = np.ones((2, 3, 7, 6))
    assert validate_attention_inputs(q, k, v) == ((2, 3), 5, 7, 4, 6)


def test_as_like_moves_numpy_parameters_and_refuses_torch_to_numpy():
    like = torch.ones(2, dtype=torch.float32)
    out = as_like(np.arange(3.0)[::-1], like)  # negative strides are fine
    assert out.dtype == torch.float32 and out.tolist() == [2.0, 1.0, 0.0]
    with pytest.raises(TypeError, match="holds torch tensors but was applied to a numpy"):
        as_like(torch.ones(2), np.ones(2))
    assert as_like(np.ones(2), np.ones(1, dtype=np.float32)).dtype == np.float32


def test_as_generator():
    assert isinstance(as_generator(3), np.random.Generator)
    g = np.random.default_rng(0)
    assert as_generator(g) is g
    for bad in (None, -1, 1.5, True, "0"):
        with pytest.raises(TypeError, match="seed must be a non-negative int"):
            as_generator(bad)


def test_describe_array():
    assert "shape=(2,)" in describe_array(np.ones(2))
    assert "device=cpu" in describe_array(torch.ones(2))


# ------------------------------------------------ NaN/Inf scan of large inputs
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_large_inputs_with_nan_or_inf_are_refused(bad):
    rng = np.random.default_rng(1)
    q = rng.standard_normal((4, 1 << 16, 2)).astype(np.float32)  # 2**19 elements
    k = q.copy()
    q[2, 12345, 1] = bad
    with pytest.raises(ValueError, match="q contains NaN or Inf"):
        validate_attention_inputs(q, k, k)
    with pytest.raises(ValueError, match="k contains NaN or Inf"):
        validate_attention_inputs(k, q, k)

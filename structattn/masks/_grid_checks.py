"""Input checks of the grid masks (:class:`~structattn.masks.GridRPE`, ``Ripple``).

Grid shapes, coefficient tables, the special-token value and the key mask (True = a
real token that is attended, the library's one boolean-mask convention), each with an
error that names the argument.  O(size) for the finiteness scans, O(d) otherwise.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._array import describe_array, dtype_name, is_numpy, is_torch, namespace

METHODS = ("auto", "fft", "dense")


def _check_grid_shape(shape: Any, name: str = "shape") -> tuple[int, ...]:
    """A non-empty tuple of positive ints (an int is a 1-D grid)."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        tup = tuple(shape)
    except TypeError:
        raise TypeError(
            f"{name} must be a tuple of positive integers (grid sizes n_1, …, n_d), got "
            f"{shape!r}"
        ) from None
    if not tup or any(
        isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 for n in tup
    ):
        raise ValueError(
            f"{name} must be a non-empty tuple of positive integers (grid sizes n_1, …, "
            f"n_d), got {shape!r}"
        )
    return tuple(int(n) for n in tup)


def _check_float_array(x: Any, name: str) -> Any:
    """Array-likes become numpy float64; arrays must be float32/float64 and finite."""
    if not (is_numpy(x) or is_torch(x)):
        if isinstance(x, (list, tuple)):
            x = np.asarray(x, dtype=np.float64)
        else:
            raise TypeError(
                f"{name} must be a numpy.ndarray or torch.Tensor, got {type(x).__name__}"
            )
    if dtype_name(x) not in ("float32", "float64"):
        raise TypeError(f"{name} must be float32 or float64, got {dtype_name(x)}")
    xp = namespace(x)
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{name} contains NaN or Inf values ({describe_array(x)})")
    return x


def _check_method(method: Any) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method


def _check_special_value(value: Any) -> tuple[Any, tuple[int, ...]]:
    if is_numpy(value) or is_torch(value):
        if dtype_name(value) not in ("float32", "float64"):
            raise TypeError(
                f"special_value must be a real number or a float32/float64 array, got "
                f"{describe_array(value)}"
            )
        xp = namespace(value)
        if not bool(xp.all(xp.isfinite(value))):
            raise ValueError(f"special_value contains NaN or Inf ({describe_array(value)})")
        return value, tuple(value.shape)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"special_value must be a real number or an array, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"special_value must be finite, got {value!r}")
    return float(value), ()



def _check_key_mask(mask: Any, grid: tuple[int, ...],
                    name: str = "key_mask") -> tuple[Any, tuple[int, ...]]:
    """A boolean ``(..., n_1, …, n_d)`` array (True = real token) and its batch shape."""
    if mask is None:
        return None, ()
    if not (is_numpy(mask) or is_torch(mask)):
        mask = np.asarray(mask)
    if dtype_name(mask) != "bool":
        raise TypeError(
            f"{name} must be a boolean array (True = real token, attended), got "
            f"{describe_array(mask)}"
        )
    d = len(grid)
    if mask.ndim < d or tuple(mask.shape[mask.ndim - d:]) != grid:
        raise ValueError(
            f"{name} must have shape (..., {', '.join(map(str, grid))}) (one flag per grid "
            f"position), got shape {tuple(mask.shape)}"
        )
    return mask, tuple(mask.shape[: mask.ndim - d])

"""Shared input checks and numpy/torch conversion for :mod:`structattn.ranking`."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .._array import describe_array, is_numpy, is_torch, validate_float_array
from .._array import to_numpy as to_numpy  # re-exported: the ranking modules import it here

REDUCTIONS = ("mean", "sum", "none")


def check_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """An int ``>= minimum`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_positive(value: Any, name: str) -> float:
    """A finite float ``> 0``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
        np.isfinite(value) and value > 0
    ):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def like(result: np.ndarray, template: Any) -> Any:
    """``result`` as the kind of ``template`` (a torch tensor on its device, else numpy)."""
    if is_torch(template):
        import torch

        return torch.as_tensor(np.ascontiguousarray(result), device=template.device)
    return result


def check_array(x: Any, name: str, *, min_ndim: int = 1) -> None:
    """A numpy array or torch tensor of at least ``min_ndim`` dimensions (any dtype)."""
    if not (is_numpy(x) or is_torch(x)):
        raise TypeError(f"{name} must be a numpy.ndarray or torch.Tensor, got {type(x).__name__}")
    if x.ndim < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimensions, got {describe_array(x)}"
        )


def check_scores(x: Any, name: str = "scores", *, min_ndim: int = 1) -> None:
    """A finite float32/float64 numpy array or torch tensor."""
    validate_float_array(x, name, min_ndim=min_ndim, check_finite=True)

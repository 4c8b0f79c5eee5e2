"""Shared input checks and small array-API helpers for :mod:`structattn.objects`."""

from __future__ import annotations

import math
import numbers
from typing import Any

from .._array import is_torch, namespace, validate_float_array, validate_same_kind
from ..backends import resolve_backend

__all__ = [
    "check_backend",
    "check_eps",
    "check_int",
    "check_positive",
    "check_scale",
    "logsumexp",
    "softmax",
]


def check_backend(backend: Any, *arrays: Any) -> str:
    """Validate ``backend=`` against the inputs (the math core is one array-API code path).

    ``"numba"`` is accepted for numpy inputs and runs the numpy core: these operators are
    a few dense array operations with no loop a compiled kernel would speed up.
    """
    return resolve_backend(backend, *arrays)


def check_arrays(arrays: dict[str, Any], *, min_ndim: int = 2, check_finite: bool = True) -> None:
    """Floating numpy arrays or torch tensors of one kind, dtype and device."""
    for name, a in arrays.items():
        validate_float_array(a, name, min_ndim=min_ndim, check_finite=check_finite)
    validate_same_kind(arrays)


def check_scale(scale: Any, d: int) -> float:
    """``None`` -> ``1/sqrt(d)``; otherwise a finite real number."""
    if scale is None:
        return 1.0 / math.sqrt(d)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number or None, got {scale!r}")
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale!r}")
    return float(scale)


def check_eps(eps: Any, name: str = "eps") -> float:
    """A finite float ``>= 0``."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (
        math.isfinite(eps) and eps >= 0
    ):
        raise ValueError(f"{name} must be a finite number >= 0, got {eps!r}")
    return float(eps)


def check_positive(value: Any, name: str) -> float:
    """A finite float ``> 0``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
        math.isfinite(value) and value > 0
    ):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """An int ``>= minimum`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def logsumexp(x: Any, axis: int) -> Any:
    """``log Σ exp(x)`` along ``axis`` with ``keepdims``, stable and differentiable."""
    if is_torch(x):
        import torch

        return torch.logsumexp(x, dim=axis, keepdim=True)
    from scipy.special import logsumexp as _lse

    return _lse(x, axis=axis, keepdims=True)


def softmax(x: Any, axis: int) -> Any:
    """Numerically stable softmax along ``axis``."""
    xp = namespace(x)
    m = xp.max(x, axis=axis, keepdims=True)
    e = xp.exp(x - m)
    return e / xp.sum(e, axis=axis, keepdims=True)

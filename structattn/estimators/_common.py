"""Helpers shared by the importance-sampling estimators (array API, numpy and torch)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._array import as_like, namespace, validate_attention_inputs

__all__: list[str] = []


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum`` or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_real(value: Any, name: str, *, minimum: float | None = None,
               positive: bool = False) -> float:
    """``value`` as a finite float (``> 0`` if ``positive``, ``>= minimum`` if given)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def validated(q: Any, k: Any, v: Any, check_finite: bool):
    """Validate ``q, k, v``; return ``(batch, L_q, L_k, d, d_v)``."""
    return validate_attention_inputs(q, k, v, check_finite=check_finite)


def temperature(scale: Any, d: int) -> float:
    """The softmax scale: ``d**-0.5`` unless given (a positive finite number)."""
    if scale is None:
        return 1.0 / math.sqrt(d)
    return check_real(scale, "scale", positive=True)


def scaled(x: Any, t: float) -> Any:
    """``x · t**0.5``: the scaled space in which the target kernel is ``exp(q·k)``."""
    return x * math.sqrt(t)


def transpose(x: Any) -> Any:
    return namespace(x).matrix_transpose(x)


def logsumexp(x: Any, axis: int, keepdims: bool = False) -> Any:
    """Stable ``log Σ exp(x)`` along ``axis`` (rows of ``-inf`` give ``-inf``)."""
    xp = namespace(x)
    m = xp.max(x, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    out = xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else xp.squeeze(out, axis=axis)


def softmax(x: Any, axis: int) -> Any:
    """Stable softmax along ``axis``."""
    xp = namespace(x)
    m = xp.max(x, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    e = xp.exp(x - m)
    return e / xp.sum(e, axis=axis, keepdims=True)


def half_sq(x: Any) -> Any:
    """``|x|²/2`` over the last axis, keepdims."""
    return namespace(x).sum(x * x, axis=-1, keepdims=True) / 2


def log_xi(x: Any, w: Any) -> Any:
    """``log ξ(x_i, w_s) = w_s·x_i − |x_i|²/2`` as an ``(..., L, S)`` array.

    ``x``: ``(..., L, d)``, ``w``: ``(..., S, d)``.
    """
    return x @ transpose(w) - half_sq(x)


def draws_like(array: np.ndarray, like: Any) -> Any:
    """A float64 numpy draw moved to ``like``'s kind, dtype and device."""
    return as_like(np.ascontiguousarray(array), like)


def check_draw(name: str, array: Any, shape: tuple[int, ...]) -> np.ndarray:
    """An explicit draw given by the caller: numpy-convertible, finite, of ``shape``."""
    a = np.asarray(array.detach().cpu().numpy() if hasattr(array, "detach") else array)
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {a.shape}")
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or Inf values")
    return a

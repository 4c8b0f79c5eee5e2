"""Helpers shared by the importance-sampling estimators (array API, numpy and torch)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _validate as _v
from .._array import as_like, namespace, validate_attention_inputs

__all__: list[str] = []


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum`` (see :func:`structattn._validate.check_int`)."""
    return _v.check_int(value, name, minimum=minimum)


def check_real(value: Any, name: str, *, minimum: float | None = None,
               positive: bool = False) -> float:
    """``value`` as a finite float (``> 0`` if ``positive``, ``>= minimum`` if given)."""
    if positive:
        return _v.check_real(value, name, minimum=0.0 if minimum is None else minimum,
                             strict_minimum=minimum is None or minimum <= 0)
    return _v.check_real(value, name, minimum=minimum)


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    return _v.check_choice(value, name, choices)


def check_bool(value: Any, name: str) -> bool:
    return _v.check_bool(value, name)


def validated(q: Any, k: Any, v: Any, check_finite: bool, values: bool = True):
    """Validate ``q, k, v``; return ``(batch, L_q, L_k, d, d_v)``.

    ``values=False``: ``v`` is a zero-width stand-in (matrix-only calls).
    """
    return validate_attention_inputs(q, k, v, check_finite=check_finite, values=values)


def empty_result(q: Any, k: Any, v: Any) -> Any:
    """The degenerate-length result (``L_q = 0`` or ``L_k = 0``), else None.

    Output mode: ``(..., L_q, d_v)`` zeros; matrix mode (``v`` None): ``(..., L_q, L_k)``.
    """
    if v is None:
        return _v.empty_attention(q, k, k, q.shape[-2], k.shape[-2], width=k.shape[-2])
    return _v.empty_attention(q, k, v, q.shape[-2], k.shape[-2])


def checked_output(out: Any, what: str, check_finite: Any, like: Any) -> Any:
    """Post-condition: finite inputs gave a finite output (numpy, or torch in debug()).

    Raises ``FloatingPointError`` naming the estimator instead of returning NaN/Inf
    (e.g. scores beyond the exponent range).  Tuples (``return_samples``) pass as is.
    """
    if isinstance(out, tuple):
        return out
    check = _v.resolve_check_finite(None if check_finite else False, like)
    return _v.check_finite_output(out, what, check)


def temperature(scale: Any, d: int) -> float:
    """The softmax scale: ``d**-0.5`` unless given (a positive finite number)."""
    return _v.check_scale(scale, d)


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

"""Validation helpers shared by the torch layers (constructor parameters and inputs)."""

from __future__ import annotations

from typing import Any

import torch

from .. import _validate as _v
from .._array import describe_array, dtype_name
from .._debug import resolve_check_finite

#: Input dtypes of the torch layers (half precision computes attention in float32).
LAYER_DTYPES = ("float32", "float64", "float16", "bfloat16")

__all__ = [
    "check_choice",
    "check_input",
    "check_nonnegative_int",
    "check_positive_float",
    "check_positive_int",
    "check_scale",
    "relative_offsets_bias",
]


def check_positive_int(value: Any, name: str) -> int:
    """``value`` as an int ``>= 1`` (see :func:`structattn._validate.check_int`)."""
    return _v.check_int(value, name, minimum=1)


def check_nonnegative_int(value: Any, name: str) -> int:
    """``value`` as an int ``>= 0`` (see :func:`structattn._validate.check_int`)."""
    return _v.check_int(value, name, minimum=0)


def check_positive_float(value: Any, name: str) -> float:
    """``value`` as a finite float ``> 0`` (see :func:`structattn._validate.check_real`)."""
    return _v.check_real(value, name, minimum=0.0, strict_minimum=True)


def check_choice(value: Any, name: str, choices: tuple[Any, ...]) -> Any:
    """``value`` if it is one of ``choices``, else a ValueError naming ``name``."""
    if not isinstance(value, (str, bool)) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_scale(value: Any, name: str, words: tuple[str, ...]) -> float | str:
    """A score scale: a finite float ``> 0`` or one of the named rules in ``words``."""
    if isinstance(value, str):
        if value not in words:
            raise ValueError(
                f"{name} must be a finite number > 0 or one of {words}, got {value!r}"
            )
        return value
    try:
        return check_positive_float(value, name)
    except ValueError:
        raise ValueError(
            f"{name} must be a finite number > 0 or one of {words}, got {value!r}"
        ) from None


def check_input(x: Any, name: str, d_model: int, *, check_finite: bool | None,
                min_len: int = 1, like: torch.nn.Module | None = None) -> None:
    """Validate a layer input ``x`` of shape ``(..., T, d_model)``.

    Raises TypeError for a non-tensor or a dtype other than float32/float64/float16/
    bfloat16, or a dtype that differs from the module's parameters; ValueError for a
    wrong shape or NaN/Inf.  ``check_finite=None`` scans for NaN/Inf only inside
    :func:`structattn.debug` (the scan is a host synchronization).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if dtype_name(x) not in LAYER_DTYPES:
        raise TypeError(f"{name} must have a dtype in {LAYER_DTYPES}, got {dtype_name(x)}")
    if x.ndim < 2 or x.shape[-1] != d_model or x.shape[-2] < min_len:
        raise ValueError(
            f"{name} must have shape (..., T, d_model) with d_model = {d_model} and "
            f"T >= {min_len}, got shape {tuple(x.shape)}"
        )
    if like is not None:
        p = next(like.parameters(), None)
        if p is not None and (p.dtype != x.dtype or p.device != x.device):
            raise TypeError(
                f"{name} ({describe_array(x)}) must have the dtype and device of the "
                f"module's parameters ({dtype_name(p)}, {p.device}); call "
                f"module.to(x.dtype) / module.to(x.device) first"
            )
    if resolve_check_finite(check_finite, x) and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf values ({describe_array(x)})")


def relative_offsets_bias(table: torch.Tensor, max_distance: int, L: int) -> torch.Tensor:
    """Toeplitz bias ``b_ij = table[clip(i - j, -D, D) + D]``, shape ``(L, L)``."""
    i = torch.arange(L, device=table.device)
    off = (i[:, None] - i[None, :]).clamp(-max_distance, max_distance) + max_distance
    return table[off]

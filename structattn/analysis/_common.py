"""Shared validation and row-block helpers of :mod:`structattn.analysis`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .._array import describe_array, namespace, validate_float_array, validate_same_kind

__all__ = [
    "check_block_rows",
    "check_floor",
    "check_maps",
    "check_pair",
    "check_prefix",
    "floored_log",
    "row_blocks",
    "safe_log",
    "xlogx_ratio",
]


def check_maps(P: Any, name: str, *, min_ndim: int = 2, check_finite: bool = True,
               square: bool = True) -> None:
    """``P`` must be a float numpy array / torch tensor shaped ``(..., L, L)``."""
    validate_float_array(P, name, min_ndim=min_ndim, check_finite=check_finite)
    if square and P.shape[-1] != P.shape[-2]:
        raise ValueError(f"{name} must be square attention maps (..., L, L), got "
                         f"{describe_array(P)}")


def check_pair(a: Any, b: Any, names: tuple[str, str], *, check_finite: bool = True) -> None:
    """Two maps ``(..., L_q, L_k)`` of one kind, dtype, device and shape."""
    check_maps(a, names[0], check_finite=check_finite, square=False)
    check_maps(b, names[1], check_finite=check_finite, square=False)
    validate_same_kind({names[0]: a, names[1]: b})
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")


def check_floor(floor: Any) -> float:
    """``floor`` in (0, 1)."""
    if isinstance(floor, bool) or not isinstance(floor, (int, float, np.floating)) or not (
            0.0 < float(floor) < 1.0):
        raise ValueError(f"floor must be a number in (0, 1), got {floor!r}")
    return float(floor)


def check_block_rows(block_rows: Any) -> int:
    """``block_rows`` a positive int."""
    if isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)) or (
            block_rows < 1):
        raise ValueError(f"block_rows must be an integer >= 1, got {block_rows!r}")
    return int(block_rows)


def check_prefix(num_prefix_tokens: Any, L: int) -> int:
    """``0 <= num_prefix_tokens < L``."""
    if (isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens,
                                                              (int, np.integer))
            or not 0 <= num_prefix_tokens < L):
        raise ValueError(f"num_prefix_tokens must be an integer in [0, L) = [0, {L}), got "
                         f"{num_prefix_tokens!r}")
    return int(num_prefix_tokens)


def row_blocks(L: int, block_rows: int) -> Iterator[slice]:
    """Slices of ``block_rows`` query rows covering ``range(L)``."""
    for r0 in range(0, L, block_rows):
        yield slice(r0, min(L, r0 + block_rows))


def safe_log(p: Any) -> Any:
    """``log p`` where ``p > 0``, ``0`` elsewhere (so that ``0·log 0 = 0``)."""
    xp = namespace(p)
    pos = p > 0
    return xp.where(pos, xp.log(xp.where(pos, p, xp.ones_like(p))), xp.zeros_like(p))


def xlogx_ratio(p: Any, log_q: Any) -> Any:
    """Row sums ``Σ_j p_j (log p_j − log q_j)`` with ``0·log 0 = 0`` (shape ``(...,)``)."""
    xp = namespace(p)
    terms = xp.where(p > 0, p * (safe_log(p) - log_q), xp.zeros_like(p))
    return xp.sum(terms, axis=-1)


def floored_log(q: Any, floor: float) -> Any:
    """``log`` of ``q`` raised to ``floor`` and renormalized per row."""
    xp = namespace(q)
    q = xp.clip(q, min=floor)
    return xp.log(q) - xp.log(xp.sum(q, axis=-1, keepdims=True))

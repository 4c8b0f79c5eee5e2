"""The one place where structattn reaches scipy.fft (numpy) or torch.fft (torch).

Operators call these helpers with arrays of either kind; nothing else in the library
branches on the FFT implementation.  numpy float32 stays float32 (scipy.fft computes
in single precision); torch follows the tensor's device and dtype and is differentiable.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import scipy.fft

from ._array import is_torch

__all__ = ["irfft", "irfftn", "next_fast_length", "rfft", "rfftn"]

#: Threads scipy.fft may use (``STRUCTATTN_FFT_WORKERS``, default: all cores).
FFT_WORKERS = int(os.environ.get("STRUCTATTN_FFT_WORKERS", os.cpu_count() or 1))


def next_fast_length(n: int) -> int:
    """Smallest length ``>= n`` with small prime factors (fast real FFTs)."""
    return int(scipy.fft.next_fast_len(int(n), real=True))


def rfft(x: Any, n: int, axis: int = -1) -> Any:
    """Real FFT of ``x`` zero-padded (or cropped) to ``n`` along ``axis``."""
    if is_torch(x):
        import torch

        return torch.fft.rfft(x, n=n, dim=axis)
    return scipy.fft.rfft(x, n=n, axis=axis, workers=FFT_WORKERS)


def irfft(X: Any, n: int, axis: int = -1) -> Any:
    """Inverse of :func:`rfft` for a real signal of length ``n``."""
    if is_torch(X):
        import torch

        return torch.fft.irfft(X, n=n, dim=axis)
    return scipy.fft.irfft(X, n=n, axis=axis, workers=FFT_WORKERS)


def rfftn(x: Any, s: Sequence[int], axes: Sequence[int]) -> Any:
    """d-dimensional real FFT of ``x`` zero-padded to ``s`` over ``axes``."""
    if is_torch(x):
        import torch

        return torch.fft.rfftn(x, s=tuple(s), dim=tuple(axes))
    return scipy.fft.rfftn(x, s=tuple(s), axes=tuple(axes), workers=FFT_WORKERS)


def irfftn(X: Any, s: Sequence[int], axes: Sequence[int]) -> Any:
    """Inverse of :func:`rfftn` for a real signal of shape ``s`` over ``axes``."""
    if is_torch(X):
        import torch

        return torch.fft.irfftn(X, s=tuple(s), dim=tuple(axes))
    return scipy.fft.irfftn(X, s=tuple(s), axes=tuple(axes), workers=FFT_WORKERS)

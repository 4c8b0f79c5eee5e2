"""Separable grid masks ``f(Δ) = Π_t f_t(Δ_t)``: Kronecker products of Toeplitz masks.

No ``2^d`` FFT padding blow-up: ``O(L·Σ_t log n_t)`` per column with FFT factors.
Re-exported by :mod:`structattn.masks.grid` and :mod:`structattn.masks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._array import describe_array
from ._grid_checks import _check_float_array, _check_grid_shape
from .base import Mask
from .composition import Kronecker
from .toeplitz import Toeplitz

__all__ = ["separable_grid"]


def separable_grid(
    shape: Sequence[int] | int,
    factors: Sequence[Any],
    *,
    log: bool = False,
    method: str = "auto",
) -> Mask:
    """Separable grid mask ``f(Δ) = Π_t f_t(Δ_t)``: a Kronecker product of Toeplitz masks.

    Parameters
    ----------
    shape : tuple of int
        Grid shape ``(n_1, …, n_d)``.
    factors : sequence of d arrays
        ``factors[t]`` has shape ``(2n_t − 1,)``: ``factors[t][Δ_t + n_t − 1] = f_t(Δ_t)``
        (unbatched; numpy arrays or torch tensors).
    log : bool, default False
        The factors are log-values: ``f_t = exp(b_t)`` (then ``f = exp(Σ_t b_t)``).
    method : {"auto", "fft", "dense"}
        Passed to every :class:`~structattn.masks.Toeplitz` factor.

    Returns
    -------
    Mask
        ``Toeplitz`` for ``d = 1``, else nested
        ``Kronecker(T_1, Kronecker(T_2, …))`` — row-major like :class:`GridRPE`, with the
        same matrix as ``GridRPE(shape, outer(f_1, …, f_d))``.

    Notes
    -----
    Each factor is applied along its grid axis: ``O(L·Σ_t log n_t)`` per column with
    FFT factors (no ``2^d`` padding blow-up), ``O(L·Σ_t n_t)`` with dense factors.
    """
    grid = _check_grid_shape(shape)
    factors = list(factors)
    if len(factors) != len(grid):
        raise ValueError(
            f"factors must hold one coefficient vector per grid axis ({len(grid)}), got "
            f"{len(factors)}"
        )
    masks = []
    for t, (n, c) in enumerate(zip(grid, factors, strict=True)):
        c = _check_float_array(c, f"factors[{t}]")
        if tuple(c.shape) != (2 * n - 1,):
            raise ValueError(
                f"factors[{t}] must have shape (2n_{t + 1} - 1,) = ({2 * n - 1},) for grid "
                f"shape {grid}, got {describe_array(c)}"
            )
        masks.append(Toeplitz(c, log=log, method=method))
    out = masks[-1]
    for m in reversed(masks[:-1]):
        out = Kronecker(m, out)
    return out

"""Numerics of d-level block-Toeplitz grid masks: offset tables, dense and FFT products.

``coeffs[..., Δ_1 + n_1 − 1, …, Δ_d + n_d − 1] = f(Δ)`` on a full ``n_1 x … x n_d`` grid
flattened row-major.  :func:`grid_dense` gathers the ``Lg x Lg`` matrix (``O(Lg²)``),
:func:`grid_fft_apply` multiplies by it with a d-dimensional real FFT of the zero-padded
grid (``O(2^d·Lg log(2^d·Lg))`` per column) and :func:`grid_costs` estimates both, for
:class:`~structattn.masks.GridRPE` and :class:`~structattn.masks.Ripple`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _fft
from .._array import index_like, is_torch, namespace
from .toeplitz import FFT_COST_FACTOR

__all__ = ["dense_index", "fft_lengths", "grid_costs", "grid_dense", "grid_fft_apply",
           "offset_shape"]


def offset_shape(grid: Sequence[int]) -> tuple[int, ...]:
    """``(2n_1 − 1, …, 2n_d − 1)``: the shape of a table over all grid offsets."""
    return tuple(2 * n - 1 for n in grid)


def fft_lengths(grid: Sequence[int]) -> tuple[int, ...]:
    """Per-axis fast FFT lengths ``P_t >= 2n_t − 1`` (no aliasing of ± offsets)."""
    return tuple(_fft.next_fast_length(2 * n - 1) for n in grid)


def dense_index(grid: Sequence[int]) -> np.ndarray:
    """``idx[i, j]``: flat position of ``f(p_i − p_j)`` in the offset table (row-major)."""
    grid = tuple(grid)
    pos = np.indices(grid).reshape(len(grid), -1)  # (d, Lg), row-major positions
    idx = np.zeros((pos.shape[1], pos.shape[1]), dtype=np.int64)
    for t, n in enumerate(grid):
        stride = math.prod(2 * m - 1 for m in grid[t + 1:])
        idx += (pos[t][:, None] - pos[t][None, :] + n - 1) * stride
    return idx


def grid_dense(c: Any, grid: Sequence[int], like: Any) -> Any:
    """The dense ``(*batch, Lg, Lg)`` grid block from offset values ``c (*batch, 2n−1…)``."""
    xp = namespace(like)
    d, Lg = len(grid), math.prod(grid)
    batch = tuple(c.shape[: c.ndim - d])
    flat = xp.reshape(c, (*batch, math.prod(offset_shape(grid))))
    idx = index_like(dense_index(grid).reshape(-1), like)
    return xp.reshape(xp.take(flat, idx, axis=-1), (*batch, Lg, Lg))


def _wrapped_kernel(c: Any, grid: Sequence[int], P: Sequence[int]) -> Any:
    """``G[k mod P] = f(k)``: the offset table embedded in a ``P_1 x … x P_d`` torus."""
    xp = namespace(c)
    d = len(grid)
    G = c
    for t, (n, p) in enumerate(zip(grid, P, strict=True)):
        axis = G.ndim - d + t
        lead = (slice(None),) * axis
        parts = [G[(*lead, slice(n - 1, None))]]  # offsets 0 … n−1
        if p > 2 * n - 1:
            zshape = list(G.shape)
            zshape[axis] = p - 2 * n + 1
            parts.append(xp.zeros(tuple(zshape), dtype=G.dtype,
                                  **({"device": G.device} if is_torch(G) else {})))
        parts.append(G[(*lead, slice(0, n - 1))])  # offsets −(n−1) … −1 wrap around
        G = xp.concat(parts, axis=axis)
    return G


def grid_fft_apply(c: Any, X: Any, grid: Sequence[int]) -> Any:
    """``M_g X`` for the grid block ``M_g[i, j] = c[p_i − p_j + n − 1]`` by d-dim real FFTs.

    Parameters
    ----------
    c : array, shape (*batch, 2n_1 − 1, …, 2n_d − 1)
    X : array, shape (..., Lg, F)
        ``Lg = Π n_t`` rows in row-major grid order; leading dims broadcast with batch.

    Returns
    -------
    array, shape (broadcast(..., *batch), Lg, F)

    Notes
    -----
    Zero-pads every grid axis to ``P_t = next_fast_length(2n_t − 1)``, multiplies the
    spectra of ``X`` and of the wrapped kernel ``G[k mod P] = f(k)`` (broadcast over the
    columns), inverts and crops: ``O(F·ΠP_t·log ΠP_t)`` time, ``~ΠP_t·F`` memory
    (about ``2^d`` times the input).
    """
    xp = namespace(X)
    d = len(grid)
    P = fft_lengths(grid)
    F = X.shape[-1]
    lead = tuple(X.shape[:-2])
    Xg = xp.reshape(X, (*lead, *grid, F))
    x_axes = tuple(range(-d - 1, -1))
    spectrum = _fft.rfftn(_wrapped_kernel(c, grid, P), P, axes=tuple(range(-d, 0)))
    Y = _fft.irfftn(spectrum[..., None] * _fft.rfftn(Xg, P, axes=x_axes), P, axes=x_axes)
    Y = Y[(..., *(slice(0, n) for n in grid), slice(None))]
    return xp.reshape(Y, (*Y.shape[: Y.ndim - d - 1], math.prod(grid), F))


def grid_costs(grid: Sequence[int], F: int, batch: int = 1) -> dict[str, float]:
    """Estimated flops of the grid block's FFT and dense products with ``F`` columns.

    FFT: forward and inverse real d-dim FFTs of the padded ``F``-column block
    (``5·P log₂P`` per column for ``P = ΠP_t``), the pointwise product, and one FFT of the
    kernel per batch element, all scaled by :data:`~structattn.masks.toeplitz.FFT_COST_FACTOR`;
    dense: ``2·Lg²·F``.
    """
    P = math.prod(fft_lengths(grid))
    Lg = math.prod(grid)
    logp = math.log2(max(P, 2))
    fft = FFT_COST_FACTOR * batch * (F * (5.0 * P * logp + 4.0 * P) + 2.5 * P * logp)
    return {"fft": fft, "dense": 2.0 * Lg * Lg * F * batch}

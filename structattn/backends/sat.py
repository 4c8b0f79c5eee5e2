"""Vectorised summed-area-table kernel for ripple masks (array API: numpy and torch).

Written against the array API, so the same function also serves numpy arrays as the
``"numpy"`` backend (no compilation); torch is never imported here.  Positions are
vectorised (``cumsum``, then the four table corners of every box as shifted slices of the
table), the ring radius is a Python loop: ``R`` steps of ``O(H·W·F)`` each.  Autograd
flows through the cumulative sums and slices to ``X`` and to the ring weights (learnable
ripple); with weights that require gradients every box-sum block ``B_r`` is saved,
``O(R·H·W·F)`` memory.  Slices rather than index gathers: the backward of a gather is a
scatter-add, measured ~100x slower on CPU for these shapes.

Precision: the prefix-sum table is float64 for float32 inputs too (box sums are
differences of large prefix sums, masks.md §2.7), except on devices without float64
(Apple MPS), where it stays float32; the result is cast back to the input dtype.
"""

from __future__ import annotations

from typing import Any

from .._array import is_torch, namespace

__all__ = ["ripple_sat"]


def _table_dtype(X: Any, xp: Any) -> Any:
    if is_torch(X) and X.device.type == "mps":
        return X.dtype
    return xp.float64


def _window_differences(T: Any, r: int, axis: int, xp: Any) -> Any:
    """``T[min(i + r + 1, n)] − T[max(i − r, 0)]`` for ``i = 0 … n − 1`` along ``axis``.

    ``T`` has length ``n + 1`` along ``axis`` with ``T[0] = 0`` (an inclusive prefix-sum
    table with a zero border).  Built from slices, edge broadcasts and concatenations
    only: no index gathers, whose backward (a scatter-add) is slow on CPU.
    """
    n = int(T.shape[axis]) - 1

    def part(start: int, stop: int) -> Any:
        index = [slice(None)] * T.ndim
        index[axis] = slice(start, stop)
        return T[tuple(index)]

    def repeat(edge: Any, count: int) -> Any:
        shape = list(edge.shape)
        shape[axis] = count
        return xp.broadcast_to(edge, tuple(shape))

    k_hi = max(n - r, 0)  # positions whose upper edge i + r + 1 stays inside the table
    hi = part(r + 1, r + 1 + k_hi)
    if k_hi < n:
        hi = xp.concat([hi, repeat(part(n, n + 1), n - k_hi)], axis=axis)
    k_lo = min(r + 1, n)  # positions whose lower edge i − r is clipped to the zero row
    lo = repeat(part(0, 1), k_lo)
    if k_lo < n:
        lo = xp.concat([lo, part(1, n - r)], axis=axis)
    return hi - lo


def ripple_sat(X: Any, alpha: Any) -> Any:
    """Ripple mask product by summed-area tables (torch tensors or numpy arrays).

    Parameters
    ----------
    X : array, shape (..., H, W, F)
        Grid block (float32 or float64).
    alpha : array, shape (..., R + 1)
        Ring weights ``α_0 … α_{R−1}`` and the tail weight ``ᾱ`` (rings ``r >= R``);
        leading dims broadcast with those of ``X``.  Same kind and device as ``X``.

    Returns
    -------
    array, shape (broadcast(...), H, W, F)
        ``y_p = Σ_q α_{min(‖p − q‖_∞, R)} X_q`` in ``X``'s dtype.

    Notes
    -----
    Telescoped rings: ``y = Σ_{r<r_max} (α_r − α_{r+1}) B_r + α_{r_max} B_total`` with
    ``r_max = min(R, max(H, W) − 1)`` (boxes of larger radius cover the whole grid) and
    ``B_r(p)`` the sum over the clipped ``(2r + 1)²`` box around ``p``: the four table
    corners come from shifted slices of the table (row window differences, then column
    window differences).  ``O(H·W·F·r_max)`` time, ``O(H·W·F)`` extra memory without
    gradients.
    """
    xp = namespace(X, alpha)
    H, W, F = (int(s) for s in X.shape[-3:])
    R = int(alpha.shape[-1]) - 1
    tdtype = _table_dtype(X, xp)
    T = xp.cumsum(xp.cumsum(xp.astype(X, tdtype), axis=-3), axis=-2)
    T = xp.concat([xp.zeros_like(T[..., :1, :, :]), T], axis=-3)
    T = xp.concat([xp.zeros_like(T[..., :, :1, :]), T], axis=-2)  # (..., H+1, W+1, F)
    a = xp.astype(alpha, tdtype)
    r_max = min(R, max(H, W) - 1)
    out = a[..., r_max, None, None, None] * T[..., H:, W:, :]
    for r in range(r_max):
        w = (a[..., r] - a[..., r + 1])[..., None, None, None]
        rows = _window_differences(T, r, T.ndim - 3, xp)  # (..., H, W+1, F)
        out = out + w * _window_differences(rows, r, T.ndim - 2, xp)  # (..., H, W, F)
    out = xp.broadcast_to(out, (*out.shape[:-3], H, W, F))
    return xp.astype(out, X.dtype)

"""Gray-code layout of a sequence on the hypercube ``Q_k`` (Hypercube Transformer).

Position ``i`` is vertex ``g(i) = i ⊕ (i >> 1)`` (reflected binary Gray code) of
``Q_k``, ``k = ⌈log2 n⌉``.  Consecutive positions differ in one bit, so the sequence
order is a Hamiltonian path of the cube and local order is kept.  The official code's
list-based construction appends bits on the low side; it equals this map up to a
permutation of the bits, which leaves the graph unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validate import ArgumentTypeError, check_int

__all__ = ["cube_dimension", "gray_code", "hypercube_neighbors", "inverse_gray_code"]


def cube_dimension(n: int) -> int:
    """``k = ⌈log2 n⌉`` (0 for ``n = 1``), the dimension of the smallest cube holding ``n``.

    ``n`` is a number of positions: an integer ``>= 1``.
    """
    n = check_int(n, "n", minimum=1)
    return max(0, int(n - 1).bit_length()) if n > 1 else 0


def _labels(x: Any, name: str) -> np.ndarray:
    """Non-negative integer labels (a scalar or an array of integer dtype)."""
    if isinstance(x, (bool, np.bool_)) or (
        np.isscalar(x) and not isinstance(x, (int, np.integer))
    ):
        raise ArgumentTypeError(f"{name} must be a non-negative integer, got {x!r}")
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise ArgumentTypeError(
            f"{name} must be non-negative integers, got an array of dtype {a.dtype}"
        )
    a = a.astype(np.int64)
    if a.size and int(a.min()) < 0:
        raise ValueError(f"{name} must be non-negative integers, got {int(a.min())}")
    return a


def gray_code(i: Any) -> np.ndarray:
    """Reflected binary Gray code ``g(i) = i ⊕ (i >> 1)`` (elementwise, int64).

    ``i``: non-negative integers (a float or a negative label is a named error).
    """
    i = _labels(i, "i")
    return i ^ (i >> 1)


def inverse_gray_code(x: Any) -> np.ndarray:
    """Inverse Gray code by prefix XOR, ``g⁻¹(x) = x ⊕ (x >> 1) ⊕ (x >> 2) ⊕ …``."""
    x = np.array(_labels(x, "x"), dtype=np.int64, copy=True)
    shift = 1
    while shift < 64:
        x ^= x >> shift
        shift <<= 1
    return x


def hypercube_neighbors(n: int) -> np.ndarray:
    """Neighbour table of the Gray-code hypercube layout on ``n`` positions.

    Parameters
    ----------
    n : int
        Number of positions.

    Returns
    -------
    numpy.ndarray of int64, shape (n, k)
        Column ``b`` holds the position whose Gray label differs from ``g(i)`` in bit
        ``b``, or ``-1`` when that position is ``>= n`` (dropped: ``n`` not a power of
        two).  Self-loops are not included.  ``O(n·k)``.
    """
    k = cube_dimension(n)
    g = gray_code(np.arange(n, dtype=np.int64))
    flips = g[:, None] ^ (np.int64(1) << np.arange(k, dtype=np.int64))[None, :]
    pos = inverse_gray_code(flips)
    return np.where(pos < n, pos, -1).reshape(n, k)

"""Haar analysis of attention kernels with PyWavelets (mra.md §1.2, §1.7).

The independent oracle and analysis layer of :mod:`structattn.mra`.  Every function takes
float64 numpy matrices ``E (..., L, L)`` with ``L`` a power of two (leading dimensions are
looped over) and uses the orthonormal 2-D Haar transform
``pywt.wavedec2(E, "haar", mode="periodization")``:

* :func:`best_n_term` — the best ``N``-term approximation in the Haar basis (keep the
  ``N`` largest coefficients); by Parseval its error is the norm of the discarded
  coefficients, the lower bound of the oracle chain (E3);
* :func:`tree_projection` — orthogonal projection onto the MRA-2 tree: the approximation
  band at level ``log2 b`` plus every detail coefficient supported inside a selected
  block (equal to block means on unselected blocks and exact entries on selected ones);
* :func:`level_energy` — energy of ``E`` per Haar level (how multi-resolution
  compressible a head is);
* :func:`jensen_gap_map` — ``exp(mean S) / mean exp(S)`` per block (``<= 1``, Jensen);
* :func:`selection_recall` — overlap of a selection with the top-``k`` true block means.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import pywt

__all__ = [
    "best_n_term",
    "jensen_gap_map",
    "level_energy",
    "selection_recall",
    "tree_projection",
]

_WAVELET = "haar"
_MODE = "periodization"


def _square_pow2(E: Any, name: str = "E") -> np.ndarray:
    E = np.asarray(E, dtype=np.float64)
    if E.ndim < 2 or E.shape[-1] != E.shape[-2]:
        raise ValueError(f"{name} must have shape (..., L, L), got {E.shape}")
    L = E.shape[-1]
    if L < 1 or L & (L - 1):
        raise ValueError(f"{name} must be L x L with L a power of two, got L = {L}")
    if not np.all(np.isfinite(E)):
        raise ValueError(f"{name} contains NaN or Inf values")
    return E


def _level(L: int, level: Any) -> int:
    top = int(math.log2(L))
    if level is None:
        return top
    if isinstance(level, bool) or not isinstance(level, numbers.Integral) or not (
        0 <= level <= top
    ):
        raise ValueError(f"level must be an int in [0, log2 L = {top}] or None, got {level!r}")
    return int(level)


def _heads(E: np.ndarray):
    flat = E.reshape(-1, *E.shape[-2:])
    return flat, E.shape[:-2]


def best_n_term(E: Any, n: int, *, level: int | None = None) -> np.ndarray:
    """Best ``n``-term approximation of ``E`` in the orthonormal 2-D Haar basis.

    Parameters
    ----------
    E : array, shape (..., L, L)
        ``L`` a power of two.
    n : int
        Number of coefficients kept per matrix, ``0 <= n <= L²``.
    level : int, optional
        Decomposition depth (default: full, ``log2 L``).

    Returns
    -------
    numpy.ndarray, shape (..., L, L)
        Reconstruction from the ``n`` largest-magnitude coefficients (ties: first in
        ``pywt.coeffs_to_array`` order).  Cost ``O(L² log L)`` per matrix.
    """
    E = _square_pow2(E)
    L = E.shape[-1]
    lev = _level(L, level)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 0 <= n <= L * L:
        raise ValueError(f"n must be an int in [0, L**2 = {L * L}], got {n!r}")
    flat, batch = _heads(E)
    out = np.empty_like(flat)
    for h in range(flat.shape[0]):
        coeffs = pywt.wavedec2(flat[h], _WAVELET, mode=_MODE, level=lev)
        arr, slices = pywt.coeffs_to_array(coeffs)
        keep = np.zeros(arr.size, dtype=bool)
        if n > 0:
            order = np.argsort(-np.abs(arr).ravel(), kind="stable")
            keep[order[:n]] = True
        arr = np.where(keep.reshape(arr.shape), arr, 0.0)
        rec = pywt.waverec2(pywt.array_to_coeffs(arr, slices, output_format="wavedec2"),
                            _WAVELET, mode=_MODE)
        out[h] = rec
    return out.reshape(*batch, L, L)


def tree_projection(E: Any, selected: Any) -> np.ndarray:
    """Orthogonal projection of ``E`` onto the Haar tree of an MRA-2 selection.

    Keeps the approximation band at level ``J = log2 b`` (``b = L / n_b``) and the
    detail coefficients of scales ``1..J`` whose support lies in a selected block, then
    reconstructs with ``pywt.waverec2``.

    Parameters
    ----------
    E : array, shape (..., L, L)
    selected : bool array, shape (..., n_b, n_b)
        Selected-block mask ``M`` (e.g. :attr:`~structattn.mra.BlockSelection.mask`);
        ``n_b`` a power of two dividing ``L``.

    Returns
    -------
    numpy.ndarray, shape (..., L, L)
        Block means of ``E`` on unselected blocks, ``E`` on selected ones; uses
        ``n_b² + k (b² - 1)`` coefficients for ``k`` selected blocks.
    """
    E = _square_pow2(E)
    M = np.asarray(selected, dtype=bool)
    L = E.shape[-1]
    if M.ndim < 2 or M.shape[-1] != M.shape[-2] or M.shape[:-2] != E.shape[:-2]:
        raise ValueError(
            f"selected must have shape (*batch, n_b, n_b) with batch {E.shape[:-2]}, "
            f"got {M.shape}"
        )
    nb = M.shape[-1]
    if nb < 1 or L % nb or (L // nb) & (L // nb - 1):
        raise ValueError(f"selected has n_b = {nb}; L / n_b must be a power of two (L = {L})")
    J = int(math.log2(L // nb))
    flat, batch = _heads(E)
    Mf = M.reshape(-1, nb, nb)
    out = np.empty_like(flat)
    for h in range(flat.shape[0]):
        coeffs = pywt.wavedec2(flat[h], _WAVELET, mode=_MODE, level=J)
        new = [coeffs[0]]
        for i, details in enumerate(coeffs[1:]):
            j = J - i  # scale of this detail level (J coarsest .. 1 finest)
            rep = 2 ** (J - j)
            keep = np.kron(Mf[h], np.ones((rep, rep), dtype=bool))
            new.append(tuple(np.where(keep, c, 0.0) for c in details))
        out[h] = pywt.waverec2(new, _WAVELET, mode=_MODE)
    return out.reshape(*batch, L, L)


def level_energy(E: Any) -> np.ndarray:
    """Energy of ``E`` per Haar level (Parseval: the entries sum to ``||E||_F²``).

    Returns
    -------
    numpy.ndarray, shape (..., log2 L + 1)
        ``out[..., 0]``: energy of the coarsest approximation (the global mean part);
        ``out[..., j]`` for ``j >= 1``: energy of the detail coefficients of scale ``j``
        (supported on ``2^j x 2^j`` blocks; ``j = 1`` the finest).
    """
    E = _square_pow2(E)
    L = E.shape[-1]
    p = int(math.log2(L))
    flat, batch = _heads(E)
    out = np.zeros((flat.shape[0], p + 1))
    for h in range(flat.shape[0]):
        if p == 0:
            out[h, 0] = flat[h, 0, 0] ** 2
            continue
        coeffs = pywt.wavedec2(flat[h], _WAVELET, mode=_MODE, level=p)
        out[h, 0] = float(np.sum(coeffs[0] ** 2))
        for i, details in enumerate(coeffs[1:]):
            out[h, p - i] = float(sum(np.sum(c**2) for c in details))
    return out.reshape(*batch, p + 1)


def jensen_gap_map(scores: Any, block_size: int) -> np.ndarray:
    """``exp(mean_blk S) / mean_blk exp(S)`` per ``b x b`` block (``<= 1`` by Jensen).

    Parameters
    ----------
    scores : array, shape (..., L, L)
        Logits ``S`` (``L`` a multiple of ``block_size``).
    block_size : int
        ``b``.

    Returns
    -------
    numpy.ndarray, shape (..., L/b, L/b)
        The factor by which MRA-2's coarse term underestimates each block's mass.
        Computed per block with the block maximum as shift (no overflow).
    """
    S = np.asarray(scores, dtype=np.float64)
    b = int(block_size)
    if S.ndim < 2 or S.shape[-1] % b or S.shape[-2] % b or b < 1:
        raise ValueError(f"scores must be (..., L, L) with L a multiple of {b}, got {S.shape}")
    *batch, R, C = S.shape
    blocks = S.reshape(*batch, R // b, b, C // b, b)
    mx = blocks.max(axis=(-3, -1), keepdims=True)
    mean_exp = np.exp(blocks - mx).mean(axis=(-3, -1))
    exp_mean = np.exp(blocks.mean(axis=(-3, -1)) - mx[..., 0, :, 0])
    return exp_mean / mean_exp


def selection_recall(E: Any, selected: Any) -> np.ndarray:
    """Fraction of the ``k`` selected blocks that are among the top-``k`` true block means.

    Parameters
    ----------
    E : array, shape (..., L, L)
        Kernel ``exp(S - c)`` (any shift; ``L`` a multiple of ``n_b``).
    selected : bool array, shape (..., n_b, n_b)

    Returns
    -------
    numpy.ndarray, shape (...)
        Recall in ``[0, 1]`` (ties in the true means: index order).
    """
    E = np.asarray(E, dtype=np.float64)
    M = np.asarray(selected, dtype=bool)
    nb = M.shape[-1]
    if E.shape[-1] % nb or E.shape[:-2] != M.shape[:-2]:
        raise ValueError(f"E {E.shape} and selected {M.shape} do not match")
    b = E.shape[-1] // nb
    *batch, R, C = E.shape
    means = E.reshape(*batch, R // b, b, C // b, b).mean(axis=(-3, -1)).reshape(-1, nb * nb)
    Mf = M.reshape(-1, nb * nb)
    out = np.empty(Mf.shape[0])
    for h in range(Mf.shape[0]):
        k = int(Mf[h].sum())
        if k == 0:
            out[h] = 1.0
            continue
        top = np.argsort(-means[h], kind="stable")[:k]
        out[h] = Mf[h, top].sum() / k
    return out.reshape(batch)

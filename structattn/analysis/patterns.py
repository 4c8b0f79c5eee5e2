"""Attention-pattern metrics: row entropy, mean attention distance, head deviation and
head-to-head similarity (spec ``ssta.md`` §1.4).

Every function takes maps shaped ``(..., H, L, L)`` (any leading batch dimensions),
numpy in → numpy out, torch in → torch out with autograd, and works by blocks of query
rows so that no temporary of the size of a whole map is made besides the input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._array import as_like, describe_array, namespace, validate_float_array
from ._common import (
    check_block_rows,
    check_floor,
    check_maps,
    check_prefix,
    floored_log,
    row_blocks,
    safe_log,
    xlogx_ratio,
)

__all__ = ["head_deviation", "head_similarity", "map_entropy", "mean_attention_distance",
           "patch_coordinates"]

_METRICS = ("js", "kl", "cka")


def map_entropy(P: Any, *, normalized: bool = False, block_rows: int = 256,
                check_finite: bool = True) -> Any:
    """Mean row entropy ``mean_i −Σ_j P_ij log P_ij`` (nats) of each map.

    Parameters
    ----------
    P : array, shape (..., L, L)
        Row-stochastic maps (``0·log 0 = 0``).
    normalized : bool, default False
        Divide by ``log L`` (1 for uniform rows, 0 for one-hot rows).
    block_rows : int, default 256
    check_finite : bool, default True

    Returns
    -------
    array, shape (...)
        One value per map (e.g. ``(B, H)`` for maps ``(B, H, L, L)``).

    Notes
    -----
    ``O(L²)`` per map.  Uniform rows give ``log L``, one-hot rows 0.
    """
    check_maps(P, "P", check_finite=check_finite)
    block_rows = check_block_rows(block_rows)
    xp = namespace(P)
    L = P.shape[-1]
    total = None
    for rows in row_blocks(L, block_rows):
        p = P[..., rows, :]
        h = -xp.sum(xp.sum(p * safe_log(p), axis=-1), axis=-1)
        total = h if total is None else total + h
    out = total / L
    return out / math.log(L) if normalized and L > 1 else out


def patch_coordinates(grid: Sequence[int], *, pixels: float | None = None) -> np.ndarray:
    """Patch centres ``(g_h·g_w, 2)`` as ``(x, y)``, row-major.

    Unit square by default, ``x = (i mod g_w)/(g_w − 1)``, ``y = ⌊i/g_w⌋/(g_h − 1)`` (an
    axis of length 1 has coordinate 0); with ``pixels`` the grid step is ``pixels``
    (e.g. the patch size: the ViT paper's "attention distance in pixels").
    """
    g = _check_grid(grid)
    rows, cols = np.divmod(np.arange(g[0] * g[1]), g[1])
    if pixels is None:
        x = cols / (g[1] - 1) if g[1] > 1 else np.zeros(cols.shape)
        y = rows / (g[0] - 1) if g[0] > 1 else np.zeros(rows.shape)
    else:
        if isinstance(pixels, bool) or not isinstance(pixels, (int, float, np.floating)) or \
                not np.isfinite(pixels) or pixels <= 0:
            raise ValueError(f"pixels must be a finite number > 0, got {pixels!r}")
        x, y = cols * float(pixels), rows * float(pixels)
    return np.stack([x, y], axis=-1).astype(np.float64)


def _check_grid(grid: Any) -> tuple[int, int]:
    if isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):
        grid = (grid, grid)
    try:
        g = tuple(int(s) for s in grid)
        ok = len(g) == 2 and all(s >= 1 for s in g) and all(
            not isinstance(s, bool) and float(s) == int(s) for s in grid)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"grid must be (g_h, g_w) with positive integers (or one int for a "
                         f"square grid; (1, L) for a 1-D sequence), got {grid!r}")
    return g  # type: ignore[return-value]


def mean_attention_distance(P: Any, *, grid: Any, num_prefix_tokens: int = 1,
                            pixels: float | None = None, block_rows: int = 256,
                            check_finite: bool = True) -> Any:
    """Mean attention distance ``mean_i Σ_j P̃_ij ‖c_i − c_j‖₂`` of each map.

    Prefix rows and columns (CLS, distillation tokens) are dropped, the grid rows are
    renormalized (rows with no mass on the grid count as distance 0), and ``c`` are the
    patch centres of :func:`patch_coordinates` (unit square; ``pixels`` for pixel
    units).  For a 1-D sequence use ``grid=(1, L)``: ``|i − j|/(L − 1)``.

    Parameters
    ----------
    P : array, shape (..., L, L)
        Attention maps with ``L = num_prefix_tokens + g_h·g_w``.
    grid : (int, int) or int
        Patch grid ``(g_h, g_w)``; tokens in row-major order after the prefix.
    num_prefix_tokens : int, default 1
    pixels : float, optional
        Grid step in pixels instead of the unit square.
    block_rows : int, default 256
    check_finite : bool, default True

    Returns
    -------
    array, shape (...)
        One distance per map.

    Notes
    -----
    ``O(L²)`` time per map, ``O(block_rows·L)`` extra memory: distances are built per
    row block from the ``O(L)`` coordinates.  Identity maps give 0; uniform maps the mean
    pairwise distance of the grid.
    """
    check_maps(P, "P", check_finite=check_finite)
    L = P.shape[-1]
    n = check_prefix(num_prefix_tokens, L)
    g = _check_grid(grid)
    if g[0] * g[1] != L - n:
        raise ValueError(f"grid {g} has {g[0] * g[1]} tokens but P has L - "
                         f"num_prefix_tokens = {L} - {n} = {L - n}")
    block_rows = check_block_rows(block_rows)
    xp = namespace(P)
    c = as_like(patch_coordinates(g, pixels=pixels), P)
    total = None
    for rows in row_blocks(L - n, block_rows):
        p = P[..., n + rows.start:n + rows.stop, n:]
        diff = c[rows, None, :] - c[None, :, :]
        D = xp.sqrt(xp.sum(diff * diff, axis=-1))
        mass = xp.sum(p, axis=-1)
        num = xp.sum(p * D, axis=-1)
        pos = mass > 0
        d = xp.where(pos, num / xp.where(pos, mass, xp.ones_like(mass)), xp.zeros_like(mass))
        part = xp.sum(d, axis=-1)
        total = part if total is None else total + part
    return total / (L - n)


def head_deviation(P: Any, *, num_prefix_tokens: int = 1, block_rows: int = 256,
                   check_finite: bool = True) -> Any:
    """Head deviation: the standard deviation over heads of ``P``, averaged over entries.

    ``mean_{i,j} std_h P[h, i, j]`` over the grid rows and columns (prefix tokens
    dropped, no renormalization), population std (``ddof = 0``).

    Parameters
    ----------
    P : array, shape (..., H, L, L)
    num_prefix_tokens : int, default 1
    block_rows : int, default 256
    check_finite : bool, default True

    Returns
    -------
    array, shape (...)
        0 when every head has the same map.
    """
    check_maps(P, "P", min_ndim=3, check_finite=check_finite)
    L = P.shape[-1]
    n = check_prefix(num_prefix_tokens, L)
    block_rows = check_block_rows(block_rows)
    xp = namespace(P)
    total = None
    for rows in row_blocks(L - n, block_rows):
        p = P[..., n + rows.start:n + rows.stop, n:]
        mu = xp.mean(p, axis=-3, keepdims=True)
        var = xp.mean((p - mu) ** 2, axis=-3)
        part = xp.sum(xp.sum(xp.sqrt(var), axis=-1), axis=-1)
        total = part if total is None else total + part
    return total / ((L - n) ** 2)


def head_similarity(P: Any, *, metric: str = "js", features: Any = None,
                    floor: float = 1e-12, block_rows: int = 64,
                    check_finite: bool = True) -> Any:
    """Head-to-head similarity (or divergence) matrix of one layer's heads.

    * ``"js"``: Jensen–Shannon divergence ``½KL(P_a‖M) + ½KL(P_b‖M)``, ``M = ½(P_a +
      P_b)``, averaged over rows: symmetric, 0 for identical heads, ``log 2`` for
      disjoint supports (a divergence: smaller = more similar).
    * ``"kl"``: ``KL(P_a ‖ P_b)`` averaged over rows (``P_b`` floored; asymmetric).
    * ``"cka"``: linear CKA ``‖Yᵀ X‖_F² / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F)`` of column-centred
      features ``X = features[a]``, ``Y = features[b]`` (the heads' outputs, shape
      ``(..., H, L, d)``; default: the maps' rows as features): 1 on the diagonal,
      invariant to orthogonal transforms and isotropic scaling of the features.

    Parameters
    ----------
    P : array, shape (..., H, L, L)
    metric : {"js", "kl", "cka"}, default "js"
    features : array, shape (..., H, L, d), optional
        Only for ``"cka"``.
    floor : float, default 1e-12
        ``"kl"`` only.
    block_rows : int, default 64
        Rows per block (``js``/``kl`` temporaries are ``O(H²·block_rows·L)``).
    check_finite : bool, default True

    Returns
    -------
    array, shape (..., H, H)

    Notes
    -----
    ``O(H²·L²)`` for js/kl; ``O(H·L²·d + H²·L²)`` for cka (centred Gram matrices).
    """
    check_maps(P, "P", min_ndim=3, check_finite=check_finite)
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    xp = namespace(P)
    if metric == "cka":
        X = P if features is None else features
        if features is not None:
            validate_float_array(features, "features", min_ndim=3, check_finite=check_finite)
            if tuple(features.shape[:-1]) != tuple(P.shape[:-1]):
                raise ValueError(f"features must be (..., H, L, d) with (..., H, L) = "
                                 f"{tuple(P.shape[:-1])}, got {describe_array(features)}")
        return _cka(X)
    if features is not None:
        raise ValueError(f"features is only used with metric='cka', got metric={metric!r}")
    floor = check_floor(floor)
    block_rows = check_block_rows(block_rows)
    L = P.shape[-1]
    total = None
    for rows in row_blocks(L, block_rows):
        a = P[..., :, None, rows, :]
        b = P[..., None, :, rows, :]
        if metric == "js":
            m = 0.5 * (a + b)
            log_m = safe_log(m)
            kl = 0.5 * (xlogx_ratio(a, log_m) + xlogx_ratio(b, log_m))
        else:
            kl = xlogx_ratio(a, floored_log(b, floor))
        part = xp.sum(kl, axis=-1)
        total = part if total is None else total + part
    return total / L


def _cka(X: Any) -> Any:
    xp = namespace(X)
    Xc = X - xp.mean(X, axis=-2, keepdims=True)
    G = Xc @ xp.matrix_transpose(Xc)  # (..., H, L, L) centred Gram matrices
    H = G.shape[-3]
    flat = xp.reshape(G, (*G.shape[:-2], G.shape[-1] * G.shape[-2]))
    S = flat @ xp.matrix_transpose(flat)  # (..., H, H): <G_a, G_b>_F = ‖X_bᵀ X_a‖_F²
    diag = xp.sqrt(xp.stack([S[..., h, h] for h in range(H)], axis=-1))
    den = diag[..., :, None] * diag[..., None, :]
    pos = den > 0
    return xp.where(pos, S / xp.where(pos, den, xp.ones_like(den)), xp.zeros_like(S))

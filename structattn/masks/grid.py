"""d-dimensional relative-position masks on grids: ``M[i, j] = f(p_i − p_j)``.

Tokens sit on a full ``n_1 x … x n_d`` grid flattened row-major (the last axis varies
fastest), optionally preceded by special (CLS) tokens.  A function of the offset
``Δ = p_i − p_j`` makes the grid block of the mask a d-level block-Toeplitz matrix
(masks.md §2.4):

* :class:`GridRPE` — any ``f`` (tabulated over the ``Π_t (2n_t − 1)`` offsets); products
  by a d-dimensional real FFT of the zero-padded grid (``O(2^d·L log(2^d·L))`` per
  column) or, for small grids, by the dense matrix; the choice follows
  :meth:`GridRPE.cost`.  Special tokens and padding are handled blockwise without
  breaking the structure.
* :func:`separable_grid` — ``f(Δ) = Π_t f_t(Δ_t)``: the Kronecker product of 1-D
  :class:`~structattn.masks.Toeplitz` masks, ``O(L·Σ_t log n_t)`` per column with no
  ``2^d`` padding blow-up.

Index convention (also printed in :class:`GridRPE`): ``coeffs[..., Δ_1 + n_1 − 1, …,
Δ_d + n_d − 1]`` is ``f(Δ)``, offsets ``Δ_t = (p_i)_t − (p_j)_t`` from query ``i`` to
key ``j``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .. import _fft
from .._array import as_like, describe_array, dtype_name, index_like, is_numpy, is_torch, namespace
from .base import CostDispatch, Mask
from .composition import Kronecker
from .toeplitz import FFT_COST_FACTOR, Toeplitz

__all__ = ["GridRPE", "separable_grid"]

_METHODS = ("auto", "fft", "dense")


# ----------------------------------------------------------------- grid helpers
def _check_grid_shape(shape: Any, name: str = "shape") -> tuple[int, ...]:
    """A non-empty tuple of positive ints (an int is a 1-D grid)."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        tup = tuple(shape)
    except TypeError:
        raise TypeError(
            f"{name} must be a tuple of positive integers (grid sizes n_1, …, n_d), got "
            f"{shape!r}"
        ) from None
    if not tup or any(
        isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 for n in tup
    ):
        raise ValueError(
            f"{name} must be a non-empty tuple of positive integers (grid sizes n_1, …, "
            f"n_d), got {shape!r}"
        )
    return tuple(int(n) for n in tup)


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


def _check_float_array(x: Any, name: str) -> Any:
    """Array-likes become numpy float64; arrays must be float32/float64 and finite."""
    if not (is_numpy(x) or is_torch(x)):
        if isinstance(x, (list, tuple)):
            x = np.asarray(x, dtype=np.float64)
        else:
            raise TypeError(
                f"{name} must be a numpy.ndarray or torch.Tensor, got {type(x).__name__}"
            )
    if dtype_name(x) not in ("float32", "float64"):
        raise TypeError(f"{name} must be float32 or float64, got {dtype_name(x)}")
    xp = namespace(x)
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{name} contains NaN or Inf values ({describe_array(x)})")
    return x


def _check_method(method: Any) -> str:
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    return method


# ----------------------------------------------------------------------- GridRPE
@dataclass(frozen=True, eq=False, init=False)
class GridRPE(CostDispatch, Mask):
    """d-dimensional relative-position mask ``M[i, j] = f(p_i − p_j)`` on a grid.

    Tokens are the ``Lg = n_1·…·n_d`` points of a full grid flattened row-major,
    preceded by ``num_special`` special (CLS) tokens: ``L = num_special + Lg``.  The grid
    block is d-level block Toeplitz; the special rows and columns are ``special_value``
    (a CLS query attends to every token, and every query attends to CLS, with that
    weight).  Padded grid positions get zero rows and columns (``M' = D M D``).

    Parameters
    ----------
    shape : tuple of int
        Grid shape ``(n_1, …, n_d)``, every ``n_t >= 1`` (an int is a 1-D grid).
    coeffs : array, shape (..., 2n_1 − 1, …, 2n_d − 1), optional
        numpy array or torch tensor (float32/float64); ``coeffs[..., Δ_1 + n_1 − 1, …,
        Δ_d + n_d − 1] = f(Δ)`` for offsets ``Δ = p_i − p_j`` (query minus key).  Leading
        dimensions are batch (e.g. one mask per head).  A torch tensor with
        ``requires_grad`` receives gradients (learnable relative positions).
    function : callable, optional
        Instead of ``coeffs``: ``function(Δ_1, …, Δ_d)`` receives integer offset grids
        of shape ``(2n_1 − 1, …, 2n_d − 1)`` (as ``np.meshgrid(..., indexing="ij")``) and
        returns ``f`` on them (any leading batch dims; numpy results are broadcast).  It
        is evaluated once, at construction.  Exactly one of ``coeffs`` and ``function``.
    log : bool, default False
        The coefficients are log-values ``b``: the grid block is ``exp(b)`` (see
        :meth:`from_log`).  ``special_value`` is never exponentiated.
    num_special : int, default 0
        Number of special tokens in front of the grid tokens.
    special_value : float or array, default 1.0
        Value of every entry in a special row or column: a finite real, or an array
        broadcastable to the batch shape (e.g. one learnable CLS weight per head).
    padding : bool array, shape (..., n_1, …, n_d), optional
        True for real tokens, False for padding; leading dims broadcast with the batch.
        Special tokens are always real.  Padded queries get empty mask rows, so attention
        returns zeros for them.
    method : {"auto", "fft", "dense"}
        Algorithm for the grid block; ``"auto"`` takes the cheaper one by :meth:`cost`.

    Notes
    -----
    Products ``M X`` for ``X`` of shape ``(..., L, F)`` are blockwise: the grid rows of
    ``X`` are multiplied by ``D``, reshaped to ``(..., n_1, …, n_d, F)``, zero-padded to
    ``P_t = next_fast_length(2n_t − 1)`` per axis, multiplied in the Fourier domain by the
    spectrum of the wrapped kernel ``G[k mod P] = f(k)``, inverted and cropped —
    ``O(F·P log P)`` time with ``P = ΠP_t ≈ 2^d·Lg`` and ``O(P·F)`` memory; the dense path
    costs ``O(Lg²·F)``.  The special part is column sums and broadcasts, ``O(L·F)``: the
    mask is never materialized.  ``Mᵀ`` is the mask of the point-reflected coefficients
    ``f(−Δ)`` (same special tokens and padding).  The FFT error is normwise,
    ``~u·log P·‖f‖·‖x‖`` (masks.md §3: keep ``exp(b)`` in a moderate range).  For a
    separable ``f`` use :func:`separable_grid` (no ``2^d`` blow-up).

    Examples
    --------
    A 2 x 2 grid with one CLS token: ``coeffs[Δ_1 + 1, Δ_2 + 1] = 10·Δ_1 + Δ_2``; entries
    of the special row and column are ``special_value = 0.5``:

    >>> import numpy as np
    >>> from structattn.masks import GridRPE
    >>> d1, d2 = np.meshgrid(np.arange(-1, 2), np.arange(-1, 2), indexing="ij")
    >>> GridRPE((2, 2), 10.0 * d1 + d2, num_special=1, special_value=0.5).to_dense()
    array([[  0.5,   0.5,   0.5,   0.5,   0.5],
           [  0.5,   0. ,  -1. , -10. , -11. ],
           [  0.5,   1. ,   0. ,  -9. , -10. ],
           [  0.5,  10. ,   9. ,   0. ,  -1. ],
           [  0.5,  11. ,  10. ,   1. ,   0. ]])
    """

    grid_shape: tuple[int, ...]
    coeffs: Any
    log: bool
    num_special: int
    special_value: Any
    padding: Any
    method: str

    def __init__(
        self,
        shape: Sequence[int] | int,
        coeffs: Any = None,
        *,
        function: Callable[..., Any] | None = None,
        log: bool = False,
        num_special: int = 0,
        special_value: Any = 1.0,
        padding: Any = None,
        method: str = "auto",
    ) -> None:
        grid = _check_grid_shape(shape)
        d = len(grid)
        want = offset_shape(grid)
        if (coeffs is None) == (function is None):
            raise ValueError(
                "give exactly one of coeffs (an offset table of shape (..., "
                f"{', '.join(map(str, want))})) and function; got "
                f"{'both' if coeffs is not None else 'neither'}"
            )
        if function is not None:
            if not callable(function):
                raise TypeError(f"function must be callable, got {type(function).__name__}")
            offsets = np.meshgrid(*(np.arange(-(n - 1), n) for n in grid), indexing="ij")
            values = function(*offsets)
            if not is_torch(values):
                values = np.asarray(values, dtype=np.float64)
                if values.shape[values.ndim - d:] != want:
                    try:
                        values = np.broadcast_to(
                            values, (*np.broadcast_shapes(values.shape, want)[:-d], *want)
                        ).copy()
                    except ValueError:
                        raise ValueError(
                            f"function must return f on the offset grids, shape (..., "
                            f"{', '.join(map(str, want))}) for grid shape {grid}; got shape "
                            f"{values.shape}"
                        ) from None
            coeffs, name = values, "function(...)"
        else:
            name = "coeffs"
        coeffs = _check_float_array(coeffs, name)
        if coeffs.ndim < d or tuple(coeffs.shape[coeffs.ndim - d:]) != want:
            raise ValueError(
                f"{name} must have trailing shape (2n_1 - 1, …, 2n_d - 1) = {want} for grid "
                f"shape {grid} (offsets -(n_t-1) … n_t-1 per axis), got "
                f"{describe_array(coeffs)}"
            )
        if not isinstance(log, (bool, np.bool_)):
            raise TypeError(f"log must be a bool, got {log!r}")
        if (isinstance(num_special, bool) or not isinstance(num_special, (int, np.integer))
                or num_special < 0):
            raise ValueError(f"num_special must be a non-negative integer, got {num_special!r}")
        batch = tuple(coeffs.shape[: coeffs.ndim - d])
        special_value, sv_batch = _check_special_value(special_value)
        padding, pad_batch = _check_padding(padding, grid)
        try:
            np.broadcast_shapes(batch, sv_batch, pad_batch)
        except ValueError:
            raise ValueError(
                "leading (batch) dimensions do not broadcast: coeffs "
                f"{batch}, special_value {sv_batch}, padding {pad_batch}"
            ) from None
        for fld, value in (
            ("grid_shape", grid), ("coeffs", coeffs), ("log", bool(log)),
            ("num_special", int(num_special)), ("special_value", special_value),
            ("padding", padding), ("method", _check_method(method)),
        ):
            object.__setattr__(self, fld, value)

    # ----------------------------------------------------------------- builders
    @classmethod
    def from_log(
        cls,
        b: Any,
        shape: Sequence[int] | int,
        *,
        num_special: int = 0,
        special_value: Any = 1.0,
        padding: Any = None,
        method: str = "auto",
    ) -> GridRPE:
        """The positive mask ``exp(b)`` from log-coefficients ``b (..., 2n_1 − 1, …)``.

        ``b`` is the bias a softmax relative-position encoding would add to the logits;
        multiplying kernel attention by ``exp(b)`` is the same thing.  Attention uses
        :meth:`_normalized`, which shifts ``b`` by its maximum per batch element.
        """
        return cls(shape, b, log=True, num_special=num_special, special_value=special_value,
                   padding=padding, method=method)

    def _replace(self, **changes: Any) -> GridRPE:
        """A copy with some fields changed (no re-validation: inputs derive from valid ones)."""
        new = object.__new__(type(self))
        for f in fields(self):
            object.__setattr__(new, f.name, changes.get(f.name, getattr(self, f.name)))
        return new

    # ---------------------------------------------------------------- structure
    @property
    def grid_size(self) -> int:
        """Number of grid tokens ``Lg = Π n_t``."""
        return math.prod(self.grid_shape)

    @property
    def shape(self) -> tuple[int, int]:
        L = self.num_special + self.grid_size
        return (L, L)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        d = len(self.grid_shape)
        shapes = [tuple(self.coeffs.shape[: self.coeffs.ndim - d])]
        if not isinstance(self.special_value, float):
            shapes.append(tuple(self.special_value.shape))
        if self.padding is not None:
            shapes.append(tuple(self.padding.shape[: self.padding.ndim - d]))
        return tuple(np.broadcast_shapes(*shapes))

    @property
    def nonnegative(self) -> bool:  # type: ignore[override]
        grid_ok = bool(self.log) or bool(namespace(self.coeffs).all(self.coeffs >= 0))
        if self.num_special == 0:
            return grid_ok
        sv = self.special_value
        sv_ok = sv >= 0 if isinstance(sv, float) else bool(namespace(sv).all(sv >= 0))
        return grid_ok and sv_ok

    @property
    def lower_triangular(self) -> bool:  # type: ignore[override]
        if self.shape[0] == 1:
            return True
        if self.num_special or self.log:
            return False
        grid = self.grid_shape
        strides = np.cumprod((1, *grid[:0:-1]))[::-1]
        offsets = np.meshgrid(*(np.arange(-(n - 1), n) for n in grid), indexing="ij")
        upper = sum(o * int(st) for o, st in zip(offsets, strides, strict=True)) < 0
        return bool(np.all(_to_numpy(self.coeffs)[..., upper] == 0))

    @property
    def T(self) -> GridRPE:
        """``Mᵀ``: the mask of the point-reflected coefficients ``f(−Δ)``."""
        return self._transposed()

    def _parameters(self) -> tuple[Any, ...]:
        params = [self.coeffs]
        if not isinstance(self.special_value, float):
            params.append(self.special_value)
        return tuple(params)

    def _coefficients(self, like: Any) -> Any:
        c = self._param_like("coeffs", self.coeffs, like)
        return namespace(c).exp(c) if self.log else c

    def _special(self, like: Any) -> Any:
        """``special_value`` as a float or an array of shape (*sv_batch, 1, 1)."""
        sv = self.special_value
        if isinstance(sv, float):
            return float(sv)  # a numpy float64 scalar would promote float32 products
        return as_like(sv, like)[..., None, None]

    def _pad(self, like: Any) -> Any:
        """Padding as a ``(*pad_batch, Lg, 1)`` 0/1 array of ``like``'s kind (or None)."""
        if self.padding is None:
            return None
        d = len(self.grid_shape)
        pad = self._param_like("padding", self.padding, like)
        return namespace(like).reshape(
            pad, (*pad.shape[: pad.ndim - d], self.grid_size, 1)
        )

    def _normalized(self) -> Mask:
        if not self.log:
            return self
        xp = namespace(self.coeffs)
        d = len(self.grid_shape)
        axes = tuple(range(-d, 0))
        shift = xp.max(self.coeffs, axis=axes)  # (*coeff_batch,)
        sv = self.special_value
        if self.num_special == 0:
            return self._replace(coeffs=self.coeffs - shift[(..., *(None,) * d)])
        # shift by max(max b, log special_value) per batch element: every entry <= 1
        if isinstance(sv, float):
            if sv > 0:
                shift = xp.clip(shift, min=math.log(sv))
        else:
            sv = as_like(sv, self.coeffs)
            with np.errstate(divide="ignore"):
                shift = xp.maximum(shift, xp.log(xp.clip(sv, min=0.0)))
        new_sv = sv * xp.exp(-shift)
        return self._replace(coeffs=self.coeffs - shift[(..., *(None,) * d)],
                             special_value=new_sv)

    def _hadamard_fused(self, other: Mask) -> Mask | None:
        """⊙ a (decayed) causal mask over the row-major order: still a grid RPE mask.

        ``i >= j`` in the flattened order iff the flat offset ``δ = Σ_t Δ_t·stride_t``
        is ``>= 0`` (``|Δ_t| < n_t``), so the causal weight ``γ^δ [δ >= 0]`` is a
        function of the offset and folds into the coefficients.
        """
        from .causal import _CausalBase
        from .composition import Scaled

        if (not isinstance(other, _CausalBase) or other.L != self.shape[0]
                or self.num_special):
            return None
        grid = self.grid_shape
        strides = np.cumprod((1, *grid[:0:-1]))[::-1]
        offsets = np.meshgrid(*(np.arange(-(n - 1), n) for n in grid), indexing="ij")
        delta = sum(o * int(st) for o, st in zip(offsets, strides, strict=True))
        keep = delta > 0 if other.exclusive else delta >= 0
        with np.errstate(under="ignore"):
            weight = np.where(keep, other.gamma ** np.maximum(delta, 0), 0.0)
        w = as_like(weight, self.coeffs)
        if not self.log:
            return self._replace(coeffs=self.coeffs * w)
        xp = namespace(self.coeffs)
        shift = float(xp.max(self.coeffs))  # a constant: gradients flow through exp(b - s)
        return Scaled(self._replace(coeffs=xp.exp(self.coeffs - shift) * w, log=False),
                      math.exp(shift))

    def _transposed(self) -> GridRPE:
        d = len(self.grid_shape)
        xp = namespace(self.coeffs)
        flipped = xp.flip(self.coeffs, axis=tuple(range(self.coeffs.ndim - d, self.coeffs.ndim)))
        return self._replace(coeffs=flipped)

    # ------------------------------------------------------------------ cost
    def _costs(self, F: int) -> dict[str, float]:
        batch = max(1, math.prod(self.batch_shape))
        costs = grid_costs(self.grid_shape, F, batch)
        extra = 4.0 * self.shape[0] * F * batch if (self.num_special or self.padding
                                                    is not None) else 0.0
        return {k: v + extra for k, v in costs.items()}

    def cost(self, F: int) -> float:
        """Estimated flops of one product with ``F`` columns (the dispatched method).

        FFT: ``FFT_COST_FACTOR·(F·(5·P log₂P + 4P) + 2.5·P log₂P)`` with
        ``P = Π next_fast_length(2n_t − 1)``; dense: ``2·Lg²·F``; plus ``4·L·F`` for
        special tokens and padding; per batch element of the mask.
        """
        return self._costs(F)[self._choose(F)]

    # --------------------------------------------------------------- products
    def _matmat(self, X: Any, backend: str) -> Any:
        xp = namespace(X)
        S, F = self.num_special, int(X.shape[-1])
        c = self._coefficients(X)
        Xg = X[..., S:, :]
        pad = self._pad(X)
        if pad is not None:
            Xg = Xg * pad
        if self._choose(F) == "dense":
            Yg = grid_dense(c, self.grid_shape, X) @ Xg
        else:
            Yg = grid_fft_apply(c, Xg, self.grid_shape)
        if S == 0:
            return Yg * pad if pad is not None else Yg
        sv = self._special(X)
        lead = tuple(np.broadcast_shapes(tuple(X.shape[:-2]), self.batch_shape))
        special_sum = xp.sum(X[..., :S, :], axis=-2, keepdims=True)  # (..., 1, F)
        Yg = Yg + sv * special_sum
        if pad is not None:
            Yg = Yg * pad
        total = special_sum + xp.sum(Xg, axis=-2, keepdims=True)
        Ys = xp.broadcast_to(sv * total, (*lead, S, F))
        Yg = xp.broadcast_to(Yg, (*lead, self.grid_size, F))
        return xp.concat([Ys, Yg], axis=-2)

    def _rmatmat(self, X: Any, backend: str) -> Any:
        return self._transposed()._matmat(X, backend)

    def _to_dense(self, like: Any) -> Any:
        xp = namespace(like)
        S, Lg = self.num_special, self.grid_size
        lead = self.batch_shape
        Mg = grid_dense(self._coefficients(like), self.grid_shape, like)
        pad = self._pad(like)
        if pad is not None:
            Mg = Mg * pad * xp.matrix_transpose(pad)
        Mg = xp.broadcast_to(Mg, (*lead, Lg, Lg))
        if S == 0:
            return Mg
        sv = self._special(like)
        ones = as_like(np.ones((Lg, 1)), like)
        col = ones if pad is None else pad  # (..., Lg, 1)
        top = xp.concat([
            xp.broadcast_to(sv * as_like(np.ones((S, S)), like), (*lead, S, S)),
            xp.broadcast_to(sv * xp.matrix_transpose(col), (*lead, S, Lg)),
        ], axis=-1)
        bottom = xp.concat([xp.broadcast_to(sv * col, (*lead, Lg, S)), Mg], axis=-1)
        return xp.concat([top, bottom], axis=-2)

    def _structure(self) -> str:
        d = len(self.grid_shape)
        grid = "x".join(map(str, self.grid_shape))
        what = "exp(log-coefficients)" if self.log else "coefficients"
        extras = []
        if self.num_special:
            extras.append(f"{self.num_special} special token(s) by column sums")
        if self.padding is not None:
            extras.append("padding D M D")
        extra = f"; {', '.join(extras)}" if extras else ""
        return (f"{d}-level block Toeplitz on a {grid} grid ({what}): {d}-d real FFT, "
                f"P={fft_lengths(self.grid_shape)}, or dense for small grids (by cost)"
                f"{extra}")


def _to_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if is_torch(x) else np.asarray(x)


def _check_special_value(value: Any) -> tuple[Any, tuple[int, ...]]:
    if is_numpy(value) or is_torch(value):
        if dtype_name(value) not in ("float32", "float64"):
            raise TypeError(
                f"special_value must be a real number or a float32/float64 array, got "
                f"{describe_array(value)}"
            )
        xp = namespace(value)
        if not bool(xp.all(xp.isfinite(value))):
            raise ValueError(f"special_value contains NaN or Inf ({describe_array(value)})")
        return value, tuple(value.shape)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"special_value must be a real number or an array, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"special_value must be finite, got {value!r}")
    return float(value), ()


def _check_padding(padding: Any, grid: tuple[int, ...]) -> tuple[Any, tuple[int, ...]]:
    if padding is None:
        return None, ()
    if not (is_numpy(padding) or is_torch(padding)):
        padding = np.asarray(padding)
    if dtype_name(padding) != "bool":
        raise TypeError(
            f"padding must be a boolean array (True = real token), got "
            f"{describe_array(padding)}"
        )
    d = len(grid)
    if padding.ndim < d or tuple(padding.shape[padding.ndim - d:]) != grid:
        raise ValueError(
            f"padding must have shape (..., {', '.join(map(str, grid))}) (one flag per grid "
            f"position), got shape {tuple(padding.shape)}"
        )
    return padding, tuple(padding.shape[: padding.ndim - d])


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

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

from .._array import as_like, describe_array, is_torch, namespace, to_numpy
from .._validate import renamed_keyword
from ._grid_checks import (
    _check_float_array,
    _check_grid_shape,
    _check_key_mask,
    _check_method,
    _check_special_value,
)
from ._grid_numerics import (  # noqa: F401  (also imported from here by ripple.py)
    dense_index,
    fft_lengths,
    grid_costs,
    grid_dense,
    grid_fft_apply,
    offset_shape,
)
from ._grid_separable import separable_grid
from .base import CostDispatch, Mask

__all__ = ["GridRPE", "separable_grid"]


# ----------------------------------------------------------------------- GridRPE
@dataclass(frozen=True, eq=False, init=False)
class GridRPE(CostDispatch, Mask):
    """d-dimensional relative-position mask ``M[i, j] = f(p_i − p_j)`` on a grid.

    Tokens are the ``Lg = n_1·…·n_d`` points of a full grid flattened row-major,
    preceded by ``num_special`` special (CLS) tokens: ``L = num_special + Lg``.  The grid
    block is d-level block Toeplitz; the special rows and columns are ``special_value``
    (a CLS query attends to every token, and every query attends to CLS, with that
    weight).  Grid positions outside ``key_mask`` (padding) get zero rows and columns
    (``M' = D M D``).

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
    key_mask : bool array, shape (..., n_1, …, n_d), optional
        **True = a real token** (attended), False = padding — the library's one
        boolean-mask convention, as ``mra_attention(key_mask=)``; leading dims broadcast
        with the batch.  Special tokens are always real.  Padded queries get empty mask
        rows, so attention returns zeros for them.
    padding : bool array, optional
        Deprecated name of ``key_mask`` (same meaning, True = real token); it still
        works, with a ``DeprecationWarning``.  Passing both is a ``TypeError``.
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
    key_mask: Any
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
        key_mask: Any = None,
        padding: Any = None,
        method: str = "auto",
    ) -> None:
        mask_name = _refuse_both(key_mask, padding, "GridRPE")
        key_mask = renamed_keyword({} if padding is None else {"padding": padding}, "padding",
                                   "key_mask", key_mask, None, "GridRPE")
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
        key_mask, pad_batch = _check_key_mask(key_mask, grid, mask_name)
        try:
            np.broadcast_shapes(batch, sv_batch, pad_batch)
        except ValueError:
            raise ValueError(
                "leading (batch) dimensions do not broadcast: coeffs "
                f"{batch}, special_value {sv_batch}, {mask_name} {pad_batch}"
            ) from None
        for fld, value in (
            ("grid_shape", grid), ("coeffs", coeffs), ("log", bool(log)),
            ("num_special", int(num_special)), ("special_value", special_value),
            ("key_mask", key_mask), ("method", _check_method(method)),
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
        key_mask: Any = None,
        padding: Any = None,
        method: str = "auto",
    ) -> GridRPE:
        """The positive mask ``exp(b)`` from log-coefficients ``b (..., 2n_1 − 1, …)``.

        ``b`` is the bias a softmax relative-position encoding would add to the logits;
        multiplying kernel attention by ``exp(b)`` is the same thing.  Attention uses
        :meth:`_normalized`, which shifts ``b`` by its maximum per batch element.
        ``key_mask`` (deprecated name ``padding``) is as in :class:`GridRPE`.
        """
        _refuse_both(key_mask, padding, "GridRPE.from_log")
        key_mask = renamed_keyword({} if padding is None else {"padding": padding}, "padding",
                                   "key_mask", key_mask, None, "GridRPE.from_log")
        return cls(shape, b, log=True, num_special=num_special, special_value=special_value,
                   key_mask=key_mask, method=method)

    def _replace(self, **changes: Any) -> GridRPE:
        """A copy with some fields changed (no re-validation: inputs derive from valid ones)."""
        new = object.__new__(type(self))
        for f in fields(self):
            object.__setattr__(new, f.name, changes.get(f.name, getattr(self, f.name)))
        return new

    # ---------------------------------------------------------------- structure
    @property
    def padding(self) -> Any:
        """Deprecated alias of :attr:`key_mask` (True = real token)."""
        return self.key_mask

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
        if self.key_mask is not None:
            shapes.append(tuple(self.key_mask.shape[: self.key_mask.ndim - d]))
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
        return bool(np.all(to_numpy(self.coeffs)[..., upper] == 0))

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
        if self.key_mask is None:
            return None
        d = len(self.grid_shape)
        pad = self._param_like("key_mask", self.key_mask, like)
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
        extra = 4.0 * self.shape[0] * F * batch if (self.num_special or self.key_mask
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
        if self.key_mask is not None:
            extras.append("padding D M D")
        extra = f"; {', '.join(extras)}" if extras else ""
        return (f"{d}-level block Toeplitz on a {grid} grid ({what}): {d}-d real FFT, "
                f"P={fft_lengths(self.grid_shape)}, or dense for small grids (by cost)"
                f"{extra}")


def _refuse_both(key_mask: Any, padding: Any, where: str) -> str:
    """The name of the boolean key mask given (``padding``: the deprecated one); both: error."""
    if padding is None:
        return "key_mask"
    if key_mask is not None:
        raise TypeError(
            f"{where}: pass key_mask= only (padding= is its deprecated name, same meaning: "
            "True = a real token)"
        )
    return "padding"

"""Ripple masks (Zheng, Pan & Kong, ICML 2022): weights of square rings on an image grid.

Tokens are the ``H x W`` pixels (patches) of an image flattened row-major,
``L = H·W``.  Key ``j`` belongs to ring ``r(i, j) = max(|Δrow|, |Δcol|)`` (Chebyshev
distance) around query ``i`` and the mask is ``M[i, j] = α_{r(i, j)}``; rings at or
beyond the cutoff ``r̂`` share one tail weight ``ᾱ`` (masks.md §2.7).

Two exact algorithms:

* summed-area tables (``"sat"``): a 2-D prefix-sum table of the ``(H, W, F)`` block,
  box sums of the clipped ``(2r + 1)²`` squares by four lookups, and the telescoped
  rings ``y_i = Σ_{r<r̂} (α_r − α_{r+1}) B_r(i) + ᾱ·B_total`` (``α_{r̂} := ᾱ``) —
  ``O(L·r̂·F)``; the registered kernel ``"ripple_sat"`` (numba for numpy arrays, a
  vectorised differentiable implementation for torch);
* the d-dim RPE FFT route (``"fft"``): :class:`~structattn.masks.GridRPE` with
  ``f(Δ) = α_{min(‖Δ‖_∞, r̂)}``, ``O(L log L·F)`` for any ``r̂``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._array import describe_array, index_like, namespace
from ..backends import kernel
from .base import CostDispatch, Mask
from .grid import (
    _check_float_array,
    _check_grid_shape,
    grid_costs,
    grid_dense,
    grid_fft_apply,
    offset_shape,
)

__all__ = ["SAT_COST_FACTOR", "Ripple", "stick_breaking"]

#: Cost of one summed-area-table flop relative to one dense-product flop, on the same
#: scale as :data:`~structattn.masks.toeplitz.FFT_COST_FACTOR` (measured with the numba
#: kernel against the grid FFT, one thread, 32² … 128² grids, F = 64: ~0.6 ns per
#: position, column and radius against ~80–100 ns per position and column for the FFT);
#: it moves the SAT/FFT crossover of ``method="auto"``.
SAT_COST_FACTOR = 1.6

#: Flop-equivalents per table entry of the (memory-bound) float64 table build.
_SAT_TABLE_COST = 40.0

_METHODS = ("auto", "sat", "fft", "dense")


def stick_breaking(logits: Any) -> Any:
    """Ring weights from stick-breaking logits.

    Parameters
    ----------
    logits : array, shape (..., r̂)
        numpy array or torch tensor.

    Returns
    -------
    array, shape (..., r̂ + 1)
        ``(α_0, …, α_{r̂−1}, ᾱ)`` with ``β_r = sigmoid(logits_r)``,
        ``α_r = β_r·Π_{s<r} (1 − β_s)`` and ``ᾱ = Π_{s<r̂} (1 − β_s)``: nonnegative and
        summing to one (``Σ_{r<r̂} α_r + ᾱ = 1``, the stick is broken ``r̂`` times and the
        rest goes to the tail).  Computed in log space (``log β = −log(1 + e^{−l})``),
        so large logits neither overflow nor lose the small pieces.
    """
    xp = namespace(logits)
    zero = xp.zeros_like(logits[..., :1])
    log_beta = -xp.logaddexp(xp.zeros_like(logits), -logits)  # log sigmoid(l)
    log_rest = -xp.logaddexp(xp.zeros_like(logits), logits)  # log (1 - sigmoid(l))
    before = xp.concat([zero, xp.cumsum(log_rest, axis=-1)], axis=-1)  # Σ_{s<r}, r = 0 … r̂
    return xp.exp(xp.concat([log_beta + before[..., :-1], before[..., -1:]], axis=-1))


def _ring_index(H: int, W: int, cutoff: int) -> np.ndarray:
    """``min(max(|Δrow|, |Δcol|), r̂)`` over the ``(2H − 1, 2W − 1)`` offset table."""
    dr = np.abs(np.arange(-(H - 1), H))[:, None]
    dc = np.abs(np.arange(-(W - 1), W))[None, :]
    return np.minimum(np.maximum(dr, dc), cutoff)


@dataclass(frozen=True, eq=False, init=False)
class Ripple(CostDispatch, Mask):
    """Ripple mask on an ``H x W`` grid: ``M[i, j] = α_{r(i, j)}``, ``r = ‖p_i − p_j‖_∞``.

    Parameters
    ----------
    shape : (int, int)
        Grid ``(H, W)``; tokens flattened row-major, ``L = H·W``.
    weights : array, shape (..., r̂ + 1), optional
        ``(α_0, …, α_{r̂−1}, ᾱ)``: one weight per ring ``r < r̂`` and the tail weight
        ``ᾱ`` shared by every ring ``r >= r̂``.  Must be ``>= 0`` (``ValueError``
        otherwise; nonnegative masks keep attention normalizers positive).  Leading
        dimensions are batch (e.g. per head).  numpy array, torch tensor (gradients flow
        to it) or a list.
    stick_breaking_logits : array, shape (..., r̂), optional
        Instead of ``weights``: ``β_r = sigmoid(logit_r)``,
        ``α_r = β_r·Π_{s<r} (1 − β_s)`` for ``r < r̂`` and ``ᾱ = Π_{s<r̂} (1 − β_s)``
        (:func:`stick_breaking`; the weights sum to one,
        ``Σ_{r<r̂} α_r + ᾱ = 1``).  Recomputed from the logits at every product, so a
        torch tensor with ``requires_grad`` is a learnable ripple.  Exactly one of
        ``weights`` and ``stick_breaking_logits``.
    cutoff : int, optional
        ``r̂``, with ``1 <= r̂ <= max(H, W)``; inferred from the parameter length, and
        checked against it when given.  ``r̂ = max(H, W)`` gives every ring its own
        weight (the tail is then empty).
    method : {"auto", "sat", "fft", "dense"}
        ``"sat"``: summed-area tables, ``O(L·r̂·F)``; ``"fft"``: the grid-RPE FFT with
        ``f(Δ) = α_{min(‖Δ‖_∞, r̂)}``, ``O(L log L·F)``; ``"dense"``: ``O(L²·F)``;
        ``"auto"`` takes the cheapest by :meth:`cost`.

    Notes
    -----
    The SAT kernel (``"ripple_sat"``) accumulates the prefix-sum table in float64 for
    float32 inputs too (numba and torch, except on devices without float64): box sums
    are differences of prefix sums that grow like ``L·max|X|``, so a float32 table
    would lose ``~u·L`` relative accuracy on small boxes.  ``M`` is symmetric:
    ``Mᵀ = M`` (:attr:`T` is the mask itself).  Masked attention products
    ``(M ⊙ A Bᵀ) V`` apply the mask to the ``m·d_v`` columns ``B_j ⊗ V_j``.

    Examples
    --------
    A 2 x 3 grid, ``α_0 = 1`` on the diagonal and a tail weight ``0.25`` (``r̂ = 1``):

    >>> from structattn.masks import Ripple
    >>> Ripple((2, 3), [1.0, 0.25]).to_dense()
    array([[1.  , 0.25, 0.25, 0.25, 0.25, 0.25],
           [0.25, 1.  , 0.25, 0.25, 0.25, 0.25],
           [0.25, 0.25, 1.  , 0.25, 0.25, 0.25],
           [0.25, 0.25, 0.25, 1.  , 0.25, 0.25],
           [0.25, 0.25, 0.25, 0.25, 1.  , 0.25],
           [0.25, 0.25, 0.25, 0.25, 0.25, 1.  ]])
    """

    grid_shape: tuple[int, int]
    weights: Any
    stick_breaking_logits: Any
    cutoff: int
    method: str

    def __init__(
        self,
        shape: Sequence[int],
        weights: Any = None,
        *,
        stick_breaking_logits: Any = None,
        cutoff: int | None = None,
        method: str = "auto",
    ) -> None:
        grid = _check_grid_shape(shape)
        if len(grid) != 2:
            raise ValueError(f"shape must be a 2-D grid (H, W), got {shape!r}")
        H, W = grid
        if (weights is None) == (stick_breaking_logits is None):
            raise ValueError(
                "give exactly one of weights (α_0 … α_{r̂-1}, tail) and "
                f"stick_breaking_logits (length r̂); got "
                f"{'both' if weights is not None else 'neither'}"
            )
        if weights is not None:
            name, param, extra = "weights", _check_float_array(weights, "weights"), 1
        else:
            name, extra = "stick_breaking_logits", 0
            param = _check_float_array(stick_breaking_logits, name)
        if param.ndim < 1:
            raise ValueError(
                f"{name} must have shape (..., r̂{' + 1' if extra else ''}), got "
                f"{describe_array(param)}"
            )
        length = int(param.shape[-1]) - extra

        def check_range(r: int, source: str) -> None:
            if not 1 <= r <= max(H, W):
                raise ValueError(
                    f"cutoff r̂ must satisfy 1 <= r̂ <= max(H, W) = {max(H, W)} for grid "
                    f"shape {grid}, got r̂ = {r} ({source})"
                )

        if cutoff is not None:
            if isinstance(cutoff, bool) or not isinstance(cutoff, (int, np.integer)):
                raise TypeError(f"cutoff must be an int, got {cutoff!r}")
            check_range(int(cutoff), "cutoff")
            if int(cutoff) != length:
                raise ValueError(
                    f"cutoff={cutoff} does not match {name} of length {param.shape[-1]} "
                    f"(expected r̂{' + 1' if extra else ''} = "
                    f"{int(cutoff) + extra} entries)"
                )
        check_range(length, f"from {name} of shape {tuple(param.shape)}")
        if weights is not None and not bool(namespace(param).all(param >= 0)):
            raise ValueError(
                f"ring weights must be >= 0 (a nonnegative mask keeps attention normalizers "
                f"positive); got {name} with negative entries ({describe_array(param)}); "
                "use stick_breaking_logits for an unconstrained parameterisation"
            )
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        for fld, value in (
            ("grid_shape", grid),
            ("weights", param if weights is not None else None),
            ("stick_breaking_logits", None if weights is not None else param),
            ("cutoff", length), ("method", method),
        ):
            object.__setattr__(self, fld, value)

    # ---------------------------------------------------------------- structure
    @property
    def _param(self) -> Any:
        return self.weights if self.weights is not None else self.stick_breaking_logits

    @property
    def shape(self) -> tuple[int, int]:
        L = self.grid_shape[0] * self.grid_shape[1]
        return (L, L)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self._param.shape[:-1])

    @property
    def nonnegative(self) -> bool:  # type: ignore[override]
        return True  # weights are validated >= 0; stick-breaking weights are positive

    @property
    def lower_triangular(self) -> bool:  # type: ignore[override]
        return self.shape[0] == 1

    @property
    def T(self) -> Ripple:
        """``Mᵀ = M``: ripple masks are symmetric."""
        return self

    def _parameters(self) -> tuple[Any, ...]:
        return (self._param,)

    def ring_weights(self, like: Any = None) -> Any:
        """``(α_0, …, α_{r̂−1}, ᾱ)``, shape ``(*batch_shape, r̂ + 1)``.

        Parameters
        ----------
        like : array, optional
            Kind, dtype and device of the result (default: the parameters').
        """
        p = self._param if like is None else self._param_like("param", self._param, like)
        return p if self.weights is not None else stick_breaking(p)

    def _coefficients(self, like: Any) -> Any:
        """The offset table ``f(Δ) = α_{min(‖Δ‖_∞, r̂)}``, shape (*batch, 2H − 1, 2W − 1)."""
        xp = namespace(like)
        H, W = self.grid_shape
        alpha = self.ring_weights(like)
        idx = index_like(_ring_index(H, W, self.cutoff).reshape(-1), like)
        table = xp.take(alpha, idx, axis=-1)
        return xp.reshape(table, (*alpha.shape[:-1], *offset_shape(self.grid_shape)))

    # ------------------------------------------------------------------ cost
    def _costs(self, F: int) -> dict[str, float]:
        H, W = self.grid_shape
        L = H * W
        batch = max(1, math.prod(self.batch_shape))
        r_eff = min(self.cutoff, max(H, W) - 1)
        costs = grid_costs(self.grid_shape, F, batch)
        # float64 table build (memory bound) + per position and radius: 4 lookups,
        # 3 adds and 1 fused multiply-add
        costs["sat"] = SAT_COST_FACTOR * batch * F * L * (_SAT_TABLE_COST + 5.0 * r_eff)
        return costs

    def cost(self, F: int) -> float:
        """Estimated flops of one product with ``F`` columns (the dispatched method).

        SAT: ``SAT_COST_FACTOR·L·F·(40 + 5·r_eff)`` with ``r_eff = min(r̂, max(H, W) − 1)``
        (40 flop-equivalents per entry for the memory-bound float64 table, calibrated on
        the numba kernel; the vectorised torch/numpy kernel is a few times slower);
        FFT and dense as :meth:`GridRPE.cost <structattn.masks.GridRPE.cost>`; per batch
        element of the mask.
        """
        return self._costs(F)[self._choose(F)]

    # --------------------------------------------------------------- products
    def _matmat(self, X: Any, backend: str) -> Any:
        xp = namespace(X)
        H, W = self.grid_shape
        F = int(X.shape[-1])
        method = self._choose(F)
        if method == "sat":
            lead = tuple(X.shape[:-2])
            Y = kernel("ripple_sat", backend)(xp.reshape(X, (*lead, H, W, F)),
                                              self.ring_weights(X))
            return xp.reshape(Y, (*Y.shape[:-3], H * W, F))
        c = self._coefficients(X)
        if method == "fft":
            return grid_fft_apply(c, X, self.grid_shape)
        return grid_dense(c, self.grid_shape, X) @ X

    def _rmatmat(self, X: Any, backend: str) -> Any:
        return self._matmat(X, backend)

    def _to_dense(self, like: Any) -> Any:
        return grid_dense(self._coefficients(like), self.grid_shape, like)

    def _structure(self) -> str:
        H, W = self.grid_shape
        how = "weights" if self.weights is not None else "stick-breaking logits"
        return (f"ripple on a {H}x{W} grid, r̂={self.cutoff} rings + tail ({how}): "
                "summed-area tables O(L·r̂), grid FFT or dense (by cost); symmetric")

"""Mask algebra: transpose, Hadamard, Kronecker and matrix products, sums, scalar multiples.

Each composition is itself a :class:`~structattn.masks.Mask` that keeps the fast
algorithms of its factors where the algebra allows it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._array import namespace
from .base import Mask, StructureWarning, _bcast_factors, _broadcast_batch, khatri_rao_rows
from .product import Product

__all__ = ["Hadamard", "Kronecker", "Product", "Scaled", "Sum", "Transposed"]


@dataclass(frozen=True, eq=False)
class Transposed(Mask):
    """The transpose ``Mᵀ`` of a mask (a lazy view: nothing is copied).

    Parameters
    ----------
    base : Mask
    """

    base: Mask

    def __post_init__(self) -> None:
        if not isinstance(self.base, Mask):
            raise TypeError(f"base must be a Mask, got {type(self.base).__name__}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.base.shape[::-1]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.base.batch_shape

    @property
    def nonnegative(self) -> bool:  # type: ignore[override]
        return self.base.nonnegative

    @property
    def exact(self) -> bool:  # type: ignore[override]
        return self.base.exact

    def _parameters(self) -> tuple[Any, ...]:
        return self.base._parameters()

    @property
    def T(self) -> Mask:
        return self.base

    def cost(self, F: int) -> float:
        return self.base.cost(F)

    def _normalized(self) -> Mask:
        return Transposed(self.base._normalized())

    def _matmat(self, X: Any, backend: str) -> Any:
        return self.base._rmatmat(X, backend)

    def _rmatmat(self, X: Any, backend: str) -> Any:
        return self.base._matmat(X, backend)

    def _masked_matmul(self, A: Any, B: Any, V: Any, backend: str) -> Any:
        return self.base._rmasked_matmul(A, B, V, backend)

    def _rmasked_matmul(self, A: Any, B: Any, V: Any, backend: str) -> Any:
        return self.base._masked_matmul(A, B, V, backend)

    def _to_dense(self, like: Any) -> Any:
        return namespace(like).matrix_transpose(self.base._to_dense(like))

    def _low_rank_factors(self, like: Any) -> tuple[Any, Any] | None:
        f = self.base._low_rank_factors(like)
        return None if f is None else (f[1], f[0])

    def _structure(self) -> str:
        return f"transpose of {type(self.base).__name__} ({self.base._structure()})"


@dataclass(frozen=True, eq=False)
class _Pair(Mask):
    """Two masks of one shape (shared validation of :class:`Hadamard` and :class:`Sum`)."""

    left: Mask
    right: Mask
    _what = "pair"

    def __post_init__(self) -> None:
        for name in ("left", "right"):
            if not isinstance(getattr(self, name), Mask):
                raise TypeError(
                    f"{name} must be a Mask, got {type(getattr(self, name)).__name__}"
                )
        if self.left.shape != self.right.shape:
            raise ValueError(
                f"{self._what} needs masks of equal shape; got left.shape="
                f"{self.left.shape} and right.shape={self.right.shape}"
            )
        _broadcast_batch(self.left.batch_shape, self.right.batch_shape,
                         names=("left", "right"))

    @property
    def shape(self) -> tuple[int, int]:
        return self.left.shape

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(np.broadcast_shapes(self.left.batch_shape, self.right.batch_shape))

    @property
    def nonnegative(self) -> bool:  # type: ignore[override]
        return self.left.nonnegative and self.right.nonnegative

    @property
    def exact(self) -> bool:  # type: ignore[override]
        return self.left.exact and self.right.exact

    def _parameters(self) -> tuple[Any, ...]:
        return self.left._parameters() + self.right._parameters()


@dataclass(frozen=True, eq=False)
class Hadamard(_Pair):
    """Entrywise product ``left ⊙ right`` of two masks of the same shape.

    When one factor has a low-rank form ``U Wᵀ`` (:class:`~structattn.masks.Full`,
    :class:`~structattn.masks.LowRank`), products keep the other factor's fast
    algorithm: ``(M ⊙ U Wᵀ) X = M.masked_matmul(U, W, X)`` and
    ``(M ⊙ U Wᵀ ⊙ A Bᵀ) V = M.masked_matmul(A ⊙ U, B ⊙ W, V)`` (row-wise Khatri–Rao
    features).  Otherwise the product is materialized (``O(M·N)``) with a
    :class:`StructureWarning`.

    Parameters
    ----------
    left, right : Mask
        Masks of equal ``shape``.
    """

    _what = "Hadamard product"

    def _normalized(self) -> Mask:
        # a product of positive rescalings is a positive rescaling
        return Hadamard(self.left._normalized(), self.right._normalized())

    @property
    def lower_triangular(self) -> bool:  # type: ignore[override]
        return self.left.lower_triangular or self.right.lower_triangular

    def cost(self, F: int) -> float:
        try:
            split = self._split(np.empty((0, 0)))
        except TypeError:
            split = self._split(self._parameters()[0])
        if split is None:
            return Mask.cost(self, F)
        mask, (U, _) = split
        return mask.cost(F * int(U.shape[-1]))

    def _split(self, like: Any) -> tuple[Mask, tuple[Any, Any]] | None:
        """(structured factor, (U, W)) when one side is low rank."""
        for structured, other in ((self.left, self.right), (self.right, self.left)):
            f = other._low_rank_factors(like)
            if f is not None:
                return structured, f
        return None

    def _dense_fallback(self, like: Any) -> Any:
        warnings.warn(
            f"Hadamard product of {type(self.left).__name__} and "
            f"{type(self.right).__name__} has no structured algorithm; materializing the "
            f"{self.shape[0]}x{self.shape[1]} mask (O(M·N) time and memory)",
            StructureWarning,
            stacklevel=4,
        )
        return self._to_dense(like)

    def _matmat(self, X: Any, backend: str) -> Any:
        split = self._split(X)
        if split is not None:
            mask, (U, W) = split
            return mask._masked_matmul(*_bcast_factors(U, W, X), X, backend)
        return self._dense_fallback(X) @ X

    def _rmatmat(self, X: Any, backend: str) -> Any:
        return Hadamard(self.left.T, self.right.T)._matmat(X, backend)

    def _masked_matmul(self, A: Any, B: Any, V: Any, backend: str) -> Any:
        split = self._split(A)
        if split is not None:
            mask, (U, W) = split
            U, W = _bcast_factors(U, W, A)
            return mask._masked_matmul(khatri_rao_rows(A, U), khatri_rao_rows(B, W), V, backend)
        dense = self._dense_fallback(A)
        return (dense * (A @ namespace(A).matrix_transpose(B))) @ V

    def _rmasked_matmul(self, A: Any, B: Any, V: Any, backend: str) -> Any:
        return Hadamard(self.left.T, self.right.T)._masked_matmul(A, B, V, backend)

    def _to_dense(self, like: Any) -> Any:
        return self.left._to_dense(like) * self.right._to_dense(like)

    def _low_rank_factors(self, like: Any) -> tuple[Any, Any] | None:
        fl, fr = self.left._low_rank_factors(like), self.right._low_rank_factors(like)
        if fl is None or fr is None:
            return None
        return khatri_rao_rows(fl[0], fr[0]), khatri_rao_rows(fl[1], fr[1])

    def _structure(self) -> str:
        try:
            folded = self._split(np.empty((0, 0))) is not None
        except TypeError:  # torch parameters: ask with a tensor instead
            folded = self._split(self._parameters()[0]) is not None
        how = "low-rank factor folded into features" if folded else "dense fallback"

        return (
            f"Hadamard({type(self.left).__name__}, {type(self.right).__name__}): {how}"
        )


@dataclass(frozen=True, eq=False)
class Kronecker(Mask):
    """Kronecker product ``left ⊗ right``: shape ``(M1·M2, N1·N2)``, row-major indices.

    Entry ``[(i1·M2 + i2), (j1·N2 + j2)] = left[i1, j1] · right[i2, j2]`` — the mask of a
    separable function on a 2-D grid flattened row-major.  ``matmat`` applies ``right``
    along the fast axis and ``left`` along the slow axis: ``N1·T_right + M2·T_left``.

    Parameters
    ----------
    left, right : Mask
        Unbatched masks.
    """

    left: Mask
    right: Mask

    def __post_init__(self) -> None:
        for name in ("left", "right"):
            m = getattr(self, name)
            if not isinstance(m, Mask):
                raise TypeError(f"{name} must be a Mask, got {type(m).__name__}")
            if m.batch_shape:
                raise ValueError(
                    f"Kronecker factors must be unbatched; {name}.batch_shape="
                    f"{m.batch_shape}"
                )

    @property
    def shape(self) -> tuple[int, int]:
        (m1, n1), (m2, n2) = self.left.shape, self.right.shape
        return (m1 * m2, n1 * n2)

    @property
    def lower_triangular(self) -> bool:  # type: ignore[override]
        return self.left.lower_triangular and self.right.lower_triangular

    def _normalized(self) -> Mask:
        return Kronecker(self.left._normalized(), self.right._normalized())

    def cost(self, F: int) -> float:
        n1, m2 = self.left.shape[1], self.right.shape[0]
        return n1 * self.right.cost(F) + m2 * self.left.cost(F)

    @property
    def nonnegative(self) -> bool:  # type: ignore[override]
        return self.left.nonnegative and self.right.nonnegative

    @property
    def exact(self) -> bool:  # type: ignore[override]
        return self.left.exact and self.right.exact

    def _parameters(self) -> tuple[Any, ...]:
        return self.left._parameters() + self.right._parameters()

    @staticmethod
    def _apply(outer: Mask, inner: Mask, X: Any, backend: str, transpose: bool) -> Any:
        xp = namespace(X)
        (a1, b1), (a2, b2) = outer.shape, inner.shape
        if transpose:
            a1, b1, a2, b2 = b1, a1, b2, a2
        batch, c = tuple(X.shape[:-2]), X.shape[-1]
        Y = xp.reshape(X, (*batch, b1, b2, c))
        Y = inner._rmatmat(Y, backend) if transpose else inner._matmat(Y, backend)
        Y = xp.moveaxis(Y, -3, -2)  # (..., a2, b1, c)
        Y = outer._rmatmat(Y, backend) if transpose else outer._matmat(Y, backend)
        Y = xp.moveaxis(Y, -2, -3)  # (..., a1, a2, c)
        return xp.reshape(Y, (*batch, a1 * a2, c))

    def _matmat(self, X: Any, backend: str) -> Any:
        return self._apply(self.left, self.right, X, backend, transpose=False)

    def _rmatmat(self, X: Any, backend: str) -> Any:
        return self._apply(self.left, self.right, X, backend, transpose=True)

    def _to_dense(self, like: Any) -> Any:
        xp = namespace(like)
        L, R = self.left._to_dense(like), self.right._to_dense(like)
        (m1, n1), (m2, n2) = self.left.shape, self.right.shape
        K = L[:, None, :, None] * R[None, :, None, :]
        return xp.reshape(K, (m1 * m2, n1 * n2))

    def _low_rank_factors(self, like: Any) -> tuple[Any, Any] | None:
        fl, fr = self.left._low_rank_factors(like), self.right._low_rank_factors(like)
        if fl is None or fr is None:
            return None
        xp = namespace(like)

        def kron_rows(P: Any, Q: Any) -> Any:  # (m1, r1), (m2, r2) -> (m1 m2, r1 r2)
            K = P[:, None, :, None] * Q[None, :, None, :]
            return xp.reshape(K, (P.shape[0] * Q.shape[0], P.shape[1] * Q.shape[1]))

        return kron_rows(fl[0], fr[0]), kron_rows(fl[1], fr[1])

    def _structure(self) -> str:
        return (
            f"Kronecker({type(self.left).__name__}, {type(self.right).__name__}): "
            "factor-wise products along grid axes"
        )


@dataclass(frozen=True, eq=False)
class Sum(_Pair):
    """Sum ``left + right`` of two masks of the same shape (also ``left + right``).

    Every product is the sum of the factors' products, so each keeps its own fast
    algorithm: e.g. a two-sided exponential decay is a decayed causal mask plus the
    transpose of a strictly-causal one, ``O(L·m·d_v)`` with no FFT.

    Parameters
    ----------
    left, right : Mask
        Masks of equal ``shape``.
    """

    _what = "Sum"

    @property
    def lower_triangular(self) -> bool:  # type: ignore[override]
        return self.left.lower_triangular and self.right.lower_triangular

    def _matmat(self, X: Any, backend: str) -> Any:
        return self.left._matmat(X, backend) + self.right._matmat(X, backend)

    def _rmatmat(self, X: Any, backend: str) -> Any:
        return self.left._rmatmat(X, backend) + self.right._rmatmat(X, backend)

    def _masked_matmul(self, A: Any, B: Any, V: Any, backend: str) -> Any:
        return (self.left._masked_matmul(A, B, V, backend)
                + self.right._masked_matmul(A, B, V, backend))

    def _rmasked_matmul(self, A: Any, B: Any, V: Any, backend: str) -> Any:
        return (self.left._rmasked_matmul(A, B, V, backend)
                + self.right._rmasked_matmul(A, B, V, backend))

    def _to_dense(self, like: Any) -> Any:
        return self.left._to_dense(like) + self.right._to_dense(like)

    def cost(self, F: int) -> float:
        return self.left.cost(F) + self.right.cost(F)

    def _structure(self) -> str:
        return f"Sum({self.left._structure()}; {self.right._structure()})"


@dataclass(frozen=True, eq=False)
class Scaled(Mask):
    """A scalar multiple ``alpha · base`` (also ``alpha * base``).

    Parameters
    ----------
    base : Mask
    alpha : float
        A finite real number.
    """

    base: Mask
    alpha: float

    def __post_init__(self) -> None:
        if not isinstance(self.base, Mask):
            raise TypeError(f"base must be a Mask, got {type(self.base).__name__}")
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha)):
            raise ValueError(f"alpha must be a finite real number, got {self.alpha!r}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.base.shape

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.base.batch_shape

    @property
    def nonnegative(self) -> bool:  # type: ignore[override]
        return self.base.nonnegative and self.alpha >= 0

    @property
    def exact(self) -> bool:  # type: ignore[override]
        return self.base.exact

    @property
    def lower_triangular(self) -> bool:  # type: ignore[override]
        return self.base.lower_triangular

    def _parameters(self) -> tuple[Any, ...]:
        return self.base._parameters()

    def _matmat(self, X: Any, backend: str) -> Any:
        return self.base._matmat(X, backend) * self.alpha

    def _rmatmat(self, X: Any, backend: str) -> Any:
        return self.base._rmatmat(X, backend) * self.alpha

    def _masked_matmul(self, A: Any, B: Any, V: Any, backend: str) -> Any:
        return self.base._masked_matmul(A, B, V, backend) * self.alpha

    def _rmasked_matmul(self, A: Any, B: Any, V: Any, backend: str) -> Any:
        return self.base._rmasked_matmul(A, B, V, backend) * self.alpha

    def _to_dense(self, like: Any) -> Any:
        return self.base._to_dense(like) * self.alpha

    def _low_rank_factors(self, like: Any) -> tuple[Any, Any] | None:
        f = self.base._low_rank_factors(like)
        return None if f is None else (f[0] * self.alpha, f[1])

    def _normalized(self) -> Mask:
        return self.base._normalized() if self.alpha > 0 else self

    def _hadamard_fused(self, other: Mask) -> Mask | None:
        fused = self.base._hadamard_fused(other)
        return None if fused is None else Scaled(fused, self.alpha)

    def cost(self, F: int) -> float:
        return self.base.cost(F) + float(self.shape[0] * F)

    def _structure(self) -> str:
        return f"{self.alpha:g} x ({self.base._structure()})"

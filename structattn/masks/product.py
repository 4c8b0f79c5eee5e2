"""The matrix product of two masks, ``left @ right`` (re-exported by ``composition``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import Mask, _broadcast_batch

__all__ = ["Product"]


@dataclass(frozen=True, eq=False)
class Product(Mask):
    """The matrix product ``left @ right`` of two masks (also ``left @ right``).

    A lazy composition: ``(L R) X = L (R X)``, so each factor keeps its fast product
    and a product with ``c`` columns costs ``T_R(c) + T_L(c)``.

    Parameters
    ----------
    left : Mask
        Shape ``(M, K)``.
    right : Mask
        Shape ``(K, N)``.

    Notes
    -----
    The masked product ``(LR ⊙ A Bᵀ) V`` uses the generic algorithm (``m·d_v``
    structured products).  ``nonnegative`` when both factors are (a sum of products of
    nonnegative entries); lower triangular when both are.

    Examples
    --------
    >>> from structattn.masks import Causal
    >>> (Causal(3) @ Causal(3)).to_dense()
    array([[1., 0., 0.],
           [2., 1., 0.],
           [3., 2., 1.]])
    """

    left: Mask
    right: Mask

    def __post_init__(self) -> None:
        for name in ("left", "right"):
            if not isinstance(getattr(self, name), Mask):
                raise TypeError(
                    f"{name} must be a Mask, got {type(getattr(self, name)).__name__}"
                )
        if self.left.shape[1] != self.right.shape[0]:
            raise ValueError(
                f"Product needs left.shape[1] == right.shape[0]; got left {self.left.shape} "
                f"and right {self.right.shape}"
            )
        _broadcast_batch(self.left.batch_shape, self.right.batch_shape,
                         names=("left", "right"))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.left.shape[0], self.right.shape[1])

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(np.broadcast_shapes(self.left.batch_shape, self.right.batch_shape))

    @property
    def nonnegative(self) -> bool:  # type: ignore[override]
        return self.left.nonnegative and self.right.nonnegative

    @property
    def exact(self) -> bool:  # type: ignore[override]
        return self.left.exact and self.right.exact

    @property
    def lower_triangular(self) -> bool:  # type: ignore[override]
        return self.left.lower_triangular and self.right.lower_triangular

    def _parameters(self) -> tuple[Any, ...]:
        return self.left._parameters() + self.right._parameters()

    def _normalized(self) -> Mask:
        return Product(self.left._normalized(), self.right._normalized())

    def _matmat(self, X: Any, backend: str) -> Any:
        return self.left._matmat(self.left._broadcast_operand(
            self.right._matmat(self.right._broadcast_operand(X), backend)), backend)

    def _rmatmat(self, X: Any, backend: str) -> Any:
        return self.right._rmatmat(self.right._broadcast_operand(
            self.left._rmatmat(self.left._broadcast_operand(X), backend)), backend)

    def _to_dense(self, like: Any) -> Any:
        return self.left._to_dense(like) @ self.right._to_dense(like)

    def cost(self, F: int) -> float:
        return self.left.cost(F) + self.right.cost(F)

    def _structure(self) -> str:
        return f"Product({self.left._structure()}; {self.right._structure()})"

"""Unstructured-but-useful masks: all ones, an explicit matrix, and a low-rank product."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._array import as_like, describe_array, dtype_name, is_numpy, is_torch, namespace
from .._validate import frozen_array
from .base import Mask

__all__ = ["Dense", "Full", "LowRank"]


def _check_length(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_matrix(x: Any, name: str, allow_bool: bool = False) -> None:
    if not (is_numpy(x) or is_torch(x)):
        raise TypeError(
            f"{name} must be a numpy.ndarray or torch.Tensor, got {type(x).__name__}"
        )
    allowed = ("float32", "float64", "bool") if allow_bool else ("float32", "float64")
    if dtype_name(x) not in allowed:
        raise TypeError(f"{name} must have dtype in {allowed}, got {dtype_name(x)}")
    if x.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dimensions, got {describe_array(x)}")
    xp = namespace(x)
    if dtype_name(x) != "bool" and not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{name} contains NaN or Inf values ({describe_array(x)})")


@dataclass(frozen=True, eq=False)
class Full(Mask):
    """The all-ones mask ``M = 1 1ᵀ`` (no masking).

    Parameters
    ----------
    M : int
        Number of rows (query positions).
    N : int, optional
        Number of columns (key positions); defaults to ``M``.

    Notes
    -----
    ``matmat`` is a column sum, ``O(N·c)``; ``masked_matmul(A, B, V) = A (Bᵀ V)``:
    ``O((M + N)·m·d_v)`` time, ``O(m·d_v)`` extra memory.

    Examples
    --------
    >>> from structattn.masks import Full
    >>> Full(2, 3).to_dense()
    array([[1., 1., 1.],
           [1., 1., 1.]])
    """

    M: int
    N: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "M", _check_length(self.M, "M"))
        object.__setattr__(self, "N", self.M if self.N is None else _check_length(self.N, "N"))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.M, self.N)

    def _matmat(self, X: Any, backend: str) -> Any:
        xp = namespace(X)
        total = xp.sum(X, axis=-2, keepdims=True)
        return xp.broadcast_to(total, (*X.shape[:-2], self.M, X.shape[-1]))

    def _rmatmat(self, X: Any, backend: str) -> Any:
        xp = namespace(X)
        total = xp.sum(X, axis=-2, keepdims=True)
        return xp.broadcast_to(total, (*X.shape[:-2], self.N, X.shape[-1]))

    def _masked_matmul(self, A: Any, B: Any, V: Any, backend: str) -> Any:
        return A @ (namespace(B).matrix_transpose(B) @ V)

    def _rmasked_matmul(self, A: Any, B: Any, V: Any, backend: str) -> Any:
        return self._masked_matmul(A, B, V, backend)

    def _to_dense(self, like: Any) -> Any:
        return as_like(np.ones((self.M, self.N)), like)

    def _low_rank_factors(self, like: Any) -> tuple[Any, Any]:
        return as_like(np.ones((self.M, 1)), like), as_like(np.ones((self.N, 1)), like)

    def cost(self, F: int) -> float:
        return float((self.M + self.N) * F)

    def _structure(self) -> str:
        return "all ones: A (Bᵀ V), O((M+N)·m·d_v)"


@dataclass(frozen=True, eq=False)
class Dense(Mask):
    """An explicit mask matrix (boolean or float), optionally batched.

    Parameters
    ----------
    matrix : array, shape ``(*batch, M, N)``
        numpy array or torch tensor; boolean (True = keep) or float32/float64.  A torch
        tensor with ``requires_grad`` receives gradients.

    Notes
    -----
    ``matmat`` is a dense product, ``O(M·N·c)``; ``masked_matmul`` forms
    ``M ⊙ (A Bᵀ)``: ``O(M·N·(m + d_v))`` time and ``O(M·N)`` memory.  Use it for
    references and for masks without structure.

    Examples
    --------
    >>> import numpy as np
    >>> from structattn.masks import Dense
    >>> Dense(np.array([[True, False], [True, True]])).to_dense()
    array([[1., 0.],
           [1., 1.]])
    """

    matrix: Any

    def __post_init__(self) -> None:
        _check_matrix(self.matrix, "matrix", allow_bool=True)
        # a read-only copy: mutating the caller's array later cannot change the mask
        object.__setattr__(self, "matrix", frozen_array(self.matrix))

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.matrix.shape[-2]), int(self.matrix.shape[-1]))

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.matrix.shape[:-2])

    @property
    def nonnegative(self) -> bool:  # type: ignore[override]
        if dtype_name(self.matrix) == "bool":
            return True
        return bool(namespace(self.matrix).all(self.matrix >= 0))

    def _parameters(self) -> tuple[Any, ...]:
        return (self.matrix,)

    def _matrix(self, like: Any) -> Any:
        return self._param_like("matrix", self.matrix, like)

    def _matmat(self, X: Any, backend: str) -> Any:
        return self._matrix(X) @ X

    def _rmatmat(self, X: Any, backend: str) -> Any:
        return namespace(X).matrix_transpose(self._matrix(X)) @ X

    def _masked_matmul(self, A: Any, B: Any, V: Any, backend: str) -> Any:
        xp = namespace(A)
        return (self._matrix(A) * (A @ xp.matrix_transpose(B))) @ V

    def _rmasked_matmul(self, A: Any, B: Any, V: Any, backend: str) -> Any:
        xp = namespace(A)
        return (xp.matrix_transpose(self._matrix(A)) * (A @ xp.matrix_transpose(B))) @ V

    def _to_dense(self, like: Any) -> Any:
        return self._matrix(like)

    def _structure(self) -> str:
        return "dense matrix: O(M·N) per column"


@dataclass(frozen=True, eq=False)
class LowRank(Mask):
    """A rank-``r`` mask ``M = U Wᵀ``.

    Parameters
    ----------
    U : array, shape ``(*batch, M, r)``
    W : array, shape ``(*batch, N, r)``
        numpy arrays or torch tensors of one kind and dtype.

    Notes
    -----
    ``matmat``: ``U (Wᵀ X)``, ``O((M + N)·r·c)``.  ``masked_matmul`` folds the mask
    into the features, ``(U Wᵀ ⊙ A Bᵀ) V = (A ⊙ U)((B ⊙ W)ᵀ V)`` with row-wise
    Khatri–Rao features of width ``m·r``: ``O((M + N)·m·r·d_v)``.
    """

    U: Any
    W: Any

    def __post_init__(self) -> None:
        from .._array import validate_same_kind

        _check_matrix(self.U, "U")
        _check_matrix(self.W, "W")
        validate_same_kind({"U": self.U, "W": self.W})
        object.__setattr__(self, "U", frozen_array(self.U))
        object.__setattr__(self, "W", frozen_array(self.W))
        if self.U.shape[-1] != self.W.shape[-1]:
            raise ValueError(
                f"U and W must have the same rank r (last dimension); got U.shape="
                f"{tuple(self.U.shape)} and W.shape={tuple(self.W.shape)}"
            )
        if tuple(self.U.shape[:-2]) != tuple(self.W.shape[:-2]):
            raise ValueError(
                f"U and W must have the same batch dimensions; got {tuple(self.U.shape)} "
                f"and {tuple(self.W.shape)}"
            )

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.U.shape[-2]), int(self.W.shape[-2]))

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.U.shape[:-2])

    @property
    def rank(self) -> int:
        """The rank ``r`` of the factorization."""
        return int(self.U.shape[-1])

    @property
    def nonnegative(self) -> bool:  # type: ignore[override]
        xp = namespace(self.U)
        return bool(xp.all(self.U >= 0)) and bool(xp.all(self.W >= 0))

    def _parameters(self) -> tuple[Any, ...]:
        return (self.U, self.W)

    def _matmat(self, X: Any, backend: str) -> Any:
        U, W = self._low_rank_factors(X)
        return U @ (namespace(X).matrix_transpose(W) @ X)

    def _rmatmat(self, X: Any, backend: str) -> Any:
        U, W = self._low_rank_factors(X)
        return W @ (namespace(X).matrix_transpose(U) @ X)

    def _masked_matmul(self, A: Any, B: Any, V: Any, backend: str) -> Any:
        return self._folded(A, B, V, transpose=False)

    def _rmasked_matmul(self, A: Any, B: Any, V: Any, backend: str) -> Any:
        return self._folded(A, B, V, transpose=True)

    def _folded(self, A: Any, B: Any, V: Any, transpose: bool) -> Any:
        from .base import _bcast_factors, khatri_rao_rows

        U, W = self._low_rank_factors(A)
        if transpose:
            U, W = W, U
        U, W = _bcast_factors(U, W, A)
        Af, Bf = khatri_rao_rows(A, U), khatri_rao_rows(B, W)
        return Af @ (namespace(A).matrix_transpose(Bf) @ V)

    def _to_dense(self, like: Any) -> Any:
        U, W = self._low_rank_factors(like)
        return U @ namespace(like).matrix_transpose(W)

    def _low_rank_factors(self, like: Any) -> tuple[Any, Any]:
        return self._param_like("U", self.U, like), self._param_like("W", self.W, like)

    def cost(self, F: int) -> float:
        M, N = self.shape
        return 2.0 * (M + N) * self.rank * F * max(1, math.prod(self.batch_shape))

    def _structure(self) -> str:
        return f"low rank r={self.rank}: features folded by Khatri–Rao, O(L·m·r·d_v)"

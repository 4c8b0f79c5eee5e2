"""Interoperability of masks with numpy and scipy: the linear-operator protocol.

Mixed into :class:`~structattn.masks.Mask`: ``ndarray @ mask`` (``__array_ufunc__ =
None`` in the base class makes numpy defer), ``np.asarray(mask)`` refused with a
pointer to ``to_dense()``, negation, subtraction, division by a scalar, and
:meth:`OperatorInterop.as_linear_operator` for ``scipy.sparse.linalg``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import is_torch, namespace

__all__ = ["OperatorInterop"]


def _is_real_scalar(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


class OperatorInterop:
    """numpy/scipy protocol of a mask (uses ``matmat``, ``rmatmat``, ``shape``)."""

    def __rmatmul__(self, X: Any) -> Any:
        """``X @ M`` for ``X`` of shape ``(..., p, M)`` (or a vector of length ``M``)."""
        if getattr(X, "ndim", None) == 1:
            return self.rmatmat(X[:, None])[..., 0]
        if not hasattr(X, "ndim"):
            return NotImplemented
        xp = namespace(X)
        return xp.matrix_transpose(self.rmatmat(xp.matrix_transpose(X)))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError(
            f"a {type(self).__name__} mask is a structured linear operator, not an array: "
            "np.asarray(mask) would give an object array; use mask.to_dense() for the "
            "dense matrix (O(M·N) memory) or mask.as_linear_operator() for scipy"
        )

    def __neg__(self) -> Any:
        from .composition import Scaled

        return Scaled(self, -1.0)

    def __sub__(self, other: Any) -> Any:
        if not isinstance(other, OperatorInterop):  # i.e. another Mask
            return NotImplemented
        return self + (-other)

    def __truediv__(self, other: Any) -> Any:
        from .composition import Scaled

        if not _is_real_scalar(other):
            return NotImplemented
        if other == 0:
            raise ZeroDivisionError("a mask divided by zero")
        return Scaled(self, 1.0 / float(other))

    def as_linear_operator(self, dtype: Any = np.float64) -> Any:
        """The mask as a :class:`scipy.sparse.linalg.LinearOperator` (numpy, CPU).

        ``eigsh``, ``cg``, ``gmres``, ``expm_multiply`` … then run on the mask's fast
        products (:meth:`matmat`/:meth:`rmatmat`) without forming it.

        Parameters
        ----------
        dtype : numpy dtype, default float64

        Returns
        -------
        scipy.sparse.linalg.LinearOperator
            Shape ``(M, N)``; every product costs what :meth:`matmat` costs.

        Raises
        ------
        ValueError
            For a batched mask (one operator per batch element: index it first).
        TypeError
            For a mask holding torch tensors (scipy works on numpy arrays).

        Examples
        --------
        >>> import numpy as np
        >>> from scipy.sparse.linalg import eigsh
        >>> from structattn.masks import Toeplitz
        >>> op = Toeplitz(np.array([0.25, 0.5, 1.0, 0.5, 0.25])).as_linear_operator()
        >>> op.shape
        (3, 3)
        """
        from scipy.sparse.linalg import LinearOperator

        if self.batch_shape:
            raise ValueError(
                f"as_linear_operator needs an unbatched mask, got batch_shape "
                f"{self.batch_shape}"
            )
        if any(is_torch(p) for p in self._parameters()):
            raise TypeError(
                "as_linear_operator works on numpy: this mask holds torch tensors; build "
                "it from numpy arrays (scipy cannot call torch products)"
            )
        dt = np.dtype(dtype)
        mask = self

        def mm(X: np.ndarray) -> np.ndarray:
            X = np.asarray(X, dtype=dt)
            X2 = X.reshape(X.shape[0], -1)
            return mask.matmat(X2, check_finite=False).reshape(-1, *X.shape[1:])

        def rmm(X: np.ndarray) -> np.ndarray:
            X = np.asarray(X, dtype=dt)
            X2 = X.reshape(X.shape[0], -1)
            return mask.rmatmat(X2, check_finite=False).reshape(-1, *X.shape[1:])

        return LinearOperator(
            self.shape, matvec=lambda x: mm(x[:, None])[:, 0] if x.ndim == 1 else mm(x),
            rmatvec=lambda x: rmm(x[:, None])[:, 0] if x.ndim == 1 else rmm(x),
            matmat=mm, rmatmat=rmm, dtype=dt,
        )

"""The :class:`Mask` base class: a structured ``(*batch, M, N)`` linear operator.

A mask is an immutable description (a frozen dataclass validated at construction) plus
fast products.  As in linear_operator, a subclass implements a few private methods and
the public methods do all validation, broadcasting and backend dispatch once:

===========================  ========================================================
subclass implements          meaning
===========================  ========================================================
``shape`` (property)         ``(M, N)``
``_matmat(X, backend)``      ``M @ X`` for ``X`` of shape ``(..., N, c)``
``_rmatmat(X, backend)``     ``Mᵀ @ X`` for ``X`` of shape ``(..., M, c)``
``_to_dense(like)``          optional; default applies ``M`` to the identity
``_masked_matmul``           optional ``(M ⊙ A Bᵀ) V``; default built from ``_matmat``
``_rmasked_matmul``          optional ``(Mᵀ ⊙ A Bᵀ) V``; default built from ``_rmatmat``
``_low_rank_factors(like)``  optional ``(U, W)`` with ``M = U Wᵀ`` (enables fast ⊙)
===========================  ========================================================

The private methods receive validated, broadcast arrays of one kind, dtype and device,
and a resolved backend name (``"numpy"``, ``"numba"`` or ``"torch"``).
"""

from __future__ import annotations

import abc
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._array import (
    as_like,
    is_torch,
    namespace,
    validate_float_array,
    validate_same_kind,
)
from ..backends import resolve_backend

__all__ = ["Hadamard", "Kronecker", "Mask", "StructureWarning", "Transposed"]

#: Elements of the ``(..., N, m_chunk * d_v)`` block the generic masked product forms at once.
_GENERIC_BLOCK_ELEMENTS = 1 << 22


class StructureWarning(UserWarning):
    """A structured operation fell back to a dense (quadratic) computation."""


def _broadcast_batch(*shapes: tuple[int, ...], names: tuple[str, ...]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        detail = ", ".join(f"{n}: {s}" for n, s in zip(names, shapes, strict=True))
        raise ValueError(
            f"leading (batch) dimensions do not broadcast: {detail}"
        ) from None


def khatri_rao_rows(A: Any, U: Any) -> Any:
    """Row-wise Khatri–Rao product: row ``i`` is ``vec(A_i ⊗ U_i)``.

    ``A (..., L, m)``, ``U (..., L, r)`` → ``(..., L, m·r)``; it turns
    ``(A Bᵀ) ⊙ (U Wᵀ)`` into ``(A ⊙ U)(B ⊙ W)ᵀ`` with ``m·r`` features.
    """
    xp = namespace(A, U)
    prod = A[..., :, None] * U[..., None, :]
    return xp.reshape(prod, (*prod.shape[:-2], prod.shape[-2] * prod.shape[-1]))


def generic_masked_matmul(apply, A: Any, B: Any, V: Any) -> Any:
    """``(M ⊙ A Bᵀ) V`` from products with ``M`` alone (the master identity).

    ``(M ⊙ A Bᵀ) V = Σ_a diag(A[:, a]) · M · diag(B[:, a]) · V``: form
    ``F_j = B_j ⊗ V_j`` (``N x m·d_v``), apply ``M`` once, contract with ``A``.  The
    feature axis is processed in blocks so at most ``2**22`` elements of ``F`` exist at
    once.  Cost: ``T_M(m·d_v) + O(M·m·d_v)``.

    Parameters
    ----------
    apply : callable
        ``X (..., N, c) -> M X (..., M, c)``.
    A, B, V : arrays of shapes (..., M, m), (..., N, m), (..., N, d_v)
    """
    xp = namespace(A, B, V)
    N, m = B.shape[-2:]
    dv = V.shape[-1]
    batch = math.prod(B.shape[:-2])
    step = max(1, _GENERIC_BLOCK_ELEMENTS // max(1, N * dv * batch))
    out = None
    for s in range(0, m, step):
        e = min(s + step, m)
        F = B[..., :, s:e, None] * V[..., :, None, :]  # (..., N, mc, dv)
        F = xp.reshape(F, (*F.shape[:-2], (e - s) * dv))
        G = apply(F)
        G = xp.reshape(G, (*G.shape[:-1], e - s, dv))  # (..., M, mc, dv)
        part = (A[..., :, None, s:e] @ G)[..., 0, :]
        out = part if out is None else out + part
    return out


class Mask(abc.ABC):
    """A structured ``M x N`` mask: a linear operator with fast products.

    Subclasses are frozen dataclasses validated in ``__post_init__`` and implement the
    private methods listed in :mod:`structattn.masks.base`.  Users call the public
    methods: :meth:`matmat` (also ``@``), :meth:`rmatmat`, :attr:`T`, :meth:`to_dense`,
    :meth:`masked_matmul`, :meth:`hadamard` (also ``*``), :meth:`kron`,
    :meth:`describe`.

    Attributes
    ----------
    shape : tuple of int
        ``(M, N)``: ``M`` query positions (rows), ``N`` key positions (columns).
    batch_shape : tuple of int
        Leading dimensions of a batched mask (``()`` for positional masks shared by
        every batch element and head).
    nonnegative : bool
        True when every entry is ``>= 0`` (then positive features give positive
        attention normalizers).
    exact : bool
        True when the fast products are exact up to rounding.
    """

    nonnegative: bool = True
    exact: bool = True

    # ------------------------------------------------------------------ structure
    @property
    @abc.abstractmethod
    def shape(self) -> tuple[int, int]:
        """``(M, N)``."""

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """Leading batch dimensions of the mask's parameters (``()`` if none)."""
        return ()

    @property
    def dtype(self) -> str | None:
        """dtype of the mask's parameters, or None for a purely structural mask."""
        params = self._parameters()
        return str(params[0].dtype).replace("torch.", "") if params else None

    def _parameters(self) -> tuple[Any, ...]:
        """The arrays the mask holds (used for kind/device checks)."""
        return ()

    # ------------------------------------------------------------ private hooks
    @abc.abstractmethod
    def _matmat(self, X: Any, backend: str) -> Any:
        """``M @ X`` for validated ``X (..., N, c)``."""

    @abc.abstractmethod
    def _rmatmat(self, X: Any, backend: str) -> Any:
        """``Mᵀ @ X`` for validated ``X (..., M, c)``."""

    def _to_dense(self, like: Any) -> Any:
        xp = namespace(like)
        N = self.shape[1]
        eye = as_like(np.eye(N), like)
        if self.batch_shape:
            eye = xp.broadcast_to(eye, (*self.batch_shape, N, N))
        return self._matmat(eye, _backend_of(like))

    def _masked_matmul(self, A: Any, B: Any, V: Any, backend: str) -> Any:
        return generic_masked_matmul(lambda X: self._matmat(X, backend), A, B, V)

    def _rmasked_matmul(self, A: Any, B: Any, V: Any, backend: str) -> Any:
        return generic_masked_matmul(lambda X: self._rmatmat(X, backend), A, B, V)

    def _low_rank_factors(self, like: Any) -> tuple[Any, Any] | None:
        return None

    # --------------------------------------------------------------- public API
    def matmat(self, X: Any, *, backend: str = "auto", check_finite: bool = True) -> Any:
        """Apply the mask: ``M @ X``.

        Parameters
        ----------
        X : array, shape (..., N, c)
            numpy array or torch tensor; leading dimensions broadcast against
            :attr:`batch_shape`.
        backend : {"auto", "numpy", "numba", "torch"}
        check_finite : bool
            Reject NaN/Inf in ``X``.

        Returns
        -------
        array, shape (..., M, c)
            Same kind, dtype and device as ``X``.
        """
        backend = self._check_operand(X, "X", self.shape[1], "columns", backend, check_finite)
        return self._matmat(X, backend)

    def rmatmat(self, X: Any, *, backend: str = "auto", check_finite: bool = True) -> Any:
        """Apply the adjoint: ``Mᵀ @ X`` for ``X`` of shape ``(..., M, c)``."""
        backend = self._check_operand(X, "X", self.shape[0], "rows", backend, check_finite)
        return self._rmatmat(X, backend)

    def __matmul__(self, X: Any) -> Any:
        if isinstance(X, Mask):
            return NotImplemented
        return self.matmat(X)

    @property
    def T(self) -> Mask:
        """The transposed mask ``Mᵀ`` (a lazy :class:`Transposed` view)."""
        return Transposed(self)

    @property
    def H(self) -> Mask:
        """The adjoint; equal to :attr:`T` because masks are real."""
        return self.T

    def to_dense(self, like: Any = None) -> Any:
        """Materialize the mask as a dense ``(*batch_shape, M, N)`` array.

        Parameters
        ----------
        like : array, optional
            Output kind, dtype and device follow ``like``; by default the mask's own
            parameters, or numpy float64 for a purely structural mask.

        Notes
        -----
        ``O(M·N)`` memory: for tests, small problems and accuracy studies.
        """
        if like is None:
            params = self._parameters()
            like = params[0] if params else np.empty(0)
            if str(like.dtype).replace("torch.", "") not in ("float32", "float64"):
                like = (
                    np.empty(0) if not is_torch(like) else like.new_empty(0, dtype=_f64())
                )
        return self._to_dense(like)

    def masked_matmul(
        self,
        A: Any,
        B: Any,
        V: Any,
        *,
        backend: str = "auto",
        check_finite: bool = True,
    ) -> Any:
        """``(M ⊙ A Bᵀ) V`` without forming ``A Bᵀ``: the product of masked kernel attention.

        Parameters
        ----------
        A : array, shape (..., M, m)
            Query features ``φ(Q)``.
        B : array, shape (..., N, m)
            Key features ``φ(K)``.
        V : array, shape (..., N, d_v)
            Values (append a ones column to get the normalizer in the same call).
        backend : {"auto", "numpy", "numba", "torch"}
        check_finite : bool

        Returns
        -------
        array, shape (..., M, d_v)

        Notes
        -----
        The generic algorithm applies the mask to the ``N x m·d_v`` block
        ``F_j = B_j ⊗ V_j``; subclasses with a better algorithm override it (causal:
        a running ``m x d_v`` state, ``O(L·m·d_v)`` time, ``O(m·d_v)`` memory).
        """
        M, N = self.shape
        for name, a in (("A", A), ("B", B), ("V", V)):
            validate_float_array(a, name, min_ndim=2, check_finite=check_finite)
        validate_same_kind({"A": A, "B": B, "V": V})
        if A.shape[-1] != B.shape[-1]:
            raise ValueError(
                f"A and B must have the same number of features m; got A.shape="
                f"{tuple(A.shape)} and B.shape={tuple(B.shape)}"
            )
        for name, a, n, what in (("A", A, M, "rows M"), ("B", B, N, "columns N"),
                                 ("V", V, N, "columns N")):
            if a.shape[-2] != n:
                raise ValueError(
                    f"{name}.shape[-2] must equal the mask's {what}={n} (mask shape "
                    f"{self.shape}); got {name}.shape={tuple(a.shape)}"
                )
        batch = _broadcast_batch(
            tuple(A.shape[:-2]), tuple(B.shape[:-2]), tuple(V.shape[:-2]), self.batch_shape,
            names=("A", "B", "V", "mask"),
        )
        backend = resolve_backend(backend, A, B, V)
        xp = namespace(A, B, V)
        A, B, V = (
            a if tuple(a.shape[:-2]) == batch else xp.broadcast_to(a, (*batch, *a.shape[-2:]))
            for a in (A, B, V)
        )
        return self._masked_matmul(A, B, V, backend)

    def hadamard(self, other: Mask) -> Mask:
        """Entrywise product ``self ⊙ other`` (a :class:`Hadamard` mask)."""
        return Hadamard(self, other)

    def __mul__(self, other: Any) -> Mask:
        if not isinstance(other, Mask):
            return NotImplemented
        return Hadamard(self, other)

    def kron(self, other: Mask) -> Mask:
        """Kronecker product ``self ⊗ other`` (a :class:`Kronecker` mask)."""
        return Kronecker(self, other)

    def describe(self) -> str:
        """A short human-readable summary: class, shape, structure, exactness, sign."""
        lines = [
            f"{type(self).__name__}: shape {self.shape}"
            + (f", batch {self.batch_shape}" if self.batch_shape else ""),
            f"  structure: {self._structure()}",
            f"  exact: {self.exact}, nonnegative: {self.nonnegative}",
        ]
        if self.dtype is not None:
            lines.append(f"  parameters dtype: {self.dtype}")
        return "\n".join(lines)

    def _structure(self) -> str:
        return "generic (masked product built from matmat)"

    # ---------------------------------------------------------------- helpers
    def _check_operand(
        self, X: Any, name: str, n: int, what: str, backend: str, check_finite: bool
    ) -> str:
        validate_float_array(X, name, min_ndim=2, check_finite=check_finite)
        if X.shape[-2] != n:
            raise ValueError(
                f"{name}.shape[-2] must equal the mask's number of {what}, {n} (mask shape "
                f"{self.shape}); got {name}.shape={tuple(X.shape)}"
            )
        _broadcast_batch(tuple(X.shape[:-2]), self.batch_shape, names=(name, "mask"))
        return resolve_backend(backend, X)


def _f64():
    import torch

    return torch.float64


def _backend_of(like: Any) -> str:
    return "torch" if is_torch(like) else "numpy"


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
class Hadamard(Mask):
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

    left: Mask
    right: Mask

    def __post_init__(self) -> None:
        for name in ("left", "right"):
            if not isinstance(getattr(self, name), Mask):
                raise TypeError(
                    f"{name} must be a Mask, got {type(getattr(self, name)).__name__}"
                )
        if self.left.shape != self.right.shape:
            raise ValueError(
                f"Hadamard product needs masks of equal shape; got left.shape="
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


def _bcast_factors(U: Any, W: Any, like: Any) -> tuple[Any, Any]:
    """Broadcast low-rank factors to ``like``'s batch shape (kernels need equal batches)."""
    xp = namespace(like)
    batch = tuple(np.broadcast_shapes(tuple(U.shape[:-2]), tuple(like.shape[:-2])))
    return (
        xp.broadcast_to(U, (*batch, *U.shape[-2:])),
        xp.broadcast_to(W, (*batch, *W.shape[-2:])),
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

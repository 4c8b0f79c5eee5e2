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
from typing import Any

import numpy as np

from .._array import (
    as_like,
    index_like,
    is_torch,
    namespace,
    validate_float_array,
    validate_same_kind,
)
from ..backends import resolve_backend
from ._interop import OperatorInterop, _is_real_scalar

__all__ = ["CostDispatch", "Mask", "StructureWarning", "generic_masked_matmul", "khatri_rao_rows"]

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


def _bcast_factors(U: Any, W: Any, like: Any) -> tuple[Any, Any]:
    """Broadcast low-rank factors to ``like``'s batch shape (kernels need equal batches)."""
    xp = namespace(like)
    batch = tuple(np.broadcast_shapes(tuple(U.shape[:-2]), tuple(like.shape[:-2])))
    return (
        xp.broadcast_to(U, (*batch, *U.shape[-2:])),
        xp.broadcast_to(W, (*batch, *W.shape[-2:])),
    )


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


class Mask(OperatorInterop, abc.ABC):
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
    lower_triangular : bool
        True when ``M[i, j] = 0`` for ``j > i`` (a causal mask): attention then uses
        causal feature stabilizers, which never depend on later keys (scan-based
        products then give bit-identical prefixes; FFT products equal them up to
        rounding).
    """

    nonnegative: bool = True
    exact: bool = True
    lower_triangular: bool = False

    #: numpy defers every binary operator to the mask (``ndarray @ mask`` calls
    #: :meth:`__rmatmul__`) instead of building an object array.
    __array_ufunc__ = None

    # ------------------------------------------------------ per-device state
    def _state_cache(self) -> dict:
        """Per-instance cache (device copies of parameters, the resolved attention mask).

        Masks are immutable, so anything derived from their numpy parameters is computed
        once: a parameter is copied to a device/dtype once and reused by every call.
        The cache is never pickled or copied with the mask.
        """
        cache = self.__dict__.get("_sa_state_cache")
        if cache is None:
            cache = {}
            self.__dict__["_sa_state_cache"] = cache
        return cache

    def _param_like(self, key: str, value: Any, like: Any) -> Any:
        """``as_like(value, like)``, cached per device and dtype when ``value`` is numpy.

        Torch-held parameters (trainable coefficients) are converted on every call so
        that gradients and in-place updates are seen.
        """
        if is_torch(value) or not is_torch(like):
            return as_like(value, like)
        ck = ("param", key, str(like.device), str(like.dtype))
        cache = self._state_cache()
        out = cache.get(ck)
        if out is None:
            out = as_like(value, like)
            cache[ck] = out
        return out

    def _index_like(self, key: str, make: Any, like: Any) -> Any:
        """``index_like(make(), like)``, built once per device (``make`` returns int64)."""
        if not is_torch(like):
            return index_like(make(), like)
        ck = ("index", key, str(like.device))
        cache = self._state_cache()
        out = cache.get(ck)
        if out is None:
            out = index_like(make(), like)
            cache[ck] = out
        return out

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_sa_state_cache", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __copy__(self) -> Mask:
        new = object.__new__(type(self))
        new.__dict__.update(self.__getstate__())
        return new

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

    def _normalized(self) -> Mask:
        """A mask equal to ``c · self`` for some ``c > 0``, better scaled for attention.

        Row normalization cancels any positive global factor, so attention may use it
        (e.g. a log-parameterized mask shifted by its maximum log-value).
        """
        return self

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
        return self._matmat(self._broadcast_operand(X), backend)

    def rmatmat(self, X: Any, *, backend: str = "auto", check_finite: bool = True) -> Any:
        """Apply the adjoint: ``Mᵀ @ X`` for ``X`` of shape ``(..., M, c)``."""
        backend = self._check_operand(X, "X", self.shape[0], "rows", backend, check_finite)
        return self._rmatmat(self._broadcast_operand(X), backend)

    def __matmul__(self, X: Any) -> Any:
        """``M @ X``: a :class:`Product` mask for a mask ``X``, else :meth:`matmat`.

        A 1-D ``X`` of length ``N`` is treated as a vector (result of length ``M``).
        """
        if isinstance(X, Mask):
            from .composition import Product

            return Product(self, X)
        if getattr(X, "ndim", None) == 1:
            return self.matmat(X[:, None])[..., 0]
        if not hasattr(X, "ndim"):
            return NotImplemented
        return self.matmat(X)

    @property
    def T(self) -> Mask:
        """The transposed mask ``Mᵀ`` (a lazy :class:`Transposed` view)."""
        from .composition import Transposed

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
        """Entrywise product ``self ⊙ other``.

        If either mask knows a structured form of the product (e.g. a Toeplitz mask
        times a causal mask is a Toeplitz mask with zero upper coefficients), that mask
        is returned; otherwise a lazy :class:`Hadamard` mask.
        """
        from .composition import Hadamard

        if isinstance(other, Mask) and other.shape == self.shape:
            for a, b in ((self, other), (other, self)):
                fused = a._hadamard_fused(b)
                if fused is not None:
                    return fused
        return Hadamard(self, other)

    def _hadamard_fused(self, other: Mask) -> Mask | None:
        """A structured mask equal to ``self ⊙ other``, or None if none is known."""
        return None

    def __mul__(self, other: Any) -> Mask:
        from .composition import Scaled

        if isinstance(other, Mask):
            return self.hadamard(other)
        if _is_real_scalar(other):
            return Scaled(self, float(other))
        return NotImplemented

    def __rmul__(self, other: Any) -> Mask:
        if _is_real_scalar(other):
            return self * other
        return NotImplemented

    def __add__(self, other: Any) -> Mask:
        from .composition import Sum

        if not isinstance(other, Mask):
            return NotImplemented
        return Sum(self, other)

    def kron(self, other: Mask) -> Mask:
        """Kronecker product ``self ⊗ other`` (a :class:`Kronecker` mask)."""
        from .composition import Kronecker

        return Kronecker(self, other)

    def cost(self, F: int) -> float:
        """Estimated floating-point operations of one product with ``F`` columns.

        The default is the dense product, ``2·M·N·F``; structured masks report the cost
        of the algorithm they dispatch to (used by dispatch and by the docs).
        """
        M, N = self.shape
        return 2.0 * M * N * F * max(1, math.prod(self.batch_shape))

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
    def _broadcast_operand(self, X: Any) -> Any:
        """``X`` broadcast to the common batch of ``X`` and the mask (kernels need it)."""
        batch = tuple(np.broadcast_shapes(tuple(X.shape[:-2]), self.batch_shape))
        if batch == tuple(X.shape[:-2]):
            return X
        return namespace(X).broadcast_to(X, (*batch, *X.shape[-2:]))

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


class CostDispatch:
    """Mixin of masks with several exact algorithms, chosen by a cost model.

    The mask has a ``method`` field (``"auto"`` or an algorithm name) and implements
    ``_costs(F) -> {algorithm: estimated flops}``; ``"auto"`` takes the cheapest.
    """

    method: str

    def _costs(self, F: int) -> dict[str, float]:
        raise AssertionError("CostDispatch masks implement _costs(F)")  # pragma: no cover

    def _choose(self, F: int) -> str:
        if self.method != "auto":
            return self.method
        costs = self._costs(F)
        return min(costs, key=costs.get)

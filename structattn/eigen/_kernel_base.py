"""The kernel base classes and the input checks every kernel shares.

:class:`Kernel` (``kernel(X, Y)``, ``kernel.diag(X)``, validated once here) and
:class:`FeatureKernel` (a kernel evaluated through an explicit feature map,
``κ(X, Y) = F(X) F(Y)ᵀ``).  The concrete kernels live in :mod:`._kernels_closed`,
:mod:`._kernels_network` and :mod:`._kernels_empirical`; the public module is
:mod:`structattn.eigen.kernels`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._array import (
    describe_array,
    is_torch,
    namespace,
    validate_float_array,
    validate_same_kind,
)


# ---------------------------------------------------------------------------- checks
def _positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        what = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {what}, got {value!r}")
    return value


def _int_at_least(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_points(X: Any, name: str = "X", *, check_finite: bool = True) -> None:
    """Check that ``X`` is a float ``(N, d)`` numpy array or torch tensor with ``N >= 1``."""
    validate_float_array(X, name, min_ndim=2, check_finite=check_finite)
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of points of shape (N, d), got shape "
            f"{tuple(X.shape)}; reshape 1-D data with X[:, None]"
        )
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(
            f"{name} must have N >= 1 points of dimension d >= 1, got {describe_array(X)}"
        )


def _check_pair(X: Any, Y: Any, dim: int | None = None) -> Any:
    check_points(X, "X")
    if Y is None:
        Y = X
    else:
        check_points(Y, "Y")
        validate_same_kind({"X": X, "Y": Y})
        if X.shape[1] != Y.shape[1]:
            raise ValueError(
                f"X and Y must have the same dimension d; got X.shape={tuple(X.shape)} "
                f"and Y.shape={tuple(Y.shape)}"
            )
    if dim is not None and X.shape[1] != dim:
        raise ValueError(
            f"this kernel is defined on points of dimension d={dim}, got "
            f"X.shape={tuple(X.shape)}"
        )
    return Y


def _sq_norms(X: Any) -> Any:
    return namespace(X).sum(X * X, axis=1)


def _clamp(x: Any, lo: float | None = None, hi: float | None = None) -> Any:
    """Clip to ``[lo, hi]`` (direct numpy/torch call: the array-API ``clip`` wrapper of
    array-api-compat costs ~0.5 ms per call on small torch tensors)."""
    if is_torch(x):
        return x.clamp(min=lo, max=hi)
    return np.clip(x, lo, hi)


def _relu_angular(xp: Any, c: Any) -> tuple[Any, Any]:
    """``J1(θ) = (sin θ + (π - θ) cos θ) / (2π)`` and ``J0(θ) = (π - θ) / (2π)``
    for ``cos θ = c`` (clipped to ``[-1, 1]`` on both sides)."""
    c = _clamp(c, -1.0, 1.0)
    theta = xp.acos(c)
    sin = xp.sqrt(_clamp(1 - c * c, 0.0))
    return (sin + (math.pi - theta) * c) / (2 * math.pi), (math.pi - theta) / (2 * math.pi)


# ------------------------------------------------------------------------------ base
class Kernel:
    """Base class: a symmetric positive semi-definite kernel ``κ(x, y)``.

    Subclasses implement ``_block(X, Y)`` (validated inputs) and may override
    ``_diag``, ``rank`` and ``features``.

    Attributes
    ----------
    name : str
        Short name used in reprs and benchmark tables.
    """

    name = "kernel"
    #: Dimension the kernel is tied to (``None``: any ``d``).
    dim: int | None = None

    def __call__(self, X: Any, Y: Any = None) -> Any:
        """The kernel matrix ``κ(X, Y)``.

        Parameters
        ----------
        X : array, shape (N, d)
        Y : array, shape (M, d), optional
            Defaults to ``X``.

        Returns
        -------
        array, shape (N, M)
            Of ``X``'s kind, dtype and device.
        """
        Y = _check_pair(X, Y, self.dim)
        return self._block(X, Y)

    def diag(self, X: Any) -> Any:
        """``κ(x_n, x_n)`` for every row of ``X``, shape ``(N,)``, ``O(N d)``."""
        _check_pair(X, None, self.dim)
        return self._diag(X)

    def _diag(self, X: Any) -> Any:
        xp = namespace(X)
        return xp.stack([self._block(X[i : i + 1], X[i : i + 1])[0, 0] for i in range(X.shape[0])])

    def _block(self, X: Any, Y: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def rank(self, d: int) -> int | None:
        """Rank of the integral operator on ``R^d`` (``None`` when infinite)."""
        return None

    #: True when the kernel can be evaluated only through :meth:`features`.
    feature_only = False

    def features(self, X: Any) -> Any:
        """Feature representation ``F(X)``, shape ``(N, S)``, ``κ ≈ F(x)·F(y)``."""
        raise NotImplementedError(f"{type(self).__name__} has no feature representation")

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({params})"

    def _params(self) -> dict[str, Any]:
        return {}



class FeatureKernel(Kernel):
    """A kernel evaluated through its feature map: ``κ(X, Y) = F(X) F(Y)ᵀ``.

    Subclasses implement :meth:`features` (validated inputs, shape ``(N, S)``); the
    kernel matrix costs ``O(N M S)`` on top of two feature calls and the diagonal
    ``O(N S)`` (``Σ_s F(x)_s²``), never an ``N x N`` matrix.
    """

    def _block(self, X: Any, Y: Any) -> Any:
        xp = namespace(X, Y)
        return self.features(X) @ xp.matrix_transpose(self.features(Y))

    def _diag(self, X: Any) -> Any:
        F = self.features(X)
        return namespace(F).sum(F * F, axis=1)

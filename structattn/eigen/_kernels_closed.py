"""Closed-form kernels (neuralef.md §1.7): RBF, polynomial, exponential, arc-cosine."""

from __future__ import annotations

import math
from typing import Any

from .._array import (
    as_generator,
    as_like,
    namespace,
)
from ._kernel_base import (
    Kernel,
    _clamp,
    _int_at_least,
    _positive,
    _relu_angular,
    _sq_norms,
    check_points,
)

__all__ = ["ArcCosineKernel", "ExponentialKernel", "PolynomialKernel", "RBFKernel"]


class RBFKernel(Kernel):
    """Gaussian kernel ``a · exp(-|x - y|² / (2 ℓ²))``.

    Parameters
    ----------
    lengthscale : float, default 1.0
        ``ℓ`` (the official NeuralEF helper's ``length_scale`` is ``ℓ²``).
    amplitude : float, default 1.0
        ``a``.

    Notes
    -----
    ``O(N M d)`` per block.
    """

    name = "rbf"

    def __init__(self, lengthscale: float = 1.0, amplitude: float = 1.0):
        self.lengthscale = _positive(lengthscale, "lengthscale")
        self.amplitude = _positive(amplitude, "amplitude")

    def _params(self) -> dict[str, Any]:
        return {"lengthscale": self.lengthscale, "amplitude": self.amplitude}

    def _block(self, X: Any, Y: Any) -> Any:
        xp = namespace(X, Y)
        sq = _sq_norms(X)[:, None] + _sq_norms(Y)[None, :] - 2 * (X @ xp.matrix_transpose(Y))
        sq = _clamp(sq, 0.0)
        return self.amplitude * xp.exp(sq * (-0.5 / self.lengthscale**2))

    def _diag(self, X: Any) -> Any:
        xp = namespace(X)
        return xp.full((X.shape[0],), self.amplitude, dtype=X.dtype, device=X.device)


class PolynomialKernel(Kernel):
    """Polynomial kernel ``(η xᵀy + ν)^p``.

    Parameters
    ----------
    degree : int, default 2
        ``p >= 1``.
    eta : float, default 1.0
        ``η > 0``.
    nu : float, default 1.0
        ``ν >= 0``.

    Notes
    -----
    Finite rank: ``C(d + p, p)`` with ``ν > 0``, ``C(d + p - 1, p)`` with ``ν = 0``
    (the paper's 1-D ``(x y + 1.5)^4`` has rank 5).
    """

    name = "polynomial"

    def __init__(self, degree: int = 2, eta: float = 1.0, nu: float = 1.0):
        self.degree = _int_at_least(degree, "degree", 1)
        self.eta = _positive(eta, "eta")
        self.nu = _positive(nu, "nu", allow_zero=True)

    def _params(self) -> dict[str, Any]:
        return {"degree": self.degree, "eta": self.eta, "nu": self.nu}

    def _block(self, X: Any, Y: Any) -> Any:
        xp = namespace(X, Y)
        return (self.eta * (X @ xp.matrix_transpose(Y)) + self.nu) ** self.degree

    def _diag(self, X: Any) -> Any:
        return (self.eta * _sq_norms(X) + self.nu) ** self.degree

    def rank(self, d: int) -> int:
        if self.nu > 0:
            return math.comb(d + self.degree, self.degree)
        return math.comb(d + self.degree - 1, self.degree)


class ExponentialKernel(Kernel):
    """The softmax (exponential) kernel ``exp(xᵀy / τ)``.

    ``exp(xᵀy/τ) = exp(|x|²/2τ) · exp(-|x - y|²/2τ) · exp(|y|²/2τ)``: a diagonal
    conjugation of the RBF kernel with ``ℓ² = τ``.  With ``τ = √d_head`` it is the kernel
    of ``softmax(QKᵀ/√d)``.  Its integral operator under ``N(0, σ² I)`` is
    Hilbert–Schmidt only for ``σ² < τ/2``.

    Parameters
    ----------
    tau : float
        Temperature ``τ > 0``.
    """

    name = "exponential"

    def __init__(self, tau: float):
        self.tau = _positive(tau, "tau")

    def _params(self) -> dict[str, Any]:
        return {"tau": self.tau}

    def _block(self, X: Any, Y: Any) -> Any:
        xp = namespace(X, Y)
        return xp.exp((X @ xp.matrix_transpose(Y)) / self.tau)

    def _diag(self, X: Any) -> Any:
        return namespace(X).exp(_sq_norms(X) / self.tau)


class ArcCosineKernel(Kernel):
    """Arc-cosine kernels: ``E_w[φ(wᵀx) φ(wᵀy)]``, ``w ~ N(0, I)``.

    * order 0 (step ``φ = 1{· > 0}``): ``(π - θ) / (2π)``;
    * order 1 (ReLU): ``|x||y| (sin θ + (π - θ) cos θ) / (2π)``,

    with ``θ`` the angle between ``x`` and ``y``.  This is the expectation convention;
    Cho & Saul's ``k_n`` is twice these values.

    Parameters
    ----------
    order : {0, 1}
    num_features : int, default 4096
        Random features used by :meth:`features`.
    seed : int or numpy Generator, default 0
        Source of the feature draws.
    """

    name = "arccos"

    def __init__(self, order: int = 1, *, num_features: int = 4096, seed: Any = 0):
        if order not in (0, 1) or isinstance(order, bool):
            raise ValueError(f"order must be 0 or 1, got {order!r}")
        self.order = int(order)
        self.num_features = _int_at_least(num_features, "num_features", 1)
        self.seed = seed

    def _params(self) -> dict[str, Any]:
        return {"order": self.order}

    def _block(self, X: Any, Y: Any) -> Any:
        xp = namespace(X, Y)
        nx = xp.sqrt(_sq_norms(X))[:, None]
        ny = xp.sqrt(_sq_norms(Y))[None, :]
        denom = nx * ny
        safe = xp.where(denom > 0, denom, xp.ones_like(denom))
        c = (X @ xp.matrix_transpose(Y)) / safe
        c = xp.where(denom > 0, c, xp.ones_like(c))  # zero vector: θ := 0 by convention
        j1, j0 = _relu_angular(xp, c)
        return j0 if self.order == 0 else denom * j1

    def _diag(self, X: Any) -> Any:
        xp = namespace(X)
        if self.order == 0:
            return xp.full((X.shape[0],), 0.5, dtype=X.dtype, device=X.device)
        return _sq_norms(X) / 2

    def features(self, X: Any) -> Any:
        """Monte Carlo features ``φ(W x) / √S``, ``W ~ N(0, I)`` drawn from ``seed``.

        Returns
        -------
        array, shape (N, num_features)
        """
        check_points(X, "X")
        W = as_generator(self.seed).standard_normal((X.shape[1], self.num_features))
        P = X @ as_like(W, X)
        xp = namespace(X)
        zero = xp.zeros_like(P)
        F = xp.where(P > 0, xp.ones_like(P), zero) if self.order == 0 else xp.maximum(P, zero)
        return F / math.sqrt(self.num_features)

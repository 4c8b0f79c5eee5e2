"""Positive semi-definite kernels ``κ(x, y)`` as small objects (numpy and torch).

Every kernel is called as ``kernel(X, Y)`` with ``X`` of shape ``(N, d)`` and ``Y`` of
shape ``(M, d)`` (``Y`` defaults to ``X``) and returns the ``(N, M)`` matrix
``κ(x_n, y_m)``: numpy in → numpy out, torch in → torch out (same device and dtype,
differentiable).  ``kernel.diag(X)`` gives ``κ(x_n, x_n)`` in ``O(N d)``.

Closed-form kernels (neuralef.md §1.7): :func:`rbf`, :func:`polynomial`,
:func:`exponential` (the softmax kernel ``exp(x·y/τ)``), :func:`arccos` (order 0 and 1),
:func:`nngp` (fully connected ReLU/erf network), :func:`ntk` (ReLU network).
Kernels known only through features (neuralef.md §1.5): :func:`nngp_features`
(Monte Carlo NNGP from random networks) and :func:`empirical_ntk` (``J Jᵀ`` of a torch
model, exact or by a random JVP sketch).  A kernel with a feature representation has
``kernel.features(X)`` of shape ``(N, S)`` with ``κ(x, y) ≈ features(x)·features(y)``
(exact for :func:`empirical_ntk` without sketch, an unbiased Monte Carlo estimate
otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._array import namespace
from ._kernel_base import FeatureKernel, Kernel, check_points  # noqa: F401  (old import path)
from ._kernels_closed import ArcCosineKernel, ExponentialKernel, PolynomialKernel, RBFKernel
from ._kernels_empirical import EmpiricalNTKKernel
from ._kernels_network import MonteCarloNNGPKernel, NNGPKernel, NTKKernel

__all__ = [
    "ArcCosineKernel",
    "EmpiricalNTKKernel",
    "ExponentialKernel",
    "Kernel",
    "MonteCarloNNGPKernel",
    "NNGPKernel",
    "NTKKernel",
    "PolynomialKernel",
    "RBFKernel",
    "arccos",
    "empirical_ntk",
    "exponential",
    "nngp",
    "nngp_features",
    "ntk",
    "polynomial",
    "rbf",
]



# ------------------------------------------------------------------------ factories
def rbf(lengthscale: float = 1.0, amplitude: float = 1.0) -> RBFKernel:
    """Gaussian kernel ``a exp(-|x - y|²/(2ℓ²))``; see :class:`RBFKernel`."""
    return RBFKernel(lengthscale, amplitude)


def polynomial(degree: int = 2, eta: float = 1.0, nu: float = 1.0) -> PolynomialKernel:
    """Polynomial kernel ``(η xᵀy + ν)^p``; see :class:`PolynomialKernel`."""
    return PolynomialKernel(degree, eta, nu)


def exponential(tau: float) -> ExponentialKernel:
    """Softmax kernel ``exp(xᵀy/τ)``; see :class:`ExponentialKernel`."""
    return ExponentialKernel(tau)


def arccos(order: int = 1, *, num_features: int = 4096, seed: Any = 0) -> ArcCosineKernel:
    """Arc-cosine kernel of order 0 or 1; see :class:`ArcCosineKernel`."""
    return ArcCosineKernel(order, num_features=num_features, seed=seed)


def nngp(depth: int, activation: str = "relu", *, sigma_w2: float = 2.0,
         sigma_b2: float = 1.0) -> NNGPKernel:
    """NNGP kernel of a fully connected ReLU/erf network; see :class:`NNGPKernel`."""
    return NNGPKernel(depth, activation, sigma_w2=sigma_w2, sigma_b2=sigma_b2)


def ntk(depth: int, *, sigma_w2: float = 2.0, sigma_b2: float = 1.0) -> NTKKernel:
    """NTK of a fully connected ReLU network; see :class:`NTKKernel`."""
    return NTKKernel(depth, sigma_w2=sigma_w2, sigma_b2=sigma_b2)


def nngp_features(depth: int, activation: str = "relu", *, width: int = 2048,
                  num_nets: int = 1, sigma_w2: float = 2.0, sigma_b2: float = 1.0,
                  seed: Any = 0) -> MonteCarloNNGPKernel:
    """Monte Carlo NNGP kernel from random networks; see :class:`MonteCarloNNGPKernel`."""
    return MonteCarloNNGPKernel(depth, activation, width=width, num_nets=num_nets,
                                sigma_w2=sigma_w2, sigma_b2=sigma_b2, seed=seed)


def empirical_ntk(model: Any, *, sketch: int | None = None, seed: int = 0) -> EmpiricalNTKKernel:
    """Empirical NTK of a torch model; see :class:`EmpiricalNTKKernel`."""
    return EmpiricalNTKKernel(model, sketch=sketch, seed=seed)


def kernel_matmul(kernel: Kernel, X: Any, Y: Any, V: Any, *, block: int = 2048) -> Any:
    """``κ(X, Y) V`` in row blocks of ``X`` (``O(block · M)`` extra memory).

    Parameters
    ----------
    kernel : Kernel
    X : array, shape (N, d)
    Y : array, shape (M, d)
    V : array, shape (M, r)
    block : int
        Rows of ``X`` per block.

    Returns
    -------
    array, shape (N, r)
    """
    xp = namespace(X, Y, V)
    parts: Sequence[Any] = [kernel(X[s : s + block], Y) @ V for s in range(0, X.shape[0], block)]
    return xp.concat(list(parts), axis=0)

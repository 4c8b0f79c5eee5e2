"""Kernel eigenfunctions: kernels, closed forms, Nyström, NeuralEF, metrics, attention features.

* :mod:`~structattn.eigen.kernels` — PSD kernels as objects with ``kernel(X, Y)`` on
  numpy and torch: :func:`rbf`, :func:`polynomial`, :func:`exponential` (softmax
  kernel), :func:`arccos`, :func:`nngp`, :func:`ntk`, :func:`empirical_ntk`,
  :func:`nngp_features` (Monte Carlo);
* :mod:`~structattn.eigen.closed_forms` — Hermite ground truths under Gaussian data
  (:func:`gaussian_rbf_eigenpairs`, :func:`gaussian_exponential_eigenpairs`) and
  Gauss–Hermite quadrature checks;
* :func:`nystrom` and :class:`NeuralEF` — two solvers returning :class:`EigenFunctions`;
* :mod:`~structattn.eigen.metrics` — sign-aligned cosines, principal angles, eigenvalue
  error, orthonormality, reconstruction ratio;
* :class:`EigenFeatures`, :func:`softmax_eigenfeatures`, :class:`EigenAttention` —
  ``softmax(QKᵀ/√d)V ≈ D⁻¹ Ψ_Q Λ Ψ_Kᵀ V`` through
  :func:`~structattn.attention.kernel_attention`.

See ``docs/eigen.rst`` and the spec ``neuralef.md``.
"""

from .base import EigenFunctions
from .closed_forms import (
    gauss_hermite_nodes,
    gaussian_exponential_eigenpairs,
    gaussian_rbf_eigenpairs,
    hermite_quadrature_check,
    quadrature_eigenpairs,
)
from .features import (
    EigenAttention,
    EigenFeatures,
    NormalizerError,
    RankClippedWarning,
    softmax_eigenfeatures,
)
from .kernels import (
    ArcCosineKernel,
    EmpiricalNTKKernel,
    ExponentialKernel,
    Kernel,
    MonteCarloNNGPKernel,
    NNGPKernel,
    NTKKernel,
    PolynomialKernel,
    RBFKernel,
    arccos,
    empirical_ntk,
    exponential,
    kernel_matmul,
    nngp,
    nngp_features,
    ntk,
    polynomial,
    rbf,
)
from .metrics import (
    align_signs,
    eigenfunction_cosines,
    eigenvalue_relative_error,
    orthonormality_error,
    principal_angles,
    reconstruction_ratio,
)
from .neuralef import NeuralEF, neuralef_surrogate_loss
from .nystrom import nystrom

__all__ = [
    "ArcCosineKernel",
    "EigenAttention",
    "EigenFeatures",
    "EigenFunctions",
    "EmpiricalNTKKernel",
    "ExponentialKernel",
    "Kernel",
    "MonteCarloNNGPKernel",
    "NNGPKernel",
    "NTKKernel",
    "NeuralEF",
    "NormalizerError",
    "PolynomialKernel",
    "RBFKernel",
    "RankClippedWarning",
    "align_signs",
    "arccos",
    "eigenfunction_cosines",
    "eigenvalue_relative_error",
    "empirical_ntk",
    "exponential",
    "gauss_hermite_nodes",
    "gaussian_exponential_eigenpairs",
    "gaussian_rbf_eigenpairs",
    "hermite_quadrature_check",
    "kernel_matmul",
    "neuralef_surrogate_loss",
    "nngp",
    "nngp_features",
    "ntk",
    "nystrom",
    "orthonormality_error",
    "polynomial",
    "principal_angles",
    "quadrature_eigenpairs",
    "rbf",
    "reconstruction_ratio",
    "softmax_eigenfeatures",
]

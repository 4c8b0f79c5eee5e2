"""Accuracy metrics for learned eigenfunctions (neuralef.md §3).

All functions take function *values* on a common sample of points (numpy arrays or
torch tensors, converted to float64 numpy) and return numpy results:

* :func:`align_signs` / :func:`eigenfunction_cosines` — per-function ``|cos|`` after
  the sign fix ``ψ ← sign(⟨ψ, ψ*⟩) ψ``;
* :func:`principal_angles` — angles between the spanned subspaces
  (:func:`scipy.linalg.subspace_angles`), the meaningful comparison when eigenvalues
  repeat or nearly repeat (rotations inside an eigenspace are not errors);
* :func:`eigenvalue_relative_error`, :func:`orthonormality_error`;
* :func:`reconstruction_ratio` — ``‖K - Ψ Λ Ψᵀ‖_F / ‖K - K_k‖_F`` against the best
  rank-``k`` truncation ``K_k`` (1 = optimal).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg

from .._array import is_torch

__all__ = [
    "align_signs",
    "eigenfunction_cosines",
    "eigenvalue_relative_error",
    "orthonormality_error",
    "principal_angles",
    "reconstruction_ratio",
]


def _values(a: Any, name: str, ndim: int = 2) -> np.ndarray:
    if is_torch(a):
        a = a.detach().cpu().numpy()
    a = np.asarray(a, dtype=np.float64)
    if ndim == 2 and a.ndim == 1:
        a = a[:, None]
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or Inf values")
    return a


def _pair(psi: Any, psi_true: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = _values(psi, "psi"), _values(psi_true, "psi_true")
    if a.shape != b.shape:
        raise ValueError(
            f"psi and psi_true must have the same shape (N points, k functions); got "
            f"{a.shape} and {b.shape}"
        )
    return a, b


def align_signs(psi: Any, psi_true: Any) -> np.ndarray:
    """``psi`` with every column multiplied by ``sign(⟨ψ_j, ψ*_j⟩)``.

    Parameters
    ----------
    psi, psi_true : array, shape (N, k)
        Values of the learned and reference functions on the same points.

    Returns
    -------
    numpy.ndarray, shape (N, k)
    """
    a, b = _pair(psi, psi_true)
    s = np.sign(np.sum(a * b, axis=0))
    return a * np.where(s == 0, 1.0, s)


def eigenfunction_cosines(psi: Any, psi_true: Any) -> np.ndarray:
    """Cosine between each sign-aligned learned function and its reference.

    ``cos_j = ⟨ψ_j, ψ*_j⟩ / (‖ψ_j‖ ‖ψ*_j‖)`` in the empirical ``L²`` of the points,
    after :func:`align_signs` (so ``cos_j >= 0``).  Use ``>= 10⁴`` held-out points.

    Returns
    -------
    numpy.ndarray, shape (k,)
    """
    a, b = _pair(psi, psi_true)
    a = align_signs(a, b)
    den = np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0)
    return np.sum(a * b, axis=0) / np.where(den > 0, den, 1.0)


def principal_angles(psi: Any, psi_true: Any) -> np.ndarray:
    """Principal angles (radians, descending) between the column spans.

    Wraps :func:`scipy.linalg.subspace_angles`; invariant to signs, rotations and
    orderings inside the subspaces.  The columns need not have the same count.

    Returns
    -------
    numpy.ndarray, shape (min(k, k'),)
    """
    a, b = _values(psi, "psi"), _values(psi_true, "psi_true")
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"psi and psi_true must be evaluated on the same N points; got {a.shape[0]} "
            f"and {b.shape[0]} rows"
        )
    return scipy.linalg.subspace_angles(a, b)


def eigenvalue_relative_error(mu_hat: Any, mu: Any) -> np.ndarray:
    """``|μ̂_j - μ_j| / |μ_j|`` per eigenvalue.

    Returns
    -------
    numpy.ndarray, shape (k,)
    """
    a, b = _values(mu_hat, "mu_hat", 1), _values(mu, "mu", 1)
    if a.shape != b.shape:
        raise ValueError(f"mu_hat and mu must have the same shape; got {a.shape} and {b.shape}")
    if np.any(b == 0):
        raise ValueError("mu contains zeros: the relative error is undefined")
    return np.abs(a - b) / np.abs(b)


def orthonormality_error(psi: Any) -> float:
    """``max |ΨᵀΨ/N - I|`` on the points (0 for exactly orthonormal functions)."""
    a = _values(psi, "psi")
    return float(np.max(np.abs(a.T @ a / a.shape[0] - np.eye(a.shape[1]))))


def reconstruction_ratio(K: Any, psi: Any, eigenvalues: Any) -> float:
    """``‖K - Ψ diag(μ) Ψᵀ‖_F / ‖K - K_k‖_F`` with ``K_k`` the best rank-``k`` part of ``K``.

    ``K_nm = κ(x_n, x_m)`` on the ``N`` points and ``Ψ`` the function values there
    (``κ ≈ Σ_j μ_j ψ_j ⊗ ψ_j``, so no ``1/N`` factors appear).  ``K_k`` comes from
    ``scipy.linalg.eigh`` (Eckart–Young); a ratio of 1 is optimal.

    Parameters
    ----------
    K : array, shape (N, N)
    psi : array, shape (N, k)
    eigenvalues : array, shape (k,)

    Returns
    -------
    float
        ``inf`` when ``K`` has rank ``<= k`` but the reconstruction is not exact.

    Notes
    -----
    ``O(N³)`` for the reference truncation.
    """
    Km = _values(K, "K")
    a = _values(psi, "psi")
    mu = _values(eigenvalues, "eigenvalues", 1)
    N, k = a.shape
    if Km.shape != (N, N) or mu.shape != (k,):
        raise ValueError(
            f"K must be (N, N) = ({N}, {N}) and eigenvalues (k,) = ({k},); got {Km.shape} "
            f"and {mu.shape}"
        )
    Ks = (Km + Km.T) / 2
    vals, vecs = scipy.linalg.eigh(Ks)
    order = np.argsort(np.abs(vals))[::-1]
    top = order[:k]
    best = np.linalg.norm(Ks - (vecs[:, top] * vals[top]) @ vecs[:, top].T)
    err = np.linalg.norm(Km - (a * mu) @ a.T)
    if best == 0:
        return 1.0 if err <= 1e-12 * np.linalg.norm(Km) else float("inf")
    return float(err / best)

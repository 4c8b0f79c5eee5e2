"""Metrics: sign alignment, principal angles with repeated eigenvalues, reconstruction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from structattn.eigen import (
    align_signs,
    eigenfunction_cosines,
    eigenvalue_relative_error,
    gaussian_rbf_eigenpairs,
    nystrom,
    orthonormality_error,
    principal_angles,
    rbf,
    reconstruction_ratio,
)

torch = pytest.importorskip("torch")


def test_sign_alignment_and_cosines():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((500, 3))
    psi = ref * [-1.0, 1.0, -2.0]
    np.testing.assert_allclose(align_signs(psi, ref), ref * [1.0, 1.0, 2.0])
    np.testing.assert_allclose(eigenfunction_cosines(psi, ref), 1.0, rtol=1e-14)
    np.testing.assert_allclose(eigenfunction_cosines(torch.tensor(psi), ref), 1.0, rtol=1e-14)


def test_subspace_metrics_with_repeated_eigenvalues():
    """Isotropic 2-D RBF: level 1 is a 2-fold eigenspace, so the individual functions
    are defined only up to a rotation; cosines see the rotation, principal angles not."""
    truth = gaussian_rbf_eigenpairs([1.0, 1.0], 1.0, 3)
    mu = truth.eigenvalues
    assert mu[1] == pytest.approx(mu[2], rel=1e-14)
    X = np.random.default_rng(1).standard_normal((10_000, 2))
    psi = truth(X)
    c, s = math.cos(0.6), math.sin(0.6)
    rotated = psi.copy()
    rotated[:, 1:] = psi[:, 1:] @ np.array([[c, -s], [s, c]])
    cos = eigenfunction_cosines(rotated, psi)
    assert cos[0] == pytest.approx(1.0) and np.all(cos[1:] < 0.9)
    np.testing.assert_allclose(principal_angles(rotated, psi), 0.0, atol=1e-7)
    # Nyström inside the degenerate level: subspace within the sampling error
    ef = nystrom(rbf(1.0), X[:1500], 3)
    Xt = np.random.default_rng(2).standard_normal((10_000, 2))
    assert np.max(principal_angles(ef(Xt), truth(Xt))) < 0.1
    assert np.max(principal_angles(ef(Xt)[:, 1:], truth(Xt)[:, 1:])) < 0.1


def test_eigenvalue_error_and_orthonormality():
    np.testing.assert_allclose(eigenvalue_relative_error([1.1, 0.45], [1.0, 0.5]), [0.1, 0.1])
    Q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((400, 4)))
    assert orthonormality_error(Q * 20.0) < 1e-12
    assert orthonormality_error(Q * 20.0 * [1.0, 1.0, 1.0, 1.1]) == pytest.approx(0.21, rel=1e-10)


def test_reconstruction_ratio_is_one_for_eigh():
    X = np.random.default_rng(4).standard_normal((300, 2))
    K = rbf(1.0)(X)
    ef = nystrom(rbf(1.0), X, 5)
    # Nyström at the training points is the eigh truncation: optimal
    assert reconstruction_ratio(K, ef(X), ef.eigenvalues) == pytest.approx(1.0, rel=1e-8)
    # a perturbed basis is worse than optimal
    noisy = ef(X) + 0.05 * np.random.default_rng(5).standard_normal((300, 5))
    assert reconstruction_ratio(K, noisy, ef.eigenvalues) > 1.01


def test_metric_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        eigenfunction_cosines(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="same N points"):
        principal_angles(np.zeros((5, 2)), np.zeros((6, 2)))
    with pytest.raises(ValueError, match="NaN or Inf"):
        eigenfunction_cosines(np.full((5, 2), np.nan), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="zeros"):
        eigenvalue_relative_error([1.0], [0.0])
    with pytest.raises(ValueError, match="must be"):
        reconstruction_ratio(np.eye(4), np.zeros((4, 2)), np.ones(3))

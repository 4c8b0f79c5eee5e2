"""Hermite closed forms: anchors, Gauss–Hermite quadrature, d-dim products, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from structattn.eigen import (
    exponential,
    gauss_hermite_nodes,
    gaussian_exponential_eigenpairs,
    gaussian_rbf_eigenpairs,
    hermite_quadrature_check,
    quadrature_eigenpairs,
    rbf,
)

from ..conftest import to_np

torch = pytest.importorskip("torch")


def test_rbf_anchor():
    ef = gaussian_rbf_eigenpairs(1.0, 1.0, 6)
    mu = ef.eigenvalues
    assert mu[0] == pytest.approx((math.sqrt(5) - 1) / 2, rel=1e-14)
    assert round(mu[0], 6) == 0.618034
    np.testing.assert_allclose(mu[1:] / mu[:-1], (3 - math.sqrt(5)) / 2, rtol=1e-13)
    assert round(mu[1] / mu[0], 6) == 0.381966


def test_exponential_anchor_tau8():
    mu = gaussian_exponential_eigenpairs(1.0, 8.0, 3).eigenvalues
    np.testing.assert_allclose(mu, [1.008034, 0.128037, 0.016263], atol=6e-7)


def test_gauss_hermite_nodes_moments():
    x, w = gauss_hermite_nodes(1.7, 40)
    assert w.sum() == pytest.approx(1.0, rel=1e-14)
    assert np.sum(w * x**2) == pytest.approx(1.7**2, rel=1e-13)
    assert np.sum(w * x**4) == pytest.approx(3 * 1.7**4, rel=1e-12)


@pytest.mark.parametrize(("sigma", "ell"), [(1.0, 1.0), (0.7, 1.5), (2.0, 0.8)])
def test_rbf_closed_form_against_quadrature(sigma, ell):
    ef = gaussian_rbf_eigenpairs(sigma, ell, 6)
    check = hermite_quadrature_check(ef, rbf(ell), sigma)
    assert np.all(check["eigenvalue_rel_error"] < 1e-6)
    assert check["orthonormality"] < 1e-6
    assert np.all(check["residual"] < 1e-6)


@pytest.mark.parametrize("tau", [3.0, 4.0, 8.0])
def test_exponential_closed_form_against_quadrature(tau):
    ef = gaussian_exponential_eigenpairs(1.0, tau, 6)
    check = hermite_quadrature_check(ef, exponential(tau), 1.0)
    assert np.all(check["eigenvalue_rel_error"] < 1e-6)  # six digits (neuralef.md §1.7)
    assert check["orthonormality"] < 1e-6
    assert np.all(check["residual"] < 1e-6)


def test_quadrature_eigenfunctions_match_closed_form_at_nodes():
    mu, x, psi = quadrature_eigenpairs(rbf(1.0), 1.0, 4, num_nodes=120)
    ref = gaussian_rbf_eigenpairs(1.0, 1.0, 4)
    np.testing.assert_allclose(mu, ref.eigenvalues, rtol=1e-10)
    truth = ref(x[:, None])
    _, w = gauss_hermite_nodes(1.0, 120)
    # signs are arbitrary: compare |<ψ, ψ*>_w| = 1
    overlap = np.abs(np.sum(w[:, None] * psi * truth, axis=0))
    np.testing.assert_allclose(overlap, 1.0, atol=1e-10)


def test_product_eigenpairs_anisotropic_and_degenerate():
    # anisotropic: products of 1-D pairs, sorted; orthonormal under the 2-D Gaussian
    s = [1.0, 0.5]
    ef = gaussian_rbf_eigenpairs(s, 1.0, 6)
    one = [gaussian_rbf_eigenpairs(si, 1.0, 6).eigenvalues for si in s]
    for mu, (i, j) in zip(ef.eigenvalues, ef.info["multi_indices"], strict=True):
        assert mu == pytest.approx(one[0][i] * one[1][j], rel=1e-14)
    assert np.all(np.diff(ef.eigenvalues) <= 0)
    x0, w0 = gauss_hermite_nodes(s[0], 60)
    x1, w1 = gauss_hermite_nodes(s[1], 60)
    P = np.stack(np.meshgrid(x0, x1, indexing="ij"), -1).reshape(-1, 2)
    W = np.outer(w0, w1).reshape(-1)
    psi = ef(P)
    np.testing.assert_allclose(psi.T @ (W[:, None] * psi), np.eye(6), atol=1e-10)
    # isotropic d = 3: level 1 has multiplicity 3
    iso = gaussian_rbf_eigenpairs([1.0] * 3, 1.0, 4).eigenvalues
    np.testing.assert_allclose(iso[1:], iso[1], rtol=1e-14)


def test_closed_form_torch_evaluation():
    ef = gaussian_exponential_eigenpairs([1.0, 0.8], 4.0, 5)
    Xn = np.random.default_rng(0).standard_normal((50, 2))
    out = ef(torch.tensor(Xn))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(to_np(out), ef(Xn), rtol=1e-12)


# --------------------------------------------------------------------------- bad input
def test_exponential_not_hilbert_schmidt():
    with pytest.raises(ValueError, match="not Hilbert–Schmidt"):
        gaussian_exponential_eigenpairs(2.0, 8.0, 3)  # σ² = 4 = τ/2
    with pytest.raises(ValueError, match="sigma² < tau/2"):
        gaussian_exponential_eigenpairs([1.0, 3.0], 8.0, 3)


def test_closed_form_bad_parameters():
    with pytest.raises(ValueError, match="sigma"):
        gaussian_rbf_eigenpairs(-1.0, 1.0, 3)
    with pytest.raises(ValueError, match="k must be"):
        gaussian_rbf_eigenpairs(1.0, 1.0, 0)
    with pytest.raises(ValueError, match="lengthscale"):
        gaussian_rbf_eigenpairs(1.0, float("nan"), 3)
    with pytest.raises(ValueError, match="dimension d=2"):
        gaussian_rbf_eigenpairs([1.0, 1.0], 1.0, 3)(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN or Inf"):
        gaussian_rbf_eigenpairs(1.0, 1.0, 3)(np.array([[np.inf]]))

"""Nyström: exact identities at the training points, population truth, solvers, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from structattn.eigen import (
    eigenfunction_cosines,
    eigenvalue_relative_error,
    gaussian_rbf_eigenpairs,
    nystrom,
    orthonormality_error,
    polynomial,
    rbf,
)
from structattn.testing import assert_close

from ..conftest import convert, to_np

torch = pytest.importorskip("torch")


def _sample(n, d=1, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def test_training_points_are_sqrtN_eigh_eigenvectors():
    X = _sample(300, 2, seed=1)
    kern = rbf(0.8)
    ef = nystrom(kern, X, 8)
    lam, U = np.linalg.eigh(kern(X))
    lam, U = lam[::-1][:8], U[:, ::-1][:, :8]
    psi = ef(X)
    signs = np.sign(np.sum(psi * U, axis=0))
    np.testing.assert_allclose(psi * signs, math.sqrt(300) * U, rtol=0, atol=1e-10 * math.sqrt(300))
    np.testing.assert_allclose(ef.eigenvalues, lam / 300, rtol=1e-12)
    assert orthonormality_error(psi) < 1e-12
    np.testing.assert_allclose(ef.info["train_values"], psi, rtol=0, atol=1e-10)


def test_extension_on_backends(backend, dtype):
    X = _sample(200, 2, seed=2)
    ef = nystrom(rbf(1.0), X, 5)
    Y = _sample(30, 2, seed=3)
    ref = ef(Y)
    (Yb,) = convert("torch" if backend == "torch" else "numpy", dtype, Y)
    out = ef(Yb)
    assert type(out) is type(Yb) and str(out.dtype).endswith(dtype)
    assert_close(to_np(out), ref, dtype=dtype)
    # torch training data gives the same eigenfunctions
    ef_t = nystrom(rbf(1.0), torch.tensor(X), 5)
    np.testing.assert_allclose(ef_t.eigenvalues, ef.eigenvalues, rtol=1e-12)


def test_against_rbf_hermite_truth():
    """σ = ℓ = 1 (μ0 = 0.618034, ratio 0.381966), N = 2000 i.i.d. points, k = 6.

    Sampling error is O(1/√N) ≈ 2.2 %: eigenvalues of the top four (gaps far above
    that) must be within 3/√N, their functions at cosine >= 0.99 on 10⁴ held-out points.
    """
    N = 2000
    ef = nystrom(rbf(1.0), _sample(N, seed=0), 6)
    truth = gaussian_rbf_eigenpairs(1.0, 1.0, 6)
    err = eigenvalue_relative_error(ef.eigenvalues, truth.eigenvalues)
    assert np.all(err[:4] < 3 / math.sqrt(N))
    assert abs(ef.eigenvalues[0] - 0.618034) < 3 / math.sqrt(N) * 0.618034
    assert abs(ef.eigenvalues[1] / ef.eigenvalues[0] - 0.381966) < 3 / math.sqrt(N)
    Xt = _sample(10_000, seed=99)
    cos = eigenfunction_cosines(ef(Xt), truth(Xt))
    assert np.all(cos[:4] >= 0.99)


@pytest.mark.parametrize("method", ["eigsh", "lobpcg"])
def test_iterative_solvers_match_dense(method):
    X = _sample(400, 2, seed=4)
    dense = nystrom(rbf(1.0), X, 4, method="eigh")
    it = nystrom(rbf(1.0), X, 4, method=method)
    np.testing.assert_allclose(it.eigenvalues, dense.eigenvalues, rtol=1e-8)
    Y = _sample(50, 2, seed=5)
    np.testing.assert_allclose(np.abs(eigenfunction_cosines(it(Y), dense(Y))), 1.0, atol=1e-8)
    auto = nystrom(rbf(1.0), X, 4, dense_threshold=100)
    assert auto.info["solver"] == "eigsh"


def test_landmarks():
    X = _sample(500, 1, seed=6)
    ef = nystrom(rbf(1.0), X, 3, landmarks=200, seed=7)
    idx = np.sort(np.random.default_rng(7).choice(500, size=200, replace=False))
    ref = nystrom(rbf(1.0), X[idx], 3)
    np.testing.assert_allclose(ef.eigenvalues, ref.eigenvalues, rtol=1e-12)
    np.testing.assert_allclose(ef(X[:20]), ref(X[:20]), rtol=1e-10, atol=1e-12)
    explicit = nystrom(rbf(1.0), X, 3, landmarks=X[idx])
    np.testing.assert_allclose(explicit.eigenvalues, ref.eigenvalues, rtol=1e-12)


def test_polynomial_finite_rank():
    X = np.random.default_rng(8).uniform(-1, 1, (400, 1))
    ef = nystrom(polynomial(4, eta=1.0, nu=1.5), X, 5)
    assert ef.k == 5 and np.all(ef.eigenvalues > 0)


# --------------------------------------------------------------------------- bad input
def test_k_larger_than_rank():
    X = np.random.default_rng(8).uniform(-1, 1, (400, 1))
    with pytest.raises(ValueError, match="exceeds the rank 5"):
        nystrom(polynomial(4, nu=1.5), X, 10)  # the paper's k = 10 on a rank-5 kernel


def test_k_larger_than_N():
    with pytest.raises(ValueError, match="exceeds the number of points N=20"):
        nystrom(rbf(), _sample(20), 21)
    with pytest.raises(ValueError, match="landmarks N=10"):
        nystrom(rbf(), _sample(50), 11, landmarks=10)


def test_k_larger_than_numerical_rank():
    X = np.repeat(_sample(3), 10, axis=0)  # 30 points, 3 distinct: numerical rank 3
    with pytest.raises(ValueError, match="numerical rank"):
        nystrom(rbf(), X, 5)


def test_non_finite_and_mismatched():
    X = _sample(50, 2)
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="X contains NaN or Inf"):
        nystrom(rbf(), X, 3)
    ef = nystrom(rbf(), _sample(50, 2), 3)
    with pytest.raises(ValueError, match="dimension d=2"):
        ef(_sample(5, 3))
    with pytest.raises(ValueError, match="landmarks must have the dimension"):
        nystrom(rbf(), _sample(50, 2), 3, landmarks=_sample(10, 3))
    with pytest.raises(TypeError, match="Kernel"):
        nystrom(lambda a, b: a @ b.T, _sample(50, 2), 3)
    with pytest.raises(ValueError, match="method"):
        nystrom(rbf(), _sample(50, 2), 3, method="qr")

"""Lasso: closed forms, agreement with scikit-learn, certificates, kernels, gradients, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from structattn.solvers import ConvergenceWarning, lasso, soft_threshold

from ..conftest import to_np

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(8)


def _problem(n=12, k=8, c=3, batch=(), seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((*batch, n, k)), rng.standard_normal((*batch, n, c))


def _objective(D, X, Z, lam):
    return 0.5 * np.sum((X - D @ Z) ** 2) + lam * np.sum(np.abs(Z))


@pytest.mark.parametrize("method", ["ista", "fista"])
def test_orthonormal_dictionary_is_soft_threshold(backend, method):
    Q, _ = np.linalg.qr(RNG.standard_normal((10, 6)))
    X = RNG.standard_normal((10, 4))
    if backend == "torch":
        D, Xa = torch.as_tensor(Q), torch.as_tensor(X)
    else:
        D, Xa = Q, X
    res = lasso(D, Xa, 0.4, method=method, L=1.0, backend=backend)
    expected = soft_threshold(Q.T @ X, 0.4)
    np.testing.assert_allclose(to_np(res.Z), expected, atol=1e-10, rtol=0)
    assert res.converged and res.n_iter <= 2  # one step, one to confirm


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_sklearn(seed):
    sklearn_linear = pytest.importorskip("sklearn.linear_model")
    D, X = _problem(n=20, k=8, c=3, seed=seed)
    lam = 0.5
    res = lasso(D, X, lam, method="fista", tol=1e-12, n_iter=20000, backend="numpy")
    assert res.converged and res.kkt_residual <= 1e-12
    n = D.shape[0]
    # sklearn minimizes 1/(2n)||x - Dz||² + α||z||₁  ⇒  α = λ/n
    sk = sklearn_linear.Lasso(alpha=lam / n, fit_intercept=False, tol=1e-14, max_iter=100000)
    Z_sk = np.stack([sk.fit(D, X[:, j]).coef_ for j in range(X.shape[1])], axis=1)
    np.testing.assert_allclose(res.Z, Z_sk, atol=1e-6)
    np.testing.assert_allclose(res.recon, D @ Z_sk, atol=1e-6)
    f, f_sk = _objective(D, X, res.Z, lam), _objective(D, X, Z_sk, lam)
    assert f <= f_sk * (1 + 1e-8)


@pytest.mark.parametrize("method", ["ista", "fista", "lca_euler", "lca_rk4"])
def test_certificates_small_at_convergence(method):
    D, X = _problem(batch=(2,), seed=3)
    res = lasso(D, X, 0.3, method=method, n_iter=20000, tol=1e-10, backend="numpy",
                history=True)
    assert res.converged
    assert res.kkt_residual <= 1e-10
    assert 0 <= res.duality_gap + 1e-12 and res.duality_gap <= 1e-7
    assert len(res.history) == res.n_iter
    if method in ("ista", "lca_euler"):  # monotone descent (step ≤ 1/L)
        assert np.all(np.diff(res.history) <= 1e-12)
    Zi = soft_threshold(res.Z - (np.swapaxes(D, -1, -2) @ (res.recon - X)) / res.L, 0.3 / res.L)
    assert np.max(np.abs(Zi - res.Z)) * res.L <= 1e-9


def test_fista_beats_ista_on_ill_conditioned_dictionary():
    # overcomplete, strongly correlated atoms: DᵀD is singular, ISTA is sublinear
    rng = np.random.default_rng(4)
    D = rng.standard_normal((20, 60)) + 3 * rng.standard_normal((20, 1))
    D /= np.linalg.norm(D, axis=0)
    X = rng.standard_normal((20, 2))
    kw = dict(n_iter=60000, tol=1e-6, backend="numba")
    r_fista = lasso(D, X, 0.05, method="fista", **kw)
    with pytest.warns(ConvergenceWarning):
        r_ista = lasso(D, X, 0.05, method="ista", **kw)
    assert r_fista.converged and not r_ista.converged
    assert r_fista.n_iter < r_ista.n_iter / 2
    assert r_fista.duality_gap < r_ista.duality_gap


@pytest.mark.parametrize("method", ["ista", "fista"])
def test_numba_equals_array_api(method):
    D, X = _problem(n=15, k=10, c=4, batch=(3,), seed=5)
    kw = dict(method=method, n_iter=300, tol=0.0, L="rowsum", init="one_step", warn=False)
    a = lasso(D, X, 0.2, backend="numpy", **kw)
    b = lasso(D, X, 0.2, backend="numba", **kw)
    np.testing.assert_allclose(b.Z, a.Z, atol=1e-10, rtol=0)
    assert a.n_iter == b.n_iter == 300


def test_torch_matches_numpy_and_broadcasts_dictionary():
    D, X = _problem(n=12, k=6, c=2, batch=(), seed=6)
    Xb = np.stack([X, 2 * X])
    a = lasso(D, Xb, 0.1, method="fista", backend="numpy")
    t = lasso(torch.as_tensor(D), torch.as_tensor(Xb), 0.1, method="fista")
    assert a.Z.shape == (2, 6, 2) and isinstance(t.Z, torch.Tensor)
    np.testing.assert_allclose(to_np(t.Z), a.Z, atol=1e-10)


def test_unconverged_warns():
    D, X = _problem(seed=7)
    with pytest.warns(ConvergenceWarning, match="KKT"):
        res = lasso(D, X, 0.1, n_iter=2, backend="numpy")
    assert not res.converged


def test_gradcheck_unrolled_ista():
    rng = np.random.default_rng(9)
    D = torch.tensor(rng.standard_normal((6, 4)), requires_grad=True)
    X = torch.tensor(rng.standard_normal((6, 2)), requires_grad=True)

    def f(D, X):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return lasso(D, X, 0.05, method="ista", n_iter=4, tol=0.0, L=8.0).recon

    assert torch.autograd.gradcheck(f, (D, X), eps=1e-6, atol=1e-5, rtol=1e-3)


# ----------------------------------------------------------------- errors
def test_negative_lambda():
    D, X = _problem()
    with pytest.raises(ValueError, match="lam"):
        lasso(D, X, -0.1)


def test_zero_column():
    D, X = _problem()
    D[:, 3] = 0.0
    with pytest.raises(ValueError, match="zero column"):
        lasso(D, X, 0.1)


def test_shape_mismatch():
    D, X = _problem()
    with pytest.raises(ValueError, match="same number of rows"):
        lasso(D, X[:-1], 0.1)


def test_non_finite():
    D, X = _problem()
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        lasso(D, X, 0.1)


def test_bad_method():
    D, X = _problem()
    with pytest.raises(ValueError, match="method"):
        lasso(D, X, 0.1, method="admm")

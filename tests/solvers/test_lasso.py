"""Lasso: closed forms, agreement with scikit-learn, certificates, kernels, gradients, errors."""

from __future__ import annotations

import sys
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
    res = lasso(D, X, lam, method="fista", tol=1e-12, max_iter=20000, backend="numpy")
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
    res = lasso(D, X, 0.3, method=method, max_iter=20000, tol=1e-10, backend="numpy",
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
    kw = dict(max_iter=60000, tol=1e-6, backend="numba")
    r_fista = lasso(D, X, 0.05, method="fista", **kw)
    with pytest.warns(ConvergenceWarning):
        r_ista = lasso(D, X, 0.05, method="ista", **kw)
    assert r_fista.converged and not r_ista.converged
    assert r_fista.n_iter < r_ista.n_iter / 2
    assert r_fista.duality_gap < r_ista.duality_gap


@pytest.mark.parametrize("method", ["ista", "fista"])
def test_numba_equals_array_api(method):
    D, X = _problem(n=15, k=10, c=4, batch=(3,), seed=5)
    kw = dict(method=method, max_iter=300, tol=0.0, L="rowsum", init="one_step", warn=False)
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
        res = lasso(D, X, 0.1, max_iter=2, backend="numpy")
    assert not res.converged


def test_gradcheck_unrolled_ista():
    rng = np.random.default_rng(9)
    D = torch.tensor(rng.standard_normal((6, 4)), requires_grad=True)
    X = torch.tensor(rng.standard_normal((6, 2)), requires_grad=True)

    def f(D, X):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return lasso(D, X, 0.05, method="ista", max_iter=4, tol=0.0, L=8.0).recon

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


# ----------------------------------------------------------------- implicit gradients
def _stable_problem():
    rng = np.random.default_rng(0)
    return (torch.tensor(rng.standard_normal((12, 6)), requires_grad=True),
            torch.tensor(rng.standard_normal((12, 3)), requires_grad=True), 0.8)


def test_implicit_equals_unrolled_to_convergence():
    D, X, lam = _stable_problem()
    w = torch.arange(6.0, dtype=torch.float64)[:, None]
    r = lasso(D, X, lam, method="fista", tol=1e-13, max_iter=50000, grad="implicit")
    assert r.kkt_residual <= 1e-13
    # support check: strict complementarity margin ≥ 1e-3
    g = (D.T @ (X - D @ r.Z)).detach()
    off = r.Z.detach() == 0
    assert off.any() and (~off).any() and g[off].abs().max() <= lam - 1e-3
    gi = torch.autograd.grad((r.recon ** 2).sum() + (w * r.Z).sum(), (D, X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        u = lasso(D, X, lam, method="ista", tol=0.0, max_iter=3000)
    assert u.kkt_residual <= 1e-13
    gu = torch.autograd.grad((u.recon ** 2).sum() + (w * u.Z).sum(), (D, X))
    for a, b in zip(gi, gu, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-10)


def test_gradcheck_implicit_with_broadcast_dictionary():
    D, _, lam = _stable_problem()
    Xb = torch.tensor(np.random.default_rng(1).standard_normal((2, 12, 3)), requires_grad=True)

    def f(D, X):
        r = lasso(D, X, lam, method="fista", tol=1e-13, max_iter=50000, grad="implicit")
        return r.Z, r.recon

    # fast mode: random Jacobian projections (each full-Jacobian column re-solves a lasso)
    assert torch.autograd.gradcheck(f, (D, Xb), eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)


def test_implicit_falls_back_when_not_converged():
    D, X, lam = _stable_problem()
    with pytest.warns(RuntimeWarning, match="falling back"):
        r = lasso(D, X, lam, max_iter=3, tol=1e-12, grad="implicit", warn=False)
    r.recon.sum().backward()
    assert torch.isfinite(D.grad).all()


def test_bad_grad():
    D, X = _problem()
    with pytest.raises(ValueError, match="grad"):
        lasso(D, X, 0.1, grad="adjoint")
    with pytest.raises(ValueError, match="shrink='soft'"):
        lasso(D, X, 0.1, grad="implicit", shrink="gelu")


# ----------------------------------------------------------------- GELU shrink
def test_gelu_shrink_definition():
    from scipy.stats import norm

    from structattn.solvers.lasso import gelu_shrink

    u = np.linspace(-3, 3, 61)
    tau = 0.7
    x = np.abs(u) - tau
    expected = np.sign(u) * x * norm.cdf(x)
    np.testing.assert_allclose(gelu_shrink(u, tau), expected, rtol=1e-14, atol=1e-16)
    ut = torch.tensor(u)
    ref = torch.sign(ut) * torch.nn.functional.gelu(ut.abs() - tau)
    np.testing.assert_allclose(to_np(gelu_shrink(ut, tau)), ref.numpy(), atol=1e-15)
    # not a prox: small inputs come out with flipped sign, large ones ≈ soft threshold
    assert gelu_shrink(np.array([0.3]), tau)[0] < 0
    assert abs(gelu_shrink(np.array([9.0]), tau)[0] - (9.0 - tau)) < 1e-12


def test_gelu_shrink_one_step_and_gradcheck():
    from structattn.solvers.lasso import gelu_shrink

    D, X = _problem(n=10, k=5, c=2, seed=11)
    r = lasso(D, X, 0.2, shrink="gelu", max_iter=1, tol=0.0, L=20.0, warn=False, backend="numpy")
    G, B = D.T @ D, D.T @ X
    Z0 = np.zeros_like(B)
    np.testing.assert_allclose(r.Z, gelu_shrink(Z0 - (G @ Z0 - B) / 20.0, 0.2 / 20.0),
                               atol=1e-15)
    Dt = torch.tensor(D, requires_grad=True)
    Xt = torch.tensor(X, requires_grad=True)

    def f(D, X):
        return lasso(D, X, 0.2, shrink="gelu", max_iter=5, tol=0.0, L=20.0, init="one_step",
                     warn=False).recon

    assert torch.autograd.gradcheck(f, (Dt, Xt), eps=1e-6, atol=1e-5, rtol=1e-3)


# ----------------------------------------------------------------- integrators, precision
def _lca_reference(D, X, lam, L, T):
    from scipy.integrate import solve_ivp

    G, B = D.T @ D / L, D.T @ X / L
    k, c = B.shape

    def f(_, u):
        U = u.reshape(k, c)
        a = soft_threshold(U, lam / L)
        return (-U + B - (G - np.eye(k)) @ a).ravel()

    sol = solve_ivp(f, (0.0, T), np.zeros(k * c), method="RK45", rtol=1e-12, atol=1e-14)
    return soft_threshold(sol.y[:, -1].reshape(k, c), lam / L)


@pytest.mark.parametrize("method,dt,bound", [("lca_euler", 0.01, 5e-3),
                                             ("lca_rk4", 0.01, 1e-7)])
def test_lca_integrators_match_solve_ivp(method, dt, bound):
    D, X = _problem(n=8, k=5, c=2, seed=12)
    L, lam, T = float(np.linalg.eigvalsh(D.T @ D).max()), 0.5, 4.0
    ref = _lca_reference(D, X, lam, L, T)
    n = round(T / dt)
    r = lasso(D, X, lam, method=method, dt=dt, max_iter=n, tol=0.0, L=L, warn=False,
              backend="numpy")
    err = np.max(np.abs(r.Z - ref))
    assert err <= bound
    # halving the step shrinks the error by the integrator's order (≥ 1.7 for Euler)
    r2 = lasso(D, X, lam, method=method, dt=dt / 2, max_iter=2 * n, tol=0.0, L=L, warn=False,
               backend="numpy")
    err2 = np.max(np.abs(r2.Z - ref))
    if method == "lca_euler":
        assert err / err2 >= 1.7
    else:
        assert err2 <= bound


@pytest.mark.parametrize("method", ["ista", "fista"])
def test_float32_matches_float64(method):
    D, X = _problem(n=15, k=8, c=3, seed=13)
    kw = dict(method=method, max_iter=20000, tol=0.0, warn=False, backend="numpy")
    a = lasso(D, X, 0.3, **kw)
    b = lasso(D.astype(np.float32), X.astype(np.float32), 0.3, **kw)
    assert a.kkt_residual <= 1e-10 and b.Z.dtype == np.float32
    np.testing.assert_allclose(b.Z, a.Z, atol=1e-4, rtol=0)
    np.testing.assert_allclose(b.recon, a.recon, atol=1e-4, rtol=0)


# ----------------------------------------------------------------- second derivatives
@pytest.mark.parametrize("shrink", ["soft", "gelu"])
@pytest.mark.parametrize("method", ["ista", "fista", "lca_euler", "lca_rk4"])
def test_gradgradcheck_unrolled(method, shrink):
    rng = np.random.default_rng(21)
    D = torch.tensor(rng.standard_normal((6, 4)), requires_grad=True)
    X = torch.tensor(rng.standard_normal((6, 2)), requires_grad=True)
    lam = 0.3

    def f(D, X):
        return lasso(D, X, lam, method=method, shrink=shrink, max_iter=4, tol=0.0, L=8.0,
                     warn=False).recon

    if shrink == "soft":  # piecewise linear: every thresholded input must avoid ±λ/L
        margins = []

        def spy(u, tau):
            margins.append(float((u.abs() - tau).abs().min()))
            return soft_threshold(u, tau)

        mp = pytest.MonkeyPatch()
        mp.setattr(sys.modules["structattn.solvers.lasso"], "soft_threshold", spy)
        try:
            f(D.detach(), X.detach())
        finally:
            mp.undo()
        assert min(margins) > 1e-4
    assert torch.autograd.gradcheck(f, (D, X), eps=1e-6, atol=1e-5, rtol=1e-3)
    assert torch.autograd.gradgradcheck(f, (D, X), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_gradgradcheck_implicit_with_broadcast_dictionary():
    D, _, lam = _stable_problem()
    Xb = torch.tensor(np.random.default_rng(1).standard_normal((2, 12, 3)), requires_grad=True)

    def f(D, X):
        r = lasso(D, X, lam, method="fista", tol=1e-13, max_iter=50000, grad="implicit")
        return r.Z, r.recon

    assert torch.autograd.gradgradcheck(f, (D, Xb), eps=1e-6, atol=1e-5, rtol=1e-3,
                                        fast_mode=True)


def test_implicit_hessian_matches_unrolled_to_convergence():
    D, X, lam = _stable_problem()

    def loss(D, X, grad):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if grad == "implicit":
                r = lasso(D, X, lam, method="fista", tol=1e-13, max_iter=50000, grad="implicit")
            else:
                r = lasso(D, X, lam, method="fista", tol=0.0, max_iter=400)
        return (r.recon ** 3).sum() + (r.Z ** 2).sum()

    hv = []
    for grad in ("implicit", "unroll"):
        gD, gX = torch.autograd.grad(loss(D, X, grad), (D, X), create_graph=True)
        hv.append(torch.autograd.grad(gD.sum() + (gX ** 2).sum(), (D, X)))
    for a, b in zip(*hv, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-9)

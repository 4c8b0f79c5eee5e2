"""NeuralEF: the shared R̂/G algebra, the surrogate's gradient, convergence against truths."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from structattn.eigen import (
    NeuralEF,
    _core,
    eigenfunction_cosines,
    eigenvalue_relative_error,
    gaussian_rbf_eigenpairs,
    neuralef_surrogate_loss,
    nngp_features,
    nystrom,
    orthonormality_error,
    polynomial,
    principal_angles,
    rbf,
)
from structattn.eigen.neuralef import _bump_centers

from ..conftest import to_np

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(3)


def _batch(B=32, k=4, d=2, seed=0):
    rng = np.random.default_rng(seed)
    Xb = rng.standard_normal((B, d))
    K = rbf(1.0)(Xb)
    psi = rng.standard_normal((B, k))
    return K, psi


# ----------------------------------------------------------------- shared algebra
def test_batch_terms_against_loops_and_torch():
    K, psi = _batch()
    B, k = psi.shape
    terms = _core.batch_terms(psi, K @ psi)
    R = psi.T @ K @ psi / B**2
    U = np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            U[i, j] = R[i, j] / R[i, i]
    G = np.stack([K @ psi[:, j] - sum(U[i, j] * (K @ psi[:, i]) for i in range(j))
                  for j in range(k)], axis=1)
    np.testing.assert_allclose(terms.R, R, rtol=1e-13)
    np.testing.assert_allclose(terms.U, U, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(terms.G, G, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(terms.eigenvalues, np.diag(R), rtol=1e-13)
    tt = _core.batch_terms(torch.tensor(psi), torch.tensor(K) @ torch.tensor(psi))
    for a, b in zip(tt, terms, strict=True):
        np.testing.assert_allclose(to_np(a), b, rtol=1e-12, atol=1e-15)


def test_surrogate_gradient_is_minus_2G_over_B2():
    K, psi = _batch(B=40, k=5)
    B = psi.shape[0]
    Kt = torch.tensor(K)
    p = torch.tensor(psi, requires_grad=True)
    loss = neuralef_surrogate_loss(p, lambda V: Kt @ V)
    loss.backward()
    G = _core.batch_terms(psi, K @ psi).G
    np.testing.assert_allclose(to_np(p.grad), -2 * G / B**2, rtol=1e-12, atol=1e-16)
    R = psi.T @ K @ psi / B**2
    expected = -np.trace(R) + sum(R[i, j] ** 2 / R[i, i] for i in range(5) for j in range(i + 1, 5))
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-13)


def test_split_surrogate_gradient():
    K, psi = _batch(B=40, k=3)
    B, h = 40, 20
    Kt = torch.tensor(K)
    parts = (Kt[:h, :h], Kt[h:, h:])

    def op(V, part=None):
        return Kt @ V if part is None else parts[part] @ V

    p = torch.tensor(psi, requires_grad=True)
    neuralef_surrogate_loss(p, op, split=True).backward()
    a, b = psi[:h], psi[h:]
    Ka, Kb = K[:h, :h], K[h:, h:]
    den = np.diag(b.T @ Kb @ b) / h**2
    cross = (Ka @ a).T @ a / h**2
    grad = -2 * K @ psi / B**2
    for j in range(3):
        for i in range(j):
            grad[:h, j] += 2 * cross[i, j] / den[i] * (Ka @ a[:, i]) / h**2
    np.testing.assert_allclose(to_np(p.grad), grad, rtol=1e-12, atol=1e-16)


def test_l2bn_forward_backward_match_autograd():
    h = RNG.standard_normal((30, 4)) * [1.0, 2.0, 0.5, 3.0]
    g = RNG.standard_normal((30, 4))
    ht = torch.tensor(h, requires_grad=True)
    psi_t, _s_t = _core.l2bn_forward(ht)
    torch.sum(psi_t * torch.tensor(g)).backward()
    psi, s = _core.l2bn_forward(h)
    np.testing.assert_allclose(np.mean(psi**2, axis=0), 1.0, rtol=1e-13)
    np.testing.assert_allclose(to_np(ht.grad), _core.l2bn_backward(g, psi, s), rtol=1e-12)


def test_diagonal_free_rayleigh_against_loops():
    K, psi = _batch(B=25, k=3)
    N = 25
    mu = _core.diagonal_free_rayleigh(psi, K @ psi, np.diag(K))
    for j in range(3):
        off = sum(psi[n, j] * K[n, m] * psi[m, j] for n in range(N) for m in range(N) if n != m)
        ref = off / (N * (N - 1)) / (np.sum(psi[:, j] ** 2) / N)
        assert mu[j] == pytest.approx(ref, rel=1e-12)


# ---------------------------------------------------------------------- convergence
def test_linear_features_against_hermite_truth():
    """Optimiser correctness with the linear-in-features model (neuralef.md §3.4).

    RBF σ = ℓ = 1, k = 4 trained, B = 256, 1200 Adam steps (lr 2e-2, cosine), fixed
    seeds; N = 20 000 samples so that the finite-sample error of the target is small.
    Top k - 1 = 3: cosine >= 0.99, eigenvalue error <= 5 % (diagonal-free Rayleigh);
    the k-th: cosine >= 0.95, eigenvalue <= 15 %.
    """
    X = np.random.default_rng(0).standard_normal((20_000, 1))
    ef = NeuralEF(rbf(1.0), 4, network="linear-features", steps=1200, lr=2e-2, seed=0).fit(X)
    truth = gaussian_rbf_eigenpairs(1.0, 1.0, 4)
    Xt = np.random.default_rng(99).standard_normal((10_000, 1))
    cos = eigenfunction_cosines(ef(Xt), truth(Xt))
    err = eigenvalue_relative_error(ef.eigenvalues, truth.eigenvalues)
    assert np.all(cos[:3] >= 0.99), cos
    assert np.all(err[:3] <= 0.05), err
    assert cos[3] >= 0.95 and err[3] <= 0.15, (cos, err)
    assert orthonormality_error(ef(Xt)) <= 0.05
    assert np.all(np.diff(ef.eigenvalues) < 0)


def test_linear_features_reach_rayleigh_ritz_target():
    """The exact target of ψ = Φ W: generalized eigh of (ΦᵀKΦ/N², ΦᵀΦ/N) on the data."""
    N = 2000
    X = np.random.default_rng(1).standard_normal((N, 1))
    ef = NeuralEF(rbf(1.0), 4, network="linear-features", steps=1200, lr=2e-2, seed=1,
                  eval_points=N).fit(X)
    centers, width = _bump_centers(X, 40, None)
    Phi = np.hstack([np.ones((N, 1)), np.exp(-(X - centers.T) ** 2 / (2 * width**2))])
    A = Phi.T @ rbf(1.0)(X) @ Phi / N**2
    Bm = Phi.T @ Phi / N
    lam, V = np.linalg.eigh(Bm)
    keep = lam > 1e-10 * lam[-1]
    Wh = V[:, keep] / np.sqrt(lam[keep])  # same whitened span as the model
    vals, vecs = scipy.linalg.eigh(Wh.T @ A @ Wh)
    target = Phi @ Wh @ vecs[:, ::-1][:, :4]
    cos = eigenfunction_cosines(ef(X), target)
    assert np.all(cos[:3] >= 0.995), cos
    # eigenvalues: the Ritz values include the O(1/N) kernel diagonal, the estimator not
    np.testing.assert_allclose(ef.eigenvalues[:3], vals[::-1][:3], rtol=0.02)


def test_deterministic_and_estimators():
    X = np.random.default_rng(2).standard_normal((1000, 1))
    kw = {"network": "linear-features", "steps": 150, "lr": 1e-2, "seed": 5}
    a = NeuralEF(rbf(1.0), 3, **kw).fit(X)
    b = NeuralEF(rbf(1.0), 3, **kw).fit(X)
    np.testing.assert_array_equal(a(X[:50]), b(X[:50]))
    np.testing.assert_array_equal(a.eigenvalues, b.eigenvalues)
    e = NeuralEF(rbf(1.0), 3, eigenvalue_estimator="ema", **kw).fit(X)
    np.testing.assert_array_equal(e.eigenvalues, e.info["ema_eigenvalues"])
    np.testing.assert_array_equal(a.eigenvalues, a.info["rayleigh_eigenvalues"])
    # two different estimators of the same eigenvalues: not identical, but close
    assert not np.array_equal(e.eigenvalues, a.eigenvalues)
    np.testing.assert_allclose(e.eigenvalues, a.eigenvalues, rtol=0.2)
    # torch in -> torch out; float32 training
    Xt = torch.tensor(X[:20])
    out = a(Xt)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(to_np(out), a(X[:20]), rtol=1e-12)
    f32 = NeuralEF(rbf(1.0), 2, **kw).fit(X.astype(np.float32))
    assert f32(X[:5].astype(np.float32)).dtype == np.float32


def test_split_batch_converges():
    X = np.random.default_rng(4).standard_normal((20_000, 1))
    ef = NeuralEF(rbf(1.0), 3, network="linear-features", steps=800, lr=2e-2, seed=4,
                  split_batch=True).fit(X)
    truth = gaussian_rbf_eigenpairs(1.0, 1.0, 3)
    Xt = np.random.default_rng(98).standard_normal((10_000, 1))
    cos = eigenfunction_cosines(ef(Xt), truth(Xt))
    assert np.all(cos[:2] >= 0.99), cos


def test_feature_kernel_route():
    """Monte Carlo NNGP kernel (features only): K_b Ψ = F (Fᵀ Ψ), against Nyström on
    the same feature kernel; anisotropic data so that the top levels are distinct."""
    X = np.random.default_rng(6).standard_normal((4000, 2)) * [1.0, 0.3]
    kern = nngp_features(1, "relu", width=256, seed=2)
    ef = NeuralEF(kern, 3, network="mlp", activation="tanh", steps=400, lr=1e-2,
                  batch_size=128, seed=0, eval_points=1000).fit(X)
    ref = nystrom(kern, X[:1500], 3)
    Xt = np.random.default_rng(7).standard_normal((4000, 2)) * [1.0, 0.3]
    cos = eigenfunction_cosines(ef(Xt), ref(Xt))
    assert cos[0] >= 0.99, cos
    assert np.max(principal_angles(ef(Xt)[:, :2], ref(Xt)[:, :2])) < 0.2


@pytest.mark.slow
@pytest.mark.parametrize(("kernel", "low", "high"), [
    (rbf(1.0), -2.0, 2.0),                        # exp(-|x - x'|²/2) on U[-2, 2]
    (polynomial(4, eta=1.0, nu=1.5), -1.0, 1.0),  # (x x' + 1.5)^4 on U[-1, 1], rank 5
], ids=["rbf", "polynomial"])
def test_mlp_paper_1d_setting(kernel, low, high):
    """Full NeuralEF (k = 3 parallel sin-MLPs, 3 layers, width 32) against Nyström on
    the same 2000 points; the top k - 1 functions must match."""
    X = np.random.default_rng(0).uniform(low, high, (2000, 1))
    ef = NeuralEF(kernel, 3, steps=600, lr=1e-2, batch_size=128, seed=0,
                  eval_points=2000).fit(X)
    ref = nystrom(kernel, X, 3)
    Xt = np.random.default_rng(1).uniform(low, high, (10_000, 1))
    cos = eigenfunction_cosines(ef(Xt), ref(Xt))
    err = eigenvalue_relative_error(ef.eigenvalues, ref.eigenvalues)
    assert np.all(cos[:2] >= 0.99), cos
    assert np.all(err[:2] <= 0.05), err


# --------------------------------------------------------------------------- bad input
def test_neuralef_bad_input():
    X = np.random.default_rng(0).uniform(-1, 1, (300, 1))
    with pytest.raises(ValueError, match="exceeds the rank 5"):
        NeuralEF(polynomial(4, nu=1.5), 10).fit(X)
    with pytest.raises(ValueError, match="exceeds the number of points N=300"):
        NeuralEF(rbf(), 301).fit(X)
    bad = X.copy()
    bad[7] = np.inf
    with pytest.raises(ValueError, match="X contains NaN or Inf"):
        NeuralEF(rbf(), 2).fit(bad)
    ef = NeuralEF(rbf(), 2, steps=5).fit(X)
    with pytest.raises(ValueError, match="dimension d=1"):
        ef(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"map \(B, d\) to \(B, k\) with k=2"):
        NeuralEF(rbf(), 2, network=torch.nn.Linear(1, 3), steps=2).fit(X)
    with pytest.raises(ValueError, match="no trainable parameters"):
        NeuralEF(rbf(), 2, network=torch.nn.Flatten(0), steps=2).fit(X)
    # a user module with the right shape trains (its own init)
    torch.manual_seed(0)
    user = NeuralEF(rbf(), 2, network=torch.nn.Sequential(
        torch.nn.Linear(1, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)), steps=5).fit(X)
    assert user(X).shape == (300, 2)
    with pytest.raises(ValueError, match="eigenvalue_estimator"):
        NeuralEF(rbf(), 2, eigenvalue_estimator="median")
    with pytest.raises(ValueError, match="network"):
        NeuralEF(rbf(), 2, network="resnet")
    with pytest.raises(ValueError, match="batch_size"):
        NeuralEF(rbf(), 2, batch_size=1)
    with pytest.raises(ValueError, match="lr"):
        NeuralEF(rbf(), 2, lr=-1.0)

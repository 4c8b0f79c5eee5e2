"""Oracles for lift / project / hard_binding / aligned_energy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from structattn.objects import aligned_energy, hard_binding, lift, project

from ..conftest import convert, to_np


def _MZ(seed=0, batch=(2, 3), N=6, K=3, D=4):
    rng = np.random.default_rng(seed)
    M = rng.random((*batch, N, K))
    return M / M.sum(-1, keepdims=True), rng.standard_normal((*batch, K, D)), \
        rng.standard_normal((*batch, N, D))


def test_lift_project_dense(backend, dtype):
    M, z, x = _MZ()
    Mb, zb, xb = convert(backend, dtype, M, z, x)
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(to_np(lift(zb, Mb)), np.einsum("...nk,...kd->...nd", M, z),
                               atol=tol)
    np.testing.assert_allclose(to_np(project(xb, Mb)), np.einsum("...nk,...nd->...kd", M, x),
                               atol=tol)


def test_lift_project_adjoint():
    M, z, x = _MZ(1)
    lhs = np.sum(lift(z, M) * x, axis=(-2, -1))
    rhs = np.sum(z * project(x, M), axis=(-2, -1))
    np.testing.assert_allclose(lhs, rhs, atol=1e-13)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_pseudo_inverse_round_trip(backend):
    M, z, _ = _MZ(2)
    Mb, zb = convert(backend, "float64", M, z)
    # project with pinv(M) undoes lift (API form) ...
    np.testing.assert_allclose(to_np(project(lift(zb, Mb), Mb, pseudo_inverse=True)), z,
                               atol=1e-12)
    # ... and so does Mᵀ after the authors' pseudo-inverse lift pinv(M)ᵀ z
    np.testing.assert_allclose(to_np(project(lift(zb, Mb, pseudo_inverse=True), Mb)), z,
                               atol=1e-12)


def test_hard_lift_places_slots_brute_force():
    rng = np.random.default_rng(3)
    N, K, D = 7, 4, 3
    z = rng.standard_normal((K, D))
    M = rng.random((N, K))
    H = hard_binding(M)
    x = lift(z, H)
    for n in range(N):  # brute force: library row n holds the state of its argmax slot
        np.testing.assert_array_equal(x[n], z[int(np.argmax(M[n]))])


def test_hard_binding_ties_and_kinds(backend):
    M = np.array([[0.2, 0.5, 0.5], [0.9, 0.05, 0.05], [1 / 3, 1 / 3, 1 / 3]])
    H = to_np(hard_binding(*convert(backend, "float32", M)))
    np.testing.assert_array_equal(H, [[0, 1, 0], [1, 0, 0], [1, 0, 0]])
    assert H.dtype == np.float32
    # a permutation binding: hard binding is the permutation itself
    P = np.eye(4)[[3, 1, 0, 2]]
    np.testing.assert_array_equal(hard_binding(0.7 * P + 0.1), P)


def test_aligned_energy_formula_and_invariance(backend):
    rng = np.random.default_rng(4)
    B, N, K, D = 5, 6, 3, 4
    zp, zn = rng.standard_normal((B, K, D)), rng.standard_normal((B, K, D))
    Mt, Mn = rng.random((B, N, K)), rng.random((B, N, K))
    args = convert(backend, "float64", zp, zn, Mt, Mn)
    E = to_np(aligned_energy(*args, sigma=0.7))
    x, y = np.einsum("bnk,bkd->bnd", Mt, zp), np.einsum("bnk,bkd->bnd", Mn, zn)
    ref = 0.5 / 0.7**2 * ((x - y) ** 2).sum(-1).mean(-1)
    np.testing.assert_allclose(E, ref, atol=1e-12)
    assert E.shape == (B,)
    # zero for identical lifted states
    np.testing.assert_allclose(aligned_energy(zp, zp, Mt, Mt), 0.0, atol=0)
    # invariant to a simultaneous slot permutation of (z_pred, M_t), and of (z_next, M_next)
    p1, p2 = rng.permutation(K), rng.permutation(K)
    E2 = aligned_energy(zp[:, p1], zn[:, p2], Mt[:, :, p1], Mn[:, :, p2], sigma=0.7)
    np.testing.assert_allclose(E2, ref, atol=1e-12)


def test_gradcheck_lift_project_energy():
    M, z, x = (torch.tensor(a, requires_grad=True) for a in _MZ(5, batch=(2,), N=4, K=2, D=3))
    assert torch.autograd.gradcheck(lambda a, b: lift(a, b), (z, M))
    assert torch.autograd.gradcheck(lambda a, b: project(a, b, pseudo_inverse=True), (x, M))
    assert torch.autograd.gradcheck(
        lambda a, b: aligned_energy(a, a.flip(-2), b, b.flip(-1)), (z, M))


def test_broadcast_shared_binding_and_errors():
    M, z, _ = _MZ(6)
    shared = M[0, 0]
    np.testing.assert_allclose(lift(z, shared), np.einsum("nk,...kd->...nd", shared, z),
                               atol=1e-13)
    with pytest.raises(ValueError, match=r"\(\.\.\., K, D\)"):
        lift(z[..., :2, :], M)
    with pytest.raises(ValueError, match=r"\(\.\.\., N, D\)"):
        project(z, M)
    with pytest.raises(ValueError, match="do not broadcast"):
        lift(z, M[:, :2])
    with pytest.raises(TypeError, match="backend='torch'"):
        lift(z, M, backend="torch")
    with pytest.raises(ValueError, match="backend must be one of"):
        hard_binding(M, backend="jax")
    with pytest.raises(ValueError, match="sigma"):
        aligned_energy(z, z, M, M, sigma=0)

"""Masks as linear operators: scipy, numpy interop and the operator algebra."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as spla
from scipy.linalg import expm

from structattn.masks import Causal, DecayedCausal, Product, Scaled, Sum, Toeplitz
from structattn.testing import assert_close, dot_test

L = 24
C = np.exp(-0.3 * np.abs(np.arange(-(L - 1), L)))  # symmetric positive Toeplitz symbol


def test_eigsh_on_toeplitz_matches_eigvalsh():
    T = Toeplitz(C)
    op = T.as_linear_operator()
    assert isinstance(op, spla.LinearOperator) and op.shape == (L, L)
    top = spla.eigsh(op, k=4, which="LA", return_eigenvectors=False)
    dense = np.linalg.eigvalsh(T.to_dense())
    np.testing.assert_allclose(np.sort(top), dense[-4:], rtol=1e-10)


def test_cg_and_expm_multiply():
    T = Toeplitz(C) + Toeplitz(np.where(np.arange(-(L - 1), L) == 0, 2.0, 0.0))  # SPD
    op, dense = T.as_linear_operator(), T.to_dense()
    b = np.random.default_rng(0).standard_normal(L)
    x, info = spla.cg(op, b, rtol=1e-12, maxiter=500)
    assert info == 0
    np.testing.assert_allclose(x, np.linalg.solve(dense, b), rtol=1e-8)
    y = spla.expm_multiply(-0.1 * Causal(L).as_linear_operator(), b, traceA=-0.1 * L)
    np.testing.assert_allclose(y, expm(-0.1 * Causal(L).to_dense()) @ b, rtol=1e-10)
    # the adjoint goes through rmatmat
    np.testing.assert_allclose(op.rmatvec(b), dense.T @ b, rtol=1e-12)


def test_numpy_defers_to_the_mask():
    T = DecayedCausal(L, 0.8)
    X = np.random.default_rng(1).standard_normal((3, 5, L))
    assert_close(X @ T, X @ T.to_dense(), rtol=1e-12)
    x = X[0, 0]
    assert_close(x @ T, x @ T.to_dense(), rtol=1e-12)
    assert_close(T @ x, T.to_dense() @ x, rtol=1e-12)
    with pytest.raises(TypeError, match=r"use mask\.to_dense\(\)"):
        np.asarray(T)
    with pytest.raises(TypeError, match=r"to_dense"):
        np.array([1.0]) + np.asarray(T)


def test_algebra():
    A, B = Toeplitz(C), DecayedCausal(L, 0.7)
    dA, dB = A.to_dense(), B.to_dense()
    cases = {
        "neg": (-A, -dA),
        "sub": (A - B, dA - dB),
        "div": (A / 4, dA / 4),
        "product": (A @ B, dA @ dB),
        "product3": (B @ A @ B, dB @ dA @ dB),
    }
    for name, (mask, dense) in cases.items():
        assert_close(mask.to_dense(), dense, rtol=1e-12, what=name)
        X = np.random.default_rng(2).standard_normal((L, 3))
        assert_close(mask @ X, dense @ X, rtol=1e-12, what=f"{name} matmat")
        assert_close(mask.T @ X, dense.T @ X, rtol=1e-12, what=f"{name} rmatmat")
        dot_test(mask)
    assert isinstance(A @ B, Product) and isinstance(-A, Scaled) and isinstance(A - B, Sum)
    assert (A @ B).nonnegative and not (-A).nonnegative
    assert (B @ Causal(L)).lower_triangular
    with pytest.raises(ValueError, match=r"Product needs left\.shape"):
        Causal(3) @ Causal(4)
    with pytest.raises(ZeroDivisionError):
        A / 0
    with pytest.raises(TypeError):
        A / "2"


def test_product_masked_matmul_and_attention():
    import structattn as sa

    mask = DecayedCausal(L, 0.9) @ Causal(L)
    rng = np.random.default_rng(3)
    A, Bf, V = rng.random((L, 5)), rng.random((L, 5)), rng.standard_normal((L, 2))
    ref = (mask.to_dense() * (A @ Bf.T)) @ V
    assert_close(mask.masked_matmul(A, Bf, V), ref, rtol=1e-12)
    q, k, v = rng.standard_normal((3, 2, L, 4))
    phi = sa.PositiveRandomFeatures(4, 8, seed=0)
    out = sa.kernel_attention(q, k, v, phi, mask=mask)
    assert_close(out, sa.kernel_attention(q, k, v, phi, mask=sa.Dense(mask.to_dense())),
                 rtol=1e-10)


def test_batched_and_torch_masks_refuse_scipy():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="unbatched mask"):
        Toeplitz(np.stack([C, C])).as_linear_operator()
    with pytest.raises(TypeError, match="holds torch tensors"):
        Toeplitz(torch.as_tensor(C)).as_linear_operator()

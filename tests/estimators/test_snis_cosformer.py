"""RFA as SNIS (identity with FAVOR+ on the same draws) and cosFormer (fast == dense)."""

from __future__ import annotations

import numpy as np
import pytest

from structattn import PositiveRandomFeatures, kernel_attention
from structattn.estimators import (
    CosformerAttention,
    SNISAttention,
    cosformer,
    cosformer_matrix,
    rfa_snis,
)
from structattn.features import gaussian_projection, orthogonal_gaussian
from structattn.testing import assert_close

from ..conftest import convert, to_np, torch


def inputs(seed=0, L=16, d=8, dv=5, scale=0.8, Lk=None):
    rng = np.random.default_rng(seed)
    Lk = L if Lk is None else Lk
    return (rng.standard_normal((2, L, d)) * scale, rng.standard_normal((2, Lk, d)) * scale,
            rng.standard_normal((2, Lk, dv)))


# ------------------------------------------------------------------------------ SNIS
@pytest.mark.parametrize("draw", [gaussian_projection, orthogonal_gaussian])
def test_snis_identity_with_prf_on_the_same_draws(backend, draw):
    q, k, v = inputs(1, Lk=20)
    W = draw(32, 8, 3)
    phi = PositiveRandomFeatures(8, 32, projection=W)
    args = convert(backend, "float64", q, k, v)
    snis = rfa_snis(*args, projection=W, backend=backend)
    prf = kernel_attention(*args, phi, backend=backend)
    assert_close(to_np(snis), to_np(prf), rtol=1e-12)
    # and with the seed: the same draws as PositiveRandomFeatures(orthogonal=False, seed)
    seeded = rfa_snis(q, k, v, num_samples=32, seed=4)
    ref = kernel_attention(q, k, v, PositiveRandomFeatures(8, 32, seed=4, orthogonal=False))
    assert_close(seeded, ref, rtol=1e-12)


def test_snis_log_domain_survives_where_features_underflow():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 8, 16)) * 12  # huge norms: exp features underflow in f32
    k = rng.standard_normal((1, 8, 16)) * 12
    v = rng.standard_normal((1, 8, 4))
    out = rfa_snis(q.astype(np.float32), k.astype(np.float32), v.astype(np.float32),
                   num_samples=16, seed=0)
    assert np.all(np.isfinite(out))
    ref = rfa_snis(q, k, v, num_samples=16, seed=0)
    assert_close(out, ref, rtol=1e-4)


def test_snis_matrix_and_parity_and_gradcheck(dtype):
    q, k, v = inputs(2)
    op = SNISAttention(num_samples=24, seed=1)
    P = op.matrix(q, k)
    np.testing.assert_allclose(P.sum(-1), 1, rtol=1e-13)
    assert_close(P @ v, op(q, k, v), dtype="float64")
    args = convert("torch", dtype, q, k, v)
    assert_close(to_np(rfa_snis(*args, num_samples=24, seed=1)), op(q, k, v),
                 rtol={"float64": 1e-12, "float32": 1e-5}[dtype])
    if dtype == "float64":
        t = tuple(torch.tensor(x[:1, :6, :4], requires_grad=True) for x in (q, k, v))
        assert torch.autograd.gradcheck(lambda a, b, c: rfa_snis(a, b, c, num_samples=8,
                                                                 seed=0), t)


# ------------------------------------------------------------------------- cosFormer
def dense_cosformer(q, k, v, causal, M):
    """Independent loop reference: s_ij = relu(q_i).relu(k_j) cos(pi (i-j) / 2M)."""
    Lq, Lk = q.shape[-2], k.shape[-2]
    out = np.zeros(q.shape[:-1] + v.shape[-1:])
    for b in range(q.shape[0]):
        for i in range(Lq):
            s = np.array([np.maximum(q[b, i], 0) @ np.maximum(k[b, j], 0)
                          * np.cos(np.pi * (i - j) / (2 * M)) if (j <= i or not causal) else 0.0
                          for j in range(Lk)])
            out[b, i] = s @ v[b] / s.sum() if s.sum() > 0 else 0.0
    return out


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("extra", [0, 9])
def test_cosformer_fast_equals_dense(backend, dtype, causal, extra):
    q, k, v = inputs(3, L=13)
    M = 13 + extra
    ref = dense_cosformer(q, k, v, causal, M)
    assert_close(cosformer_matrix(q, k, causal=causal, max_length=M) @ v, ref, dtype="float64")
    args = convert(backend, dtype, q, k, v)
    out = cosformer(*args, causal=causal, max_length=M, backend=backend)
    assert type(out) is type(args[0]) and str(out.dtype).endswith(dtype)
    assert_close(to_np(out), ref, dtype=dtype)


def test_cosformer_cross_attention_and_operator():
    q, k, v = inputs(4, L=7, Lk=11)
    ref = dense_cosformer(q, k, v, False, 11)
    assert_close(cosformer(q, k, v), ref, dtype="float64")
    op = CosformerAttention(causal=False)
    assert_close(op.matrix(q, k) @ v, op(q, k, v), dtype="float64")


def test_cosformer_causality_bit_identical():
    q, k, v = inputs(5, L=20)
    i = 9
    k2, v2 = k.copy(), v.copy()
    k2[:, i + 1:] *= -3
    v2[:, i + 1:] += 1
    for backend in ("numpy", "numba"):
        a = cosformer(q, k, v, causal=True, backend=backend)
        b = cosformer(q, k2, v2, causal=True, backend=backend)
        np.testing.assert_array_equal(a[:, :i + 1], b[:, :i + 1])
    ta = cosformer(*convert("torch", "float64", q, k, v), causal=True)
    tb = cosformer(*convert("torch", "float64", q, k2, v2), causal=True)
    assert torch.equal(ta[:, :i + 1], tb[:, :i + 1])


def test_cosformer_eps_and_zero_rows():
    q, k, v = inputs(6, L=6)
    q[0, 2] = -1.0  # relu(q) = 0: zero normalizer -> zero row, no NaN
    out = cosformer(q, k, v)
    np.testing.assert_array_equal(out[0, 2], 0.0)
    with_eps = cosformer(q, k, v, eps=1e-6)
    assert_close(with_eps, cosformer_matrix(q, k, eps=1e-6) @ v, dtype="float64")
    assert not np.array_equal(with_eps[1], out[1])


@pytest.mark.parametrize("causal", [False, True])
def test_cosformer_gradcheck(causal):
    q, k, v = inputs(7, L=6, d=3, dv=2)
    t = tuple(torch.tensor(x[:1] + 0.3, requires_grad=True) for x in (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: cosformer(a, b, c, causal=causal), t)


def test_causal_cosformer_is_prefix_consistent_with_a_fixed_max_length():
    from structattn.estimators import cosformer

    rng = np.random.default_rng(9)
    q, k, v = (rng.standard_normal((1, 32, 4)) for _ in range(3))
    full = cosformer(q, k, v, causal=True, max_length=32)
    head = cosformer(q[:, :16], k[:, :16], v[:, :16], causal=True, max_length=32)
    np.testing.assert_allclose(full[:, :16], head, rtol=1e-12, atol=1e-14)
    # with the default M = L the weights of the first rows depend on the call's length
    short = cosformer(q[:, :16], k[:, :16], v[:, :16], causal=True)
    assert np.abs(cosformer(q, k, v, causal=True)[:, :16] - short).max() > 1e-3

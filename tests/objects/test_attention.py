"""Oracles for inverted (Slot) attention, binding attention, bind_actions and Sinkhorn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from structattn.objects import bind_actions, binding_attention, inverted_attention, sinkhorn

from ..conftest import convert, to_np

TOL = {"float64": 1e-12, "float32": 1e-5}


def _dense_inverted(q, k, v, scale, eps):
    """The two-line formula in float64 numpy, one batch element at a time."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    out = np.zeros((*q.shape[:-1], v.shape[-1]))
    W = np.zeros((*k.shape[:-1], q.shape[-2]))
    for idx in np.ndindex(q.shape[:-2]):
        L = k[idx] @ q[idx].T * scale
        A = np.exp(L - L.max(axis=1, keepdims=True))
        A = A / A.sum(axis=1, keepdims=True) + eps
        A = A / A.sum(axis=0, keepdims=True)
        out[idx], W[idx] = A.T @ v[idx], A
    return out, W


def _inputs(seed=0, batch=(2, 3), K=4, n=9, d=5, dv=6):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((*batch, K, d)), rng.standard_normal((*batch, n, d)),
            rng.standard_normal((*batch, n, dv)))


def test_inverted_attention_dense(backend, dtype):
    q, k, v = _inputs()
    ref, W_ref = _dense_inverted(q, k, v, 0.7, 1e-8)
    out, W = inverted_attention(*convert(backend, dtype, q, k, v), scale=0.7,
                                return_weights=True, backend=backend)
    assert tuple(out.shape) == (2, 3, 4, 6) and tuple(W.shape) == (2, 3, 9, 4)
    np.testing.assert_allclose(to_np(out), ref, atol=TOL[dtype], rtol=TOL[dtype])
    np.testing.assert_allclose(to_np(W), W_ref, atol=TOL[dtype], rtol=TOL[dtype])
    np.testing.assert_allclose(to_np(W).sum(axis=-2), 1.0, atol=TOL[dtype])
    assert str(out.dtype).endswith(dtype)


def test_inverted_attention_numpy_torch_parity():
    q, k, v = _inputs(1)
    a = inverted_attention(q, k, v)
    b = inverted_attention(*(torch.as_tensor(x) for x in (q, k, v)))
    np.testing.assert_allclose(a, to_np(b), atol=1e-14)


def test_inverted_attention_gradcheck():
    q, k, v = (torch.tensor(x, requires_grad=True) for x in _inputs(2, batch=(2,), K=3, n=5,
                                                                      d=3, dv=2))
    assert torch.autograd.gradcheck(lambda a, b, c: inverted_attention(a, b, c), (q, k, v))


def test_inverted_attention_permutations():
    q, k, v = _inputs(3)
    rng = np.random.default_rng(0)
    ps, pi = rng.permutation(q.shape[-2]), rng.permutation(k.shape[-2])
    out = inverted_attention(q, k, v)
    # slot-permutation equivariance: permuting q permutes the output rows identically
    np.testing.assert_allclose(inverted_attention(q[..., ps, :], k, v), out[..., ps, :],
                               atol=1e-13)
    # input-permutation invariance: permuting (k, v) rows jointly changes nothing
    np.testing.assert_allclose(inverted_attention(q, k[..., pi, :], v[..., pi, :]), out,
                               atol=1e-13)


def test_inverted_attention_single_slot_is_mean():
    q, k, v = _inputs(4, K=1)
    np.testing.assert_allclose(inverted_attention(q, k, v), v.mean(axis=-2, keepdims=True),
                               atol=1e-13)


def test_inverted_attention_equals_first_sinkhorn_iteration(backend):
    q, k, v = _inputs(5, K=3, n=7)
    qb, kb, vb = convert(backend, "float64", q, k, v)
    _, W = inverted_attention(qb, kb, vb, eps=0.0, return_weights=True, backend=backend)
    logits = kb @ (qb.transpose(-1, -2) if backend == "torch" else np.swapaxes(qb, -1, -2))
    P = sinkhorn(logits / np.sqrt(5), iterations=1, first_axis="slots", backend=backend)
    np.testing.assert_allclose(to_np(W), to_np(P), atol=1e-14)
    _, W_eps = inverted_attention(qb, kb, vb, return_weights=True, backend=backend)
    np.testing.assert_allclose(to_np(W_eps), to_np(P), atol=1e-7)  # equal up to the eps


def test_inverted_attention_errors():
    q, k, v = _inputs()
    with pytest.raises(ValueError, match="feature size d"):
        inverted_attention(q[..., :3], k, v)
    with pytest.raises(ValueError, match="eps"):
        inverted_attention(q, k, v, eps=-1.0)
    with pytest.raises(TypeError, match="backend='torch'"):
        inverted_attention(q, k, v, backend="torch")
    with pytest.raises(ValueError, match="NaN"):
        inverted_attention(q * np.nan, k, v)


# ----------------------------------------------------------------- binding attention
def _binding_inputs(seed=0, batch=(2,), K=3, N=6, Ds=5, d=4, Did=7):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((*batch, K, Ds)), rng.standard_normal((Ds, d)),
            rng.standard_normal((N, d)), rng.standard_normal((Did, d)),
            rng.standard_normal((*batch, N, Did)))


def test_binding_attention_dense(backend, dtype):
    slots, w_q, w_k, _w_id, _ids = _binding_inputs()
    M = binding_attention(*convert(backend, dtype, slots)[:1],
                          w_q=convert(backend, dtype, w_q)[0],
                          w_k=convert(backend, dtype, w_k)[0], backend=backend)
    L = np.einsum("nd,bkd->bnk", w_k, slots @ w_q) / 2.0  # scale 1/sqrt(4)
    ref = np.exp(L) / np.exp(L).sum(-1, keepdims=True)
    np.testing.assert_allclose(to_np(M), ref, atol=TOL[dtype], rtol=TOL[dtype])
    np.testing.assert_allclose(to_np(M).sum(-1), 1.0, atol=TOL[dtype])
    # with explicit one-hot identities, keys = I_N w_k: the same matrix
    eye = np.tile(np.eye(6), (2, 1, 1))
    M2 = binding_attention(*convert(backend, dtype, slots, eye)[:1], w_q=convert(
        backend, dtype, w_q)[0], w_k=convert(backend, dtype, w_k)[0],
        identities=convert(backend, dtype, eye)[0])
    np.testing.assert_allclose(to_np(M2), ref, atol=TOL[dtype], rtol=TOL[dtype])


def test_binding_attention_permutations():
    slots, w_q, _, w_id, ids = _binding_inputs(1)
    rng = np.random.default_rng(1)
    sigma, ps = rng.permutation(6), rng.permutation(3)
    M = binding_attention(slots, w_q=w_q, w_k=w_id, identities=ids)
    # identities permuted by σ ∈ S_N: rows of M permute by σ
    Ms = binding_attention(slots, w_q=w_q, w_k=w_id, identities=ids[:, sigma])
    np.testing.assert_allclose(Ms, M[:, sigma], atol=1e-14)
    # slots permuted: columns permute
    Mp = binding_attention(slots[:, ps], w_q=w_q, w_k=w_id, identities=ids)
    np.testing.assert_allclose(Mp, M[:, :, ps], atol=1e-14)


def test_binding_attention_gradcheck():
    slots, w_q, w_k, _, _ = _binding_inputs(2)
    args = tuple(torch.tensor(a, requires_grad=True) for a in (slots, w_q, w_k))
    assert torch.autograd.gradcheck(lambda s, a, b: binding_attention(s, w_q=a, w_k=b), args)


def test_binding_attention_errors():
    slots, w_q, w_k, _w_id, ids = _binding_inputs()
    with pytest.raises(ValueError, match="w_q must have shape"):
        binding_attention(slots, w_q=w_q[:2], w_k=w_k)
    with pytest.raises(ValueError, match="same size d"):
        binding_attention(slots, w_q=w_q, w_k=w_k[:, :2])
    with pytest.raises(ValueError, match="D_id"):
        binding_attention(slots, w_q=w_q, w_k=w_k, identities=ids)


def test_bind_actions(backend):
    rng = np.random.default_rng(0)
    M, V = rng.random((2, 6, 3)), rng.standard_normal((2, 6, 4))
    out = bind_actions(*convert(backend, "float64", M, V))
    ref = np.einsum("bnk,bnd->bkd", M + 1e-8, V)
    np.testing.assert_allclose(to_np(out), ref, atol=1e-13)
    # a hard permutation binding routes object i's action to its slot exactly
    P = np.eye(3)[[2, 0, 1]]
    a = rng.standard_normal((3, 4))
    np.testing.assert_allclose(bind_actions(P, a, eps=0.0), a[[1, 2, 0]], atol=0)
    with pytest.raises(ValueError, match="same N"):
        bind_actions(M, V[:, :5])


# ----------------------------------------------------------------------- sinkhorn
def test_sinkhorn_marginals_rectangular(backend, dtype):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 8, 4))
    P = to_np(sinkhorn(*convert(backend, dtype, logits), iterations=200, backend=backend))
    tol = 1e-9 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(P.sum(-2), 1.0, atol=tol)  # slot marginal (last half: exact)
    np.testing.assert_allclose(P.sum(-1), 4 / 8, atol=tol)  # input marginal K/n
    # custom marginals with equal totals, inputs-first order
    a = rng.random((3, 8)) + 0.5
    b = rng.random((3, 4)) + 0.5
    b *= a.sum(-1, keepdims=True) / b.sum(-1, keepdims=True)
    P2 = sinkhorn(logits, iterations=300, first_axis="inputs", input_marginal=a,
                  slot_marginal=b)
    np.testing.assert_allclose(P2.sum(-1), a, atol=1e-9)
    np.testing.assert_allclose(P2.sum(-2), b, atol=1e-9)


def test_sinkhorn_dense_iteration_and_log():
    rng = np.random.default_rng(1)
    L = rng.standard_normal((5, 5))
    P = np.exp(L / 0.5)
    for _ in range(3):
        P = P / P.sum(1, keepdims=True)
        P = P / P.sum(0, keepdims=True)
    np.testing.assert_allclose(sinkhorn(L, iterations=3, tau=0.5), P, atol=1e-13)
    np.testing.assert_allclose(np.exp(sinkhorn(L, iterations=3, tau=0.5, return_log=True)), P,
                               atol=1e-13)


def test_sinkhorn_low_temperature_permutation():
    rng = np.random.default_rng(2)
    perm = rng.permutation(6)
    logits = 3.0 * np.eye(6)[perm] + 0.5 * rng.standard_normal((6, 6))
    P = sinkhorn(logits, iterations=500, tau=1e-3)
    np.testing.assert_allclose(P, np.eye(6)[perm], atol=1e-9)
    assert np.all(np.isfinite(P))


def test_sinkhorn_gradcheck_and_parity():
    rng = np.random.default_rng(3)
    L = rng.standard_normal((2, 5, 3))
    t = torch.tensor(L, requires_grad=True)
    np.testing.assert_allclose(to_np(sinkhorn(t, iterations=7, tau=0.7)),
                               sinkhorn(L, iterations=7, tau=0.7), atol=1e-14)
    assert torch.autograd.gradcheck(lambda x: sinkhorn(x, iterations=4, tau=0.7), (t,))


def test_sinkhorn_errors():
    L = np.zeros((4, 3))
    with pytest.raises(ValueError, match="first_axis"):
        sinkhorn(L, first_axis="rows")
    with pytest.raises(ValueError, match="tau"):
        sinkhorn(L, tau=0.0)
    with pytest.raises(ValueError, match="iterations"):
        sinkhorn(L, iterations=0)
    with pytest.raises(ValueError, match="total mass"):
        sinkhorn(L, input_marginal=np.ones(4), slot_marginal=np.ones(3))
    with pytest.raises(ValueError, match="strictly positive"):
        sinkhorn(L, input_marginal=-np.ones(4))

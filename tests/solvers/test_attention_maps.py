"""SimplexAttention: softmax / sparsemax / entmax rows of the scaled scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from structattn import softmax_attention
from structattn.attention import attention_matrix
from structattn.solvers.attention_maps import SimplexAttention

MAPS = [("softmax", 1.5), ("sparsemax", 1.5), ("entmax", 1.5), ("entmax", 1.3)]


def _qkv(L=12, d=4, dv=3, scale=2.0, seed=0, batch=(2,)):
    rng = np.random.default_rng(seed)
    q = scale * rng.standard_normal((*batch, L, d))
    k = scale * rng.standard_normal((*batch, L, d))
    v = rng.standard_normal((*batch, L, dv))
    return q, k, v


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("mapping", "alpha"), MAPS)
def test_rows_on_simplex_and_output_is_matrix_times_v(mapping, alpha, causal):
    q, k, v = _qkv()
    op = SimplexAttention(mapping, alpha=alpha, causal=causal)
    P = op.matrix(q, k)
    assert P.shape == (2, 12, 12)
    assert (P >= 0).all()
    np.testing.assert_allclose(P.sum(-1), 1.0, atol=1e-10)
    np.testing.assert_allclose(op(q, k, v), P @ v, atol=1e-12)
    if causal:  # no weight on the future, exactly
        assert (np.triu(P, 1) == 0).all()


@pytest.mark.parametrize("causal", [False, True])
def test_softmax_mapping_equals_softmax_attention(causal):
    q, k, v = _qkv(scale=1.0)
    for scale in (None, 0.3):
        op = SimplexAttention("softmax", causal=causal, scale=scale)
        np.testing.assert_allclose(
            op(q, k, v), softmax_attention(q, k, v, causal=causal, scale=scale),
            rtol=0, atol=1e-12,
        )
        np.testing.assert_allclose(
            op.matrix(q, k), attention_matrix(q, k, causal=causal, scale=scale), atol=1e-12
        )


def test_sparse_maps_give_sparse_rows():
    q, k, _ = _qkv(L=64, scale=2.0)
    for op in (SimplexAttention("sparsemax"), SimplexAttention("entmax", alpha=1.5)):
        P = op.matrix(q, k)
        assert (P == 0).mean() > 0.5
        assert ((P > 0).sum(-1) >= 1).all()
    # sparsemax is sparser than 1.5-entmax, softmax is dense
    zs = (SimplexAttention("sparsemax").matrix(q, k) == 0).mean()
    ze = (SimplexAttention("entmax").matrix(q, k) == 0).mean()
    assert zs >= ze
    assert (SimplexAttention("softmax").matrix(q, k) > 0).all()


def test_causal_prefix_does_not_depend_on_the_future():
    q, k, v = _qkv(L=10)
    op = SimplexAttention("sparsemax", causal=True)
    y = op(q, k, v)
    k2, v2 = k.copy(), v.copy()
    k2[..., 6:, :] += 5.0
    v2[..., 6:, :] -= 3.0
    np.testing.assert_allclose(op(q, k2, v2)[..., :6, :], y[..., :6, :], atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("mapping", "alpha"), MAPS)
def test_numpy_torch_parity(mapping, alpha, causal):
    q, k, v = _qkv()
    op = SimplexAttention(mapping, alpha=alpha, causal=causal)
    y = op(q, k, v)
    yt = op(*(torch.from_numpy(a) for a in (q, k, v)))
    assert isinstance(yt, torch.Tensor) and yt.dtype == torch.float64
    np.testing.assert_allclose(yt.numpy(), y, atol=1e-12)
    y32 = op(*(torch.from_numpy(a.astype(np.float32)) for a in (q, k, v)))
    assert y32.dtype == torch.float32
    np.testing.assert_allclose(y32.numpy(), y, atol=1e-4)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("mapping", "alpha"), MAPS)
def test_gradcheck_float64(mapping, alpha, causal):
    q, k, v = _qkv(L=6, d=3, dv=2, scale=1.5, seed=3, batch=())
    args = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    op = SimplexAttention(mapping, alpha=alpha, causal=causal)
    assert torch.autograd.gradcheck(lambda *a: op(*a), args, eps=1e-6, atol=1e-5)


def test_validation():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="mapping"):
        SimplexAttention("relu")
    with pytest.raises(ValueError, match="alpha"):
        SimplexAttention("entmax", alpha=0.5)
    with pytest.raises(TypeError, match="causal"):
        SimplexAttention(causal=1)
    with pytest.raises(ValueError, match="scale"):
        SimplexAttention(scale=float("nan"))
    with pytest.raises(ValueError, match="L_q == L_k"):
        SimplexAttention(causal=True).matrix(q[..., :5, :], k)
    with pytest.raises(ValueError):
        SimplexAttention()(q, k[..., :5, :], v)
    bad = q.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        SimplexAttention()(bad, k, v)
    assert SimplexAttention(causal=True).reference.causal is True

"""EigenFeatures: kernel_attention against the dense formula, softmax approximation,
the normaliser guard, and the study registration."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest

import structattn.studies.eigen  # noqa: F401  (registers "eigen-nystrom")
from structattn import NormalizerWarning, kernel_attention, softmax_attention
from structattn.eigen import (
    EigenAttention,
    EigenFeatures,
    NormalizerError,
    gaussian_exponential_eigenpairs,
    nystrom,
    rbf,
    softmax_eigenfeatures,
)
from structattn.studies import get
from structattn.testing import assert_close

from ..conftest import convert, to_np

torch = pytest.importorskip("torch")

D = 2
SIGMA = 0.7  # σ² = 0.49 < τ/2 = √2/2: Hilbert–Schmidt


def _inputs(L=96, seed=0, sigma=SIGMA):
    rng = np.random.default_rng(seed)
    q = sigma * rng.standard_normal((2, 3, L, D))
    k = sigma * rng.standard_normal((2, 3, L, D))
    v = rng.standard_normal((2, 3, L, 4))
    return q, k, v


def _closed(rank):
    return gaussian_exponential_eigenpairs([SIGMA] * D, math.sqrt(D), rank)


def _dense_reference(ef, q, k, v, causal=False):
    """D⁻¹ Ψ_Q Λ Ψ_Kᵀ V with explicit per-slice matrices."""
    out = np.empty((*q.shape[:-1], v.shape[-1]))
    for idx in np.ndindex(*q.shape[:-2]):
        W = ef(q[idx]) @ np.diag(ef.eigenvalues) @ ef(k[idx]).T
        if causal:
            W = np.tril(W)
        out[idx] = (W @ v[idx]) / W.sum(axis=1, keepdims=True)
    return out


@pytest.mark.parametrize("causal", [False, True])
def test_kernel_attention_matches_dense_formula(backend, dtype, causal):
    ef = _closed(6)
    phi = EigenFeatures(ef)
    q, k, v = _inputs()
    ref = _dense_reference(ef, q, k, v, causal)
    qb, kb, vb = convert(backend, dtype, q, k, v)
    out = kernel_attention(qb, kb, vb, phi, causal=causal, backend=backend)
    assert type(out) is type(qb) and str(out.dtype).endswith(dtype)
    assert_close(to_np(out), ref, dtype=dtype)
    guarded = phi.attention(qb, kb, vb, causal=causal, backend=backend)
    assert_close(to_np(guarded), ref, dtype=dtype)
    assert phi.last_min_normalizer > 0


def test_gradcheck_through_nystrom_features():
    X = np.random.default_rng(3).standard_normal((60, D)) * SIGMA
    phi = EigenFeatures(nystrom(rbf(1.0), X, 4))
    q, k, v = (torch.tensor(a[0, 0, :6], requires_grad=True) for a in _inputs(L=6))
    assert torch.autograd.gradcheck(
        lambda a, b, c: kernel_attention(a, b, c, phi), (q, k, v))


def test_normalizers_and_min_normalizer():
    ef = _closed(4)
    phi = EigenFeatures(ef)
    q, k, _ = _inputs(L=40)
    for causal in (False, True):
        Dn = phi.normalizers(q, k, causal=causal)
        W = np.einsum("...ik,k,...jk->...ij", ef(q.reshape(-1, D)).reshape(*q.shape[:-1], 4),
                      ef.eigenvalues, ef(k.reshape(-1, D)).reshape(*k.shape[:-1], 4))
        if causal:
            W = np.tril(W)
        np.testing.assert_allclose(Dn, W.sum(-1), rtol=1e-12)
        count = np.arange(1, 41) if causal else 40
        assert phi.min_normalizer(q, k, causal=causal) == pytest.approx(
            float((W.sum(-1) / count).min()), rel=1e-12)


def test_softmax_approximation_improves_with_rank():
    q, k, v = _inputs(L=128)
    exact = softmax_attention(q, k, v)
    errs = []
    for rank in (1, 3, 10, 21):
        y = EigenFeatures(_closed(rank)).attention(q, k, v)
        errs.append(np.linalg.norm(y - exact) / np.linalg.norm(exact))
    assert all(b < a for a, b in itertools.pairwise(errs)), errs
    assert errs[-1] < 1e-2
    # Nyström on the pooled tokens of these inputs: same trend, deterministic
    nys = []
    for rank in (3, 10, 21):
        phi = softmax_eigenfeatures(q[0, 0], k[0, 0], rank, seed=0)
        y = phi.attention(q[0, 0], k[0, 0], v[0, 0])
        nys.append(np.linalg.norm(y - exact[0, 0]) / np.linalg.norm(exact[0, 0]))
    assert nys[0] > nys[1] > nys[2] and nys[2] < 1e-2, nys
    assert EigenFeatures(_closed(3)).approximates_softmax


def test_guard_refuses_or_warns():
    q, k, v = _inputs(L=64)
    far = q * 6.0  # far outside the fitted distribution: truncation goes negative
    phi = EigenFeatures(_closed(3))
    with pytest.raises(NormalizerError, match="row normaliser"):
        phi.attention(far, k, v)
    assert phi.last_min_normalizer < 0
    warn = EigenFeatures(_closed(3), on_small="warn")
    with pytest.warns(NormalizerWarning, match="row normaliser"):
        out = warn.attention(far, k, v)
    assert out.shape == (2, 3, 64, 4)
    # plain kernel_attention only knows the signed-features warning
    with pytest.warns(NormalizerWarning):
        kernel_attention(far, k, v, phi)
    # in distribution: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        phi.attention(q, k, v)


def test_study_registration_and_operator():
    entry = get("eigen-nystrom")
    assert entry.budgets["rank"] == get("performer").budgets["num_features"]
    assert entry.causal is False
    op = entry.build(dim=D, seed=0, causal=False, rank=8)
    assert isinstance(op, EigenAttention)
    q, k, v = _inputs(L=48)
    y = op(q, k, v)
    P = op.matrix(q, k)
    np.testing.assert_allclose(P.sum(-1), 1.0, rtol=1e-10)
    assert_close(P @ v, y, dtype="float64")
    assert_close(entry.build(dim=D, seed=0, causal=False, rank=8)(q, k, v), y, dtype="float64")
    yt = op(*(torch.tensor(a) for a in (q, k, v)))
    assert_close(to_np(yt), y, dtype="float64")
    exact = softmax_attention(q, k, v)
    e8 = np.linalg.norm(y - exact) / np.linalg.norm(exact)
    y2 = entry.build(dim=D, seed=0, causal=False, rank=2)(q, k, v)
    assert e8 < np.linalg.norm(y2 - exact) / np.linalg.norm(exact)


def test_features_bad_input():
    with pytest.raises(TypeError, match="EigenFunctions"):
        EigenFeatures(np.ones(3))
    X = np.random.default_rng(0).standard_normal((50, 2))
    ef = nystrom(rbf(), X, 3)
    ef.eigenvalues[-1] = -1e-3
    with pytest.raises(ValueError, match="positive finite eigenvalues"):
        EigenFeatures(ef)
    phi = EigenFeatures(_closed(3))
    q, k, v = _inputs(L=8)
    with pytest.raises(ValueError, match="dimension"):
        phi.attention(q[..., :1], k[..., :1], v)
    with pytest.raises(ValueError, match="same feature size"):
        softmax_eigenfeatures(q, k[..., :1], 3)
    bad = q.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        phi.attention(bad, k, v)
    with pytest.raises(ValueError, match="on_small"):
        EigenFeatures(_closed(3), on_small="clip")
    with pytest.raises(ValueError, match="method"):
        softmax_eigenfeatures(q, k, 3, method="svd")
    with pytest.raises(ValueError, match="exceeds the number of points"):
        softmax_eigenfeatures(q[0, 0], k[0, 0], 17)  # 16 pooled tokens


def test_eigen_attention_clip_rank_warns_and_reduces():
    from structattn.eigen import EigenAttention, RankClippedWarning

    rng = np.random.default_rng(3)
    q, k, v = (0.5 * rng.standard_normal((1, 6, 4)) for _ in range(3))
    with pytest.raises(ValueError, match="exceeds"):
        EigenAttention(rank=40)(q, k, v)
    with pytest.warns(RankClippedWarning, match="rank=40 exceeds the 12 Nyström points"):
        out = EigenAttention(rank=40, clip_rank=True)(q, k, v)
    # all 12 pooled points: Nyström interpolates the kernel on them exactly
    np.testing.assert_allclose(out, softmax_attention(q, k, v), rtol=1e-6, atol=1e-8)

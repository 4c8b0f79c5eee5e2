"""Rows whose normalizer underflows are recomputed exactly (issue 13, last item).

Causal positive random features at extreme magnitudes (float32 q, k x 30) returned zero
rows with a warning on numpy and silently on torch.  The oracle here is the estimator
itself written densely in the log domain (float64 logsumexp over features and keys):
every row must equal it, whatever the magnitude, on numpy and numba, for every scan mask
and for a general non-negative mask.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import structattn as sa
from structattn import masks
from structattn._underflow import recompute_underflowed_rows
from structattn.backends.numba.rescaled import rescaled_causal_attention


def _log_reference(phi, q, k, v, M):
    """``Σ_s M_ts Σ_r e^{lq_tr + lk_sr} v_s / Σ_s M_ts Σ_r e^{...}`` in float64 logs."""
    lq = phi._log_features(np.asarray(q, np.float64))
    lk = phi._log_features(np.asarray(k, np.float64))
    logits = lq[..., :, None, :] + lk[..., None, :, :]  # (..., Lq, Lk, F)
    top = logits.max(-1, keepdims=True)
    logw = top[..., 0] + np.log(np.exp(logits - top).sum(-1))
    with np.errstate(divide="ignore"):
        logw = np.where(M > 0, logw + np.log(np.where(M > 0, M, 1.0)), -np.inf)
    peak = logw.max(-1, keepdims=True)
    w = np.exp(logw - np.where(np.isfinite(peak), peak, 0.0))
    den = w.sum(-1, keepdims=True)
    return (w @ np.asarray(v, np.float64)) / np.where(den > 0, den, 1.0)


def _inputs(dtype, L=48, d=16, scale=30.0, seed=0, batch=(2,)):
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((*batch, L, d)) * scale).astype(dtype)
    k = (rng.standard_normal((*batch, L, d)) * scale).astype(dtype)
    v = rng.standard_normal((*batch, L, 3)).astype(dtype)
    return q, k, v


def _tol(dtype):
    # float32 inputs: the fast path's float32 log-features (magnitude ~1e3) carry
    # absolute errors ~1e-4 in the exponent
    return {"rtol": 0, "atol": 1e-9} if dtype == np.float64 else {"rtol": 0, "atol": 2e-3}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("scale", [10.0, 30.0, 100.0])
def test_causal_prf_has_no_zero_rows_at_extreme_magnitude(dtype, backend, scale):
    q, k, v = _inputs(dtype, scale=scale)
    phi = sa.PositiveRandomFeatures(dim=16, num_features=32, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # recomputed, so nothing to report
        out = sa.kernel_attention(q, k, v, phi, causal=True, backend=backend)
    L = q.shape[-2]
    ref = _log_reference(phi, q, k, v, np.tril(np.ones((L, L))))
    assert out.dtype == dtype
    assert not np.any(np.all(out == 0, axis=-1))
    np.testing.assert_allclose(out, ref, **_tol(dtype))
    # convex hull of the visible values
    lo = np.minimum.accumulate(v, axis=-2)
    hi = np.maximum.accumulate(v, axis=-2)
    slack = 1e-5 if dtype == np.float32 else 1e-12
    assert np.all(out >= lo - slack) and np.all(out <= hi + slack)


def test_issue_example_four_by_four_float32():
    """The issue's case: 4x4 float32 inputs scaled by 30 gave zero rows."""
    g = torch.Generator().manual_seed(16)
    q = (torch.randn(4, 4, generator=g) * 30).numpy()
    k = (torch.randn(4, 4, generator=g) * 30).numpy()
    v = torch.randn(4, 4, generator=g).numpy()
    phi = sa.PositiveRandomFeatures(dim=4, num_features=16, seed=16)
    out = sa.kernel_attention(q, k, v, phi, causal=True)
    ref = _log_reference(phi, q, k, v, np.tril(np.ones((4, 4))))
    np.testing.assert_allclose(out, ref, atol=1e-4)


@pytest.mark.parametrize("gamma", [1.0, 0.9, 0.3])
@pytest.mark.parametrize("exclusive", [False, True])
def test_decayed_and_exclusive_masks(gamma, exclusive):
    q, k, v = _inputs(np.float64, scale=30.0, seed=2)
    L = q.shape[-2]
    phi = sa.PositiveRandomFeatures(dim=16, num_features=32, seed=3)
    mask = masks.DecayedCausal(L, gamma, exclusive=exclusive)
    out = sa.kernel_attention(q, k, v, phi, mask=mask)
    ref = _log_reference(phi, q, k, v, mask.to_dense())
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-9)
    if exclusive:  # the first row sees nothing: zero, as everywhere in the library
        assert np.all(out[..., 0, :] == 0)


@pytest.mark.parametrize("L_q", [5, 48])
def test_bottom_right_causal(L_q):
    q, k, v = _inputs(np.float64, scale=30.0, seed=4)
    q = q[..., -L_q:, :]
    L_k = k.shape[-2]
    phi = sa.PositiveRandomFeatures(dim=16, num_features=32, seed=5)
    out = sa.kernel_attention(q, k, v, phi, causal=True)
    M = np.tril(np.ones((L_q, L_k)), k=L_k - L_q)
    np.testing.assert_allclose(out, _log_reference(phi, q, k, v, M), rtol=0, atol=1e-9)


def test_general_mask_rows_are_recomputed():
    """A banded (non-scan) mask whose rows miss the keys that set the shift."""
    q, k, v = _inputs(np.float64, L=40, scale=30.0, seed=6, batch=())
    L = q.shape[-2]
    idx = np.arange(L)
    band = np.abs(idx[:, None] - idx[None, :]) <= 2
    phi = sa.PositiveRandomFeatures(dim=16, num_features=32, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = sa.kernel_attention(q, k, v, phi, mask=band)
    np.testing.assert_allclose(out, _log_reference(phi, q, k, v, band.astype(float)),
                               rtol=0, atol=1e-9)


def test_rescaled_kernel_is_prefix_consistent_and_matches_reference():
    rng = np.random.default_rng(8)
    lq = rng.standard_normal((3, 30, 8)) * 200
    lk = rng.standard_normal((3, 30, 8)) * 200
    v = rng.standard_normal((3, 30, 2))
    full = rescaled_causal_attention(lq, lk, v, gamma=0.7)
    for n in (1, 7, 30):
        head = rescaled_causal_attention(lq[:, :n], lk[:, :n], v[:, :n], gamma=0.7)
        assert np.array_equal(head, full[:, :n])  # bit for bit
    logits = lq[:, :, None, :] + lk[:, None, :, :]
    top = logits.max(-1, keepdims=True)
    logw = top[..., 0] + np.log(np.exp(logits - top).sum(-1))
    i, j = np.indices((30, 30))
    logw = np.where(j <= i, logw + (i - j) * np.log(0.7), -np.inf)
    w = np.exp(logw - logw.max(-1, keepdims=True))
    np.testing.assert_allclose(full, (w @ v) / w.sum(-1, keepdims=True), rtol=1e-10,
                               atol=1e-12)


def test_nothing_to_do_returns_the_same_array():
    q, k, v = _inputs(np.float32, scale=1.0)
    phi = sa.PositiveRandomFeatures(dim=16, num_features=32, seed=1)
    out = np.ones((2, 48, 3), np.float32)
    den = np.ones((2, 48, 1), np.float32)
    assert recompute_underflowed_rows(out, den, q, k, v, phi, masks.Causal(48)) is out


@pytest.mark.parametrize("causal", [True, False])
def test_torch_inside_debug_is_recomputed_with_gradients(causal):
    q, k, v = _inputs(np.float32, scale=30.0, seed=9)
    L = q.shape[-2]
    mask = None if causal else np.abs(np.arange(L)[:, None] - np.arange(L)) <= 3
    phi = sa.PositiveRandomFeatures(dim=16, num_features=32, seed=1)
    expected = sa.kernel_attention(q, k, v, phi, causal=causal, mask=mask)
    tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))
    tmask = None if mask is None else torch.from_numpy(mask)
    with sa.debug():
        out = sa.kernel_attention(tq, tk, tv, phi, causal=causal, mask=tmask)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
    # with gradients: the recomputed rows are differentiable (torch log domain)
    tq64, tk64, tv64 = (torch.from_numpy(a.astype(np.float64)).requires_grad_()
                        for a in (q, k, v))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with sa.debug():
            out = sa.kernel_attention(tq64, tk64, tv64, phi, causal=causal, mask=tmask)
    M = np.tril(np.ones((L, L))) if causal else mask.astype(float)
    ref = _log_reference(phi, q.astype(np.float64), k.astype(np.float64),
                         v.astype(np.float64), M)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=0, atol=1e-9)
    out.square().sum().backward()
    for t in (tq64, tk64, tv64):
        assert torch.isfinite(t.grad).all()
    assert tv64.grad.abs().sum() > 0


def test_recomputed_rows_have_the_estimators_gradient():
    """Gradient of the recomputed rows == gradient of the dense log-domain estimator."""
    q, k, v = _inputs(np.float64, L=12, d=4, scale=30.0, seed=10, batch=())
    phi = sa.PositiveRandomFeatures(dim=4, num_features=8, seed=2)
    tq, tk, tv = (torch.from_numpy(a).requires_grad_() for a in (q, k, v))
    with sa.debug():
        out = sa.kernel_attention(tq, tk, tv, phi, causal=True)
    g = torch.autograd.grad(out.sum(), (tv,))[0]

    def dense(vv):
        lq = phi._log_features(tq.detach())
        lk = phi._log_features(tk.detach())
        logw = torch.logsumexp(lq[:, None, :] + lk[None, :, :], dim=-1)
        logw = logw.masked_fill(~torch.ones(12, 12, dtype=torch.bool).tril(), -torch.inf)
        return torch.softmax(logw, dim=-1) @ vv

    g_ref = torch.autograd.grad(dense(tv).sum(), (tv,))[0]
    torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-12)


def test_signed_feature_maps_still_warn_and_relu_underflow_is_reported():
    q = np.array([[-1.0, 0.0], [1.0, 0.0]])
    k = np.array([[1e-170, 0.0], [1e-170, 0.0]])
    v = np.array([[5.0], [-3.0]])
    with pytest.warns(sa.NormalizerWarning, match="no log-domain form"):
        out = sa.kernel_attention(q * 1e-150, k, v, sa.ReluFeatures())
    assert np.all(out == 0.0)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decoding_cache_at_extreme_magnitude(kind, dtype):
    """The cache raised its state to the data-independent cap, so the factor
    exp(first - cap) underflowed and old keys vanished from the state: float64 steps
    were silently wrong by O(1).  The per-feature raise keeps every term that matters."""
    from structattn.decoding import LinearAttentionCache

    q, k, v = _inputs(dtype, L=40, scale=30.0, seed=0)
    phi = sa.PositiveRandomFeatures(dim=16, num_features=32, seed=1)
    ref = _log_reference(phi, q, k, v, np.tril(np.ones((40, 40))))
    conv = torch.from_numpy if kind == "torch" else np.asarray
    cache = LinearAttentionCache(phi)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with sa.debug() if kind == "torch" else warnings.catch_warnings():
            head = cache.prefill(conv(q[:, :20]), conv(k[:, :20]), conv(v[:, :20]))
        steps = [cache.step(conv(q[:, t:t + 1]), conv(k[:, t:t + 1]), conv(v[:, t:t + 1]))
                 for t in range(20, 40)]
    y = np.concatenate([np.asarray(head)] + [np.asarray(s) for s in steps], axis=1)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(y[:, :20], ref[:, :20], rtol=0, atol=max(tol, _tol(dtype)["atol"]))
    np.testing.assert_allclose(y[:, 20:], ref[:, 20:], rtol=0, atol=tol * 100)


def _log_reference_weights(phi, q, k, M):
    """The row-normalized matrix of the estimator, dense in float64 logs."""
    lq = phi._log_features(np.asarray(q, np.float64))
    lk = phi._log_features(np.asarray(k, np.float64))
    logits = lq[..., :, None, :] + lk[..., None, :, :]
    top = logits.max(-1, keepdims=True)
    logw = top[..., 0] + np.log(np.exp(logits - top).sum(-1))
    with np.errstate(divide="ignore"):
        logw = np.where(M > 0, logw + np.log(np.where(M > 0, M, 1.0)), -np.inf)
    peak = logw.max(-1, keepdims=True)
    w = np.exp(logw - np.where(np.isfinite(peak), peak, 0.0))
    return w / w.sum(-1, keepdims=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("masked", ["causal", "band"])
def test_attention_matrix_rows_are_recomputed(dtype, masked):
    """attention_matrix(feature_map=PRF) returned zero rows here, without a warning."""
    q, k, _ = _inputs(dtype, L=40, scale=30.0, seed=11)
    L = q.shape[-2]
    phi = sa.PositiveRandomFeatures(dim=16, num_features=32, seed=1)
    band = np.abs(np.arange(L)[:, None] - np.arange(L)) <= 2
    kw = {"causal": True} if masked == "causal" else {"mask": band}
    M = np.tril(np.ones((L, L))) if masked == "causal" else band.astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P = sa.attention_matrix(q, k, feature_map=phi, **kw)
    assert P.dtype == dtype
    np.testing.assert_allclose(P.sum(-1), 1.0, rtol=1e-5 if dtype == np.float32 else 1e-12)
    ref = _log_reference_weights(phi, q, k, M)
    np.testing.assert_allclose(P, ref, rtol=0, atol=_tol(dtype)["atol"])
    # P @ v is kernel_attention's output (same estimator)
    v = np.random.default_rng(2).standard_normal((*q.shape[:-1], 3)).astype(dtype)
    out = sa.kernel_attention(q, k, v, phi, **kw)
    np.testing.assert_allclose(P @ v, out, rtol=0, atol=5 * _tol(dtype)["atol"])


def test_attention_matrix_torch_debug_with_gradients():
    q, k, _ = _inputs(np.float64, L=24, scale=30.0, seed=12)
    phi = sa.PositiveRandomFeatures(dim=16, num_features=32, seed=1)
    tq, tk = (torch.from_numpy(a).requires_grad_() for a in (q, k))
    with sa.debug():
        P = sa.attention_matrix(tq, tk, feature_map=phi, causal=True)
    ref = _log_reference_weights(phi, q, k, np.tril(np.ones((24, 24))))
    np.testing.assert_allclose(P.detach().numpy(), ref, rtol=0, atol=1e-12)
    (P * torch.arange(24.0, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(tq.grad).all() and torch.isfinite(tk.grad).all()

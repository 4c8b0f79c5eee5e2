"""VARS attention: the exact-kernel special case is softmax attention."""

from __future__ import annotations

import numpy as np
import pytest

from structattn.attention import softmax_attention
from structattn.solvers import vars_attention

from ..conftest import convert, to_np

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(3)
Q, K, V = (RNG.standard_normal((2, 3, 7, 4)) for _ in range(3))


def test_one_step_lambda_zero_is_softmax_attention(backend):
    q, k, v = convert(backend, "float64", Q, K, V)
    y = vars_attention(q, k, v, lam=0.0, steps=1, backend=backend)
    ref = softmax_attention(q, k, v, backend=backend)
    np.testing.assert_allclose(to_np(y), to_np(ref), atol=1e-12, rtol=0)


def test_neumann_series_multi_step():
    s = 0.5
    y = vars_attention(Q, K, V, steps=4, normalize_rows=False, scale=s)
    G_qk, G_kk = np.exp(Q @ np.swapaxes(K, -1, -2) * s), np.exp(K @ np.swapaxes(K, -1, -2) * s)
    L = G_kk.sum(-1).max(-1)[..., None, None]
    A = np.eye(7) - G_kk / L
    terms, P = np.zeros_like(V), V.copy()
    for _ in range(4):
        terms, P = terms + P, A @ P
    ref = G_qk @ terms / L
    # relative to the output's scale: an entry ~1e-5 of the max comes out of cancellation
    # and carries the BLAS kernel's rounding (1e-12 elementwise fails on SkylakeX kernels)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


def test_random_features_path_runs_and_is_differentiable():
    q, v = (torch.tensor(a, requires_grad=True) for a in (Q, V))
    y = vars_attention(q, q, v, features="random", lam=0.1, steps=3, seed=0)
    assert y.shape == v.shape
    y.sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(v.grad).all()


def test_positive_lambda_needs_features():
    with pytest.raises(ValueError, match="does not kernelize"):
        vars_attention(Q, K, V, lam=0.1)


# ----------------------------------------------------------------- static / both templates
def _circulant_dictionary(h):
    hn = h / np.linalg.norm(h, axis=-1, keepdims=True)
    N = h.shape[-1]
    return np.concatenate(
        [np.stack([np.roll(hp, s) for s in range(N)], axis=1) for hp in hn], axis=1
    )


def test_static_templates_equal_dense_circulant_lasso():
    from structattn.solvers import lasso

    rng = np.random.default_rng(5)
    N, C, P = 8, 3, 5
    v = rng.standard_normal((2, N, C))
    h = rng.standard_normal((C, P, N))
    y = vars_attention(v, v, v, templates="static", kernels=h, lam=0.3, steps=4)
    for c in range(C):
        D = _circulant_dictionary(h[c])
        G = D.T @ D
        # DᵀD is block diagonal in frequency: ||DᵀD||₂ = max_ω Σ_p |ĥ_p(ω)|²
        Hf = np.fft.rfft(h[c] / np.linalg.norm(h[c], axis=-1, keepdims=True), axis=-1)
        L = np.linalg.eigvalsh(G).max()
        np.testing.assert_allclose(L, (np.abs(Hf) ** 2).sum(0).max(), rtol=1e-12)
        r = lasso(D, v[..., c:c + 1], 0.3, max_iter=4, tol=0.0, L=float(L), init="one_step",
                  warn=False, backend="numpy")
        np.testing.assert_allclose(y[..., c:c + 1], r.recon, atol=1e-12, rtol=0)
    yt = vars_attention(*(torch.tensor(v),) * 3, templates="static", kernels=torch.tensor(h),
                        lam=0.3, steps=4)
    np.testing.assert_allclose(to_np(yt), y, atol=1e-12)


def test_both_templates_concatenate_bank():
    from structattn.solvers import lasso
    from structattn.solvers.vars import _random_templates

    rng = np.random.default_rng(6)
    bank = rng.standard_normal((7, 5))
    y = vars_attention(Q, Q, V, templates="both", features="random", bank=bank, lam=0.1,
                       steps=3, num_features=8, seed=0)
    D = np.concatenate([_random_templates(Q, 8, 0),
                        np.broadcast_to(bank / np.linalg.norm(bank, axis=0), (2, 3, 7, 5))],
                       axis=-1)
    ref = lasso(D, V, 0.1, max_iter=3, tol=0.0, L="rowsum", init="one_step", warn=False).recon
    np.testing.assert_allclose(y, ref, atol=1e-14, rtol=0)


def test_static_and_both_errors():
    with pytest.raises(TypeError, match="kernels"):
        vars_attention(Q, K, V, templates="static")
    with pytest.raises(TypeError, match="bank"):
        vars_attention(Q, Q, V, templates="both", features="random", seed=0)
    with pytest.raises(ValueError, match="templates"):
        vars_attention(Q, K, V, templates="learned")


def test_random_kernel_features_approach_exact_kernel():
    # Monte-Carlo: RMS error to the exact-kernel (softmax) output ~ c/√m, measured c ≈ 0.21-0.31
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, 7, 4)) * 0.5 for _ in range(3))
    exact = vars_attention(q, k, v)
    ms = [16, 64, 256, 1024, 4096]
    errs = []
    for m in ms:
        e = [np.sqrt(np.mean((vars_attention(q, k, v, features="random", feature_map="kernel",
                                             num_features=m, seed=s) - exact) ** 2))
             for s in range(10)]
        errs.append(np.mean(e))
    errs = np.array(errs)
    assert np.all(np.diff(errs) < 0)
    assert errs[-1] < errs[0] / 8  # O(1/√m) predicts 16x; measured ≈ 11x
    assert np.all(errs * np.sqrt(ms) < 0.5)


# ----------------------------------------------------------------- second derivatives
@pytest.mark.parametrize("n_steps", [1, 3])
def test_gradgradcheck_exact_kernel(n_steps):
    q, k, v = (torch.tensor(a[:1, :2, :5, :3], requires_grad=True) for a in (Q, K, V))
    if n_steps == 1:  # softmax attention: differentiable in q, k, v
        args = (q, k, v)

        def f(q, k, v):
            return vars_attention(q, k, v, steps=1)
    else:  # the step 1/L (a function of k) is gradient-stopped: hold k fixed
        args = (q, v)

        def f(q, v):
            return vars_attention(q, k.detach(), v, steps=n_steps)

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6, rtol=1e-4)
    assert torch.autograd.gradgradcheck(f, args, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradgradcheck_random_features():
    q, v = (torch.tensor(a[:1, :2, :5, :3], requires_grad=True) for a in (Q, V))

    # VARS-D: the rowsum step (a function of q) is gradient-stopped: hold q fixed
    def f(v):
        return vars_attention(q.detach(), q.detach(), v, features="random", lam=0.05,
                              steps=3, seed=0)

    assert torch.autograd.gradcheck(f, (v,), eps=1e-6, atol=1e-6, rtol=1e-4)
    assert torch.autograd.gradgradcheck(f, (v,), eps=1e-6, atol=1e-6, rtol=1e-4)

    # kernel features, one unit step: differentiable in q, k, v
    k = torch.tensor(K[:1, :2, :5, :3], requires_grad=True)

    def g(q, k, v):
        return vars_attention(q, k, v, features="random", feature_map="kernel",
                              num_features=8, steps=1, seed=0)

    assert torch.autograd.gradcheck(g, (q, k, v), eps=1e-6, atol=1e-6, rtol=1e-4)
    assert torch.autograd.gradgradcheck(g, (q, k, v), eps=1e-6, atol=1e-6, rtol=1e-4)

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
    y = vars_attention(q, k, v, lam=0.0, n_steps=1, backend=backend)
    ref = softmax_attention(q, k, v, backend=backend)
    np.testing.assert_allclose(to_np(y), to_np(ref), atol=1e-12, rtol=0)


def test_neumann_series_multi_step():
    s = 0.5
    y = vars_attention(Q, K, V, n_steps=4, normalize_rows=False, scale=s)
    G_qk, G_kk = np.exp(Q @ np.swapaxes(K, -1, -2) * s), np.exp(K @ np.swapaxes(K, -1, -2) * s)
    L = G_kk.sum(-1).max(-1)[..., None, None]
    A = np.eye(7) - G_kk / L
    terms, P = np.zeros_like(V), V.copy()
    for _ in range(4):
        terms, P = terms + P, A @ P
    np.testing.assert_allclose(y, G_qk @ terms / L, rtol=1e-12)


def test_random_features_path_runs_and_is_differentiable():
    q, v = (torch.tensor(a, requires_grad=True) for a in (Q, V))
    y = vars_attention(q, q, v, features="random", lam=0.1, n_steps=3, seed=0)
    assert y.shape == v.shape
    y.sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(v.grad).all()


def test_positive_lambda_needs_features():
    with pytest.raises(ValueError, match="does not kernelize"):
        vars_attention(Q, K, V, lam=0.1)

"""Sparse + low-rank attention: fast paths against the dense reference, limiting cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from structattn import (
    EluFeatures,
    PositiveRandomFeatures,
    TrigonometricRandomFeatures,
    kernel_attention,
    softmax_attention,
)
from structattn.features import FeatureMap
from structattn.graphs import full, window
from structattn.hybrid import (
    BlockPattern,
    SparseLowRankAttention,
    lsh_support,
    mra_support,
    sparse_lowrank_attention,
    sparse_lowrank_reference,
    sparse_lowrank_weights,
)
from tests.conftest import convert, to_np

torch = pytest.importorskip("torch")

B, L, D = 2, 24, 6
TOL = {"float64": 1e-10, "float32": 1e-4}


def _inputs(seed: int = 0, scale: float = 1.0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal((B, L, D)) * scale for _ in range(3))


def _support(kind: str, q: np.ndarray, k: np.ndarray):
    if kind == "graph":
        return window(L, 2)
    if kind == "blocks":
        blocks = np.zeros((3, 3), dtype=bool)
        blocks[[0, 1, 2, 2], [0, 1, 2, 0]] = True
        return BlockPattern(blocks, 8)
    if kind == "mra":
        return mra_support(q, k, block_size=8, blocks_per_row=1)
    if kind == "lsh":
        return lsh_support(q, k, 5, seed=3)
    dense = np.random.default_rng(1).random((B, L, L)) < 0.2
    return dense


KINDS = ("graph", "blocks", "mra", "lsh", "bool")
PRF = PositiveRandomFeatures(dim=D, num_features=12, seed=0)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_fast_paths_match_dense_reference(backend, dtype, kind, causal):
    q, k, v = _inputs()
    sup = _support(kind, q, k)
    ref = sparse_lowrank_reference(q, k, v, sup, PRF, causal=causal)
    qq, kk, vv = convert(backend, dtype, q, k, v)
    out = sparse_lowrank_attention(qq, kk, vv, sup, PRF, causal=causal, backend=backend)
    assert out.dtype == qq.dtype and tuple(out.shape) == (B, L, D)
    np.testing.assert_allclose(to_np(out), ref, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("phi", [PRF, TrigonometricRandomFeatures(dim=D, num_features=8, seed=1),
                                 EluFeatures()], ids=["prf", "trig", "elu"])
@pytest.mark.parametrize("causal", [False, True])
def test_full_support_is_exact_softmax(backend, phi, causal):
    q, k, v = _inputs(2)
    scale = getattr(phi, "temperature", D**-0.5)
    exact = softmax_attention(q, k, v, causal=causal, scale=scale)
    qq, kk, vv = convert(backend, "float64", q, k, v)
    out = sparse_lowrank_attention(qq, kk, vv, full(L), phi, causal=causal, backend=backend)
    np.testing.assert_allclose(to_np(out), exact, rtol=1e-10, atol=1e-10)


@pytest.mark.filterwarnings("ignore::structattn.attention.NormalizerWarning")  # trig: signed
@pytest.mark.parametrize("phi", [PRF, PositiveRandomFeatures(dim=D, num_features=6, seed=4,
                                                              hyperbolic=True),
                                 TrigonometricRandomFeatures(dim=D, num_features=8, seed=1),
                                 EluFeatures()], ids=["prf", "prf-hyp", "trig", "elu"])
@pytest.mark.parametrize("causal", [False, True])
def test_empty_support_is_kernel_attention(backend, phi, causal):
    q, k, v = _inputs(3)
    qq, kk, vv = convert(backend, "float64", q, k, v)
    expect = to_np(kernel_attention(qq, kk, vv, phi, causal=causal, backend=backend))
    empty = np.zeros((L, L), dtype=bool)
    for sup in (None, empty):
        out = sparse_lowrank_attention(qq, kk, vv, sup, phi, causal=causal, backend=backend)
        np.testing.assert_allclose(to_np(out), expect, rtol=1e-10, atol=1e-12)


class _ExactExp(FeatureMap):
    """An exact finite feature map of ``exp(q·k·scale)`` on a fixed, known key set.

    ``φ(q) = exp(scale·q Kᵀ)`` (one feature per key), ``φ(k_j) = e_j``: exact for the
    keys ``K`` it was built with (test-only: it identifies keys by their values).
    """

    nonnegative = True

    def __init__(self, keys: np.ndarray, scale: float):
        self.keys_ = keys
        self.scale = scale

    def feature_dim(self, d: int) -> int:
        return self.keys_.shape[-2]

    def _features(self, x):
        if x.shape == self.keys_.shape and np.array_equal(x, self.keys_):
            return np.broadcast_to(np.eye(x.shape[-2]), (*x.shape[:-1], x.shape[-2])).copy()
        return np.exp(x @ np.swapaxes(self.keys_, -1, -2) * self.scale)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("backend_np", ["numpy", "numba"])
def test_exact_feature_map_gives_exact_softmax(causal, backend_np):
    q, k, v = _inputs(4)
    phi = _ExactExp(k, D**-0.5)
    exact = softmax_attention(q, k, v, causal=causal)
    for sup in (window(L, 3), lsh_support(q, k, 4, seed=0), None):
        out = sparse_lowrank_attention(q, k, v, sup, phi, causal=causal, backend=backend_np)
        np.testing.assert_allclose(out, exact, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("phi", [PRF, PositiveRandomFeatures(dim=D, num_features=5, seed=2,
                                                              hyperbolic=True),
                                 TrigonometricRandomFeatures(dim=D, num_features=8, seed=1)],
                         ids=["prf", "prf-hyp", "trig"])
@pytest.mark.parametrize("causal", [False, True])
def test_stabilization_is_commensurate(phi, causal):
    """Independent raw-scale formula: S ⊙ exp(s) + (1 − S) ⊙ φ(q)·φ(k) with raw features."""
    q, k, v = _inputs(5, scale=0.7)
    S = window(L, 2).to_dense()
    raw = np.where(S, np.exp(q @ np.swapaxes(k, -1, -2) * phi.temperature),
                   phi(q) @ np.swapaxes(phi(k), -1, -2))
    if causal:
        raw = raw * np.tril(np.ones((L, L)))
    expect = raw / raw.sum(-1, keepdims=True) @ v
    out = sparse_lowrank_attention(q, k, v, window(L, 2), phi, causal=causal)
    np.testing.assert_allclose(out, expect, rtol=1e-10, atol=1e-10)
    W, log_scale = sparse_lowrank_weights(q, k, window(L, 2), phi, causal=causal)
    np.testing.assert_allclose(W * np.exp(log_scale), raw, rtol=1e-10, atol=1e-12)


def test_large_inputs_stay_finite_in_float32():
    q, k, v = _inputs(6, scale=6.0)
    q32, k32, v32 = (x.astype(np.float32) for x in (q, k, v))
    for causal in (False, True):
        out = sparse_lowrank_attention(q32, k32, v32, window(L, 1), PRF, causal=causal)
        assert np.all(np.isfinite(out))
        ref = sparse_lowrank_reference(q, k, v, window(L, 1), PRF, causal=causal)
        np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind", ["graph", "mra"])
def test_gradcheck(kind, causal):
    q, k, v = (torch.tensor(x[:1, :10, :3], requires_grad=True) for x in _inputs(7))
    phi = PositiveRandomFeatures(dim=3, num_features=4, seed=0)
    sup = window(10, 1) if kind == "graph" else mra_support(q, k, block_size=4,
                                                           blocks_per_row=1)

    def f(a, b, c):
        return sparse_lowrank_attention(a, b, c, sup, phi, causal=causal)

    assert torch.autograd.gradcheck(f, (q, k, v), eps=1e-6, atol=1e-7)
    # and the gradient equals the dense reference's
    g1 = torch.autograd.grad(f(q, k, v).square().sum(), (q, k, v))
    ref = sparse_lowrank_reference(q, k, v, sup, phi, causal=causal)
    g2 = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_row_weights_nonnegative_with_positive_features():
    q, k, _ = _inputs(8, scale=2.0)
    for sup in (window(L, 2), mra_support(q, k, block_size=8, blocks_per_row=1)):
        for causal in (False, True):
            W, _ = sparse_lowrank_weights(q, k, sup, PRF, causal=causal)
            assert np.all(W >= 0)
            P = sparse_lowrank_reference(q, k, None, sup, PRF, causal=causal)
            assert np.all(P >= 0)
            np.testing.assert_allclose(P.sum(-1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("hyperbolic", [False, True])
def test_lowrank_part_unbiased_on_complement(hyperbolic):
    """Mean over 400 seeds of the raw complement weights ≈ exp(s) (fixed seeds, 5 s.e.)."""
    rng = np.random.default_rng(9)
    q, k = (rng.standard_normal((1, 8, 4)) * 0.6 for _ in range(2))
    sup = window(8, 1)
    S = sup.to_dense()
    draws = []
    for seed in range(400):
        phi = PositiveRandomFeatures(dim=4, num_features=8, seed=seed, hyperbolic=hyperbolic)
        W, log_scale = sparse_lowrank_weights(q, k, sup, phi)
        draws.append((W * np.exp(log_scale))[0])
    draws = np.array(draws)
    target = np.exp(q[0] @ k[0].T / 2.0)
    mean, se = draws.mean(0), draws.std(0, ddof=1) / math.sqrt(len(draws))
    np.testing.assert_allclose(mean[S], target[S], rtol=1e-12)  # exact on the support
    z = np.abs(mean[~S] - target[~S]) / se[~S]
    assert z.max() < 5.0, z.max()
    assert np.all(se[~S] > 0)


def test_operator_object_matches_functions():
    q, k, v = _inputs(10)
    rule = lambda a, b: mra_support(a, b, block_size=8, blocks_per_row=2)  # noqa: E731
    op = SparseLowRankAttention(PRF, support=rule)
    np.testing.assert_allclose(op(q, k, v), op.matrix(q, k) @ v, rtol=1e-10, atol=1e-12)
    fixed = SparseLowRankAttention(PRF, support=window(L, 2), causal=True, backend="numpy")
    np.testing.assert_allclose(fixed(q, k, v), fixed.matrix(q, k) @ v, rtol=1e-10,
                               atol=1e-12)


def test_bad_inputs_raise_clear_errors():
    q, k, v = _inputs()
    with pytest.raises(TypeError, match="support must be"):
        sparse_lowrank_attention(q, k, v, "window", PRF)
    with pytest.raises(ValueError, match="L=30"):
        sparse_lowrank_attention(q, k, v, window(30, 2), PRF)
    with pytest.raises(TypeError, match="feature_map"):
        sparse_lowrank_attention(q, k, v, window(L, 2), object())
    with pytest.raises(TypeError, match="causal"):
        sparse_lowrank_attention(q, k, v, window(L, 2), PRF, causal="yes")
    with pytest.raises(ValueError, match="batch/head"):
        sparse_lowrank_attention(q, k, v, np.zeros((3, L, L), dtype=bool), PRF)
    with pytest.raises(ValueError, match="L_q == L_k"):
        sparse_lowrank_attention(q[:, :5], k, v, None, PRF)
    with pytest.raises(ValueError, match=r"NaN|finite"):
        sparse_lowrank_attention(q * np.nan, k, v, None, PRF)

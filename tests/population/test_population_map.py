"""population_map: the batched call equals the loop for every batchable operator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from structattn import softmax_attention
from structattn.masks import DecayedCausal
from structattn.population import (
    BATCHABLE,
    OPERATORS,
    StackedDecayedCausal,
    batchable,
    population_map,
)


def _inputs(kind: str, shape=(2, 24, 6), seed=0, norm=1.0):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal(shape) * (norm if i < 2 else 1.0) for i in range(3))
    if kind == "torch":
        return tuple(torch.from_numpy(x) for x in (q, k, v))
    return q, k, v


def _np(x):
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


CASES = [
    ("exact", {"scale": [0.05, 0.3, 0.8]}, {}),
    ("exact", {"scale": [0.05, 0.3, 0.8]}, {"causal": True}),
    ("performer", {"seed": [0, 1, 2], "scale": [0.2, 0.4, 0.6]}, {"num_features": 16}),
    ("performer", {"seed": [0, 1, 2]}, {"num_features": 16, "causal": True}),
    ("performer-iid", {"seed": [5, 6]}, {"num_features": 8}),
    ("performer-hyperbolic", {"seed": [0, 1, 2]}, {"num_features": 8, "causal": True}),
    ("rfa-trig", {"seed": [0, 1, 2], "scale": [0.1, 0.2, 0.3]}, {"num_features": 64}),
    ("performer", {"gamma": [0.8, 0.95, 1.0], "seed": [3, 4, 5]}, {"num_features": 16}),
]


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize(("name", "grid", "fixed"), CASES)
def test_vectorized_equals_loop(kind, name, grid, fixed):
    # small-norm inputs keep the signed (trigonometric) normalizers away from zero
    q, k, v = _inputs(kind, norm=0.5)
    a, ia = population_map(name, grid, q, k, v, vectorize="auto", return_info=True, **fixed)
    b, ib = population_map(name, grid, q, k, v, vectorize=False, return_info=True, **fixed)
    assert ia.vectorized and not ib.vectorized and ib.reason == "vectorize=False"
    assert type(a) is type(b) and a.shape == (len(next(iter(grid.values()))), *q.shape)
    np.testing.assert_allclose(_np(a), _np(b), rtol=0, atol=1e-12)
    # members really differ (the grid is not ignored)
    assert np.max(np.abs(_np(a)[0] - _np(a)[-1])) > 1e-3


def test_loop_matches_single_calls_and_masked():
    q, k, v = _inputs("numpy")
    keep = np.tril(np.ones((24, 24), dtype=bool), k=3)
    out = population_map(softmax_attention, {"scale": [0.1, 0.7]}, q, k, v, mask=keep)
    for p, s in enumerate([0.1, 0.7]):
        np.testing.assert_allclose(out[p], softmax_attention(q, k, v, scale=s, mask=keep),
                                   rtol=0, atol=1e-12)


def test_decay_matches_decayed_causal_reference():
    q, k, v = _inputs("numpy", shape=(1, 300, 4))  # > one scan chunk (128)
    out = population_map("performer", {"gamma": [0.97, 0.999]}, q, k, v, num_features=8,
                         seed=1, vectorize=True)
    from structattn import PositiveRandomFeatures, kernel_attention

    for p, g in enumerate([0.97, 0.999]):
        ref = kernel_attention(q, k, v, PositiveRandomFeatures(4, 8, seed=1),
                               mask=DecayedCausal(300, g), backend="numpy")
        np.testing.assert_allclose(out[p], ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_stacked_decay_dense(kind):
    m = StackedDecayedCausal(5, [0.5, 0.9], batch_ndim=1)
    like = np.zeros(1) if kind == "numpy" else torch.zeros(1, dtype=torch.float64)
    dense = _np(m.to_dense())
    assert m.batch_shape == (2, 1)
    for p, g in enumerate([0.5, 0.9]):
        np.testing.assert_allclose(dense[p, 0], DecayedCausal(5, g).to_dense())
    X = np.random.default_rng(0).standard_normal((2, 3, 5, 2))
    X = X if kind == "numpy" else torch.from_numpy(X)
    del like
    got = _np(m @ X)
    np.testing.assert_allclose(got, dense @ _np(X), atol=1e-12)
    np.testing.assert_allclose(_np(m.T @ X), np.swapaxes(dense, -1, -2) @ _np(X), atol=1e-12)


def test_loop_fallback_and_errors():
    q, k, v = _inputs("numpy")
    out, info = population_map("performer", {"num_features": [8, 16]}, q, k, v, seed=0,
                               return_info=True)
    assert not info.vectorized and "num_features" in info.reason and out.shape[0] == 2
    with pytest.raises(ValueError, match="cannot batch"):
        population_map("performer", {"num_features": [8, 16]}, q, k, v, vectorize=True)
    with pytest.raises(ValueError, match="same length"):
        population_map("exact", {"scale": [1.0], "x": [1, 2]}, q, k, v)
    with pytest.raises(ValueError, match="non-empty"):
        population_map("exact", {}, q, k, v)
    with pytest.raises(ValueError, match="unknown population operator"):
        population_map("nope", {"scale": [1.0]}, q, k, v)
    with pytest.raises(ValueError, match="both in grid"):
        population_map("exact", {"scale": [1.0]}, q, k, v, scale=2.0)

    def custom(q, k, v, *, alpha):
        return alpha * v

    out, info = population_map(custom, {"alpha": [1.0, 2.0]}, q, k, v, return_info=True)
    assert not info.vectorized and np.allclose(out[1], 2 * v)


def test_batchable_table():
    assert batchable("performer") == ("seed", "scale", "gamma")
    assert batchable("exact") == ("scale",)
    assert batchable("lara") == ()
    assert set(BATCHABLE) == set(OPERATORS)
    for names in BATCHABLE.values():
        assert "num_features" not in names


def test_gradients_flow_through_batched_call():
    q, k, v = _inputs("torch")
    q = q.clone().requires_grad_(True)
    out = population_map("performer", {"seed": [0, 1]}, q, k, v, num_features=8)
    out.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()

"""Uniform attention (the baseline) and the exact reference rows."""

from __future__ import annotations

import numpy as np
import pytest

from structattn.masks import Causal, Dense, Full
from structattn.studies import UniformAttention, get, run_study


def _inputs(seed=0, batch=(2, 3), L=7, d=4, dv=5):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((*batch, L, d)), rng.standard_normal((*batch, L, d)),
            rng.standard_normal((*batch, L, dv)))


def _mask(L=7, seed=1):
    M = np.random.default_rng(seed).random((L, L)) < 0.5
    M[:, 0] = True  # every row sees a key
    return M


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_uniform_is_the_mean_of_v_over_allowed_keys(backend):
    q, k, v = _inputs()
    M = _mask()
    expected = {
        "full": np.broadcast_to(v.mean(-2, keepdims=True), v.shape),
        "causal": np.cumsum(v, axis=-2) / np.arange(1, 8)[:, None],
        "dense": np.stack([v[..., M[i], :].mean(-2) for i in range(7)], axis=-2),
    }
    ops = {
        "full": [UniformAttention(), UniformAttention(mask=Full(7, 7))],
        "causal": [UniformAttention(causal=True), UniformAttention(mask=Causal(7))],
        "dense": [UniformAttention(mask=M), UniformAttention(mask=Dense(M.astype(float)))],
    }
    if backend == "torch":
        torch = pytest.importorskip("torch")
        q, k, v = (torch.from_numpy(x) for x in (q, k, v))
    for name, pair in ops.items():
        for op in pair:
            out = op(q, k, v)
            got = out.numpy() if backend == "torch" else out
            assert type(out) is type(v)
            np.testing.assert_allclose(got, expected[name], rtol=1e-12, atol=1e-12)
            # the implied map is the row-normalized mask and reproduces the output
            P = op.matrix(q, k)
            P = P.numpy() if backend == "torch" else P
            np.testing.assert_allclose(P.sum(-1), 1.0, rtol=1e-12)
            vn = v.numpy() if backend == "torch" else v
            np.testing.assert_allclose(P @ vn, expected[name], rtol=1e-12, atol=1e-12)


def test_uniform_float32():
    q, k, v = (x.astype(np.float32) for x in _inputs())
    out = UniformAttention(causal=True)(q, k, v)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[..., -1, :], v.mean(-2), rtol=1e-5, atol=1e-6)


def test_baseline_rows_in_every_study():
    assert get("uniform").budgets == {} and get("exact").budgets == {}
    records = run_study(["uniform", "exact", "performer"], lengths=(16,), dim=8,
                        value_dim=8, causal=(False, True), repeats=3)
    for r in records:
        assert r["uniform_error"] > 0
        if r["operator"] == "exact":
            assert r["head_error"] < 1e-14 and r["time_s"] == r["exact_time_s"]
        if r["operator"] == "uniform":  # its own error is the baseline column
            assert r["head_error"] == pytest.approx(r["uniform_error"], rel=1e-12)
        assert r["repeats"] == 3 and r["time_s"] > 0 and r["time_spread_s"] >= 0

"""Regression (issue 13): the numba MRA kernel has no "no valid key" sentinel value.

It used ``-1e38`` as one, so a float64 row whose scores all lay below ``-1e38`` came back
as zeros on the numba backend; it now tracks key validity explicitly and equals the
numpy path at any finite score magnitude.
"""

from __future__ import annotations

import numpy as np
import pytest

from structattn.mra import mra_attention

pytest.importorskip("numba")


def _inputs(shift, seed=0, L=24, d=4):
    """float64 q, k, v whose scores are all ≈ ``shift`` (distinct, far below -1e38)."""
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((2, L, d)) for _ in range(3))
    q[..., 0] = rng.uniform(1.0, 1.1, (2, L))
    k[..., 0] = shift * rng.uniform(1.0, 1.1, (2, L))
    return q, k, v


@pytest.mark.parametrize("mode", ["full", "sparse"])
@pytest.mark.parametrize("shift", [-1e39, -1e100])
@pytest.mark.parametrize("masked", [False, True])
def test_numba_equals_numpy_below_old_sentinel(mode, shift, masked):
    q, k, v = _inputs(shift)
    scores = q @ np.swapaxes(k, -1, -2) / 2.0
    assert scores.max() < -1e38  # the regime of the old bug
    key_mask = None
    if masked:
        key_mask = np.ones((2, 24), dtype=bool)
        key_mask[:, [1, 6, 13, 22, 23]] = False  # padded keys inside selected blocks
    kw = dict(block_size=4, blocks_per_row=2, mode=mode, key_mask=key_mask)
    y_nb = mra_attention(q, k, v, backend="numba", **kw)
    y_np = mra_attention(q, k, v, backend="numpy", **kw)
    np.testing.assert_allclose(y_nb, y_np, rtol=0, atol=1e-12)
    # not the old result: real rows are convex combinations of v, never all zero
    real = np.ones((2, 24), dtype=bool) if key_mask is None else key_mask
    assert np.all(np.abs(y_nb[real]).max(axis=-1) > 0)
    print(f"|y| mean {np.abs(y_nb).mean():.3f}; uniform-attention baseline "
          f"|mean(v)| {np.abs(v.mean(axis=-2)).mean():.3f}")


@pytest.mark.parametrize("shift", [-1e39, -1e100])
def test_numba_full_budget_equals_softmax_below_old_sentinel(shift):
    """With every block selected MRA is exact softmax (row-wise shifted reference)."""
    q, k, v = _inputs(shift, seed=1, L=16)
    key_mask = np.ones((2, 16), dtype=bool)
    key_mask[:, [2, 9]] = False
    s = q @ np.swapaxes(k, -1, -2) / 2.0
    s = np.where(key_mask[:, None, :], s, -np.inf)
    w = np.exp(s - s.max(axis=-1, keepdims=True))
    ref = (w / w.sum(axis=-1, keepdims=True)) @ v
    ref = np.where(key_mask[..., None], ref, 0.0)
    for mode in ("full", "sparse"):
        y = mra_attention(q, k, v, block_size=4, num_blocks=16, mode=mode, backend="numba",
                          key_mask=key_mask)
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-12)

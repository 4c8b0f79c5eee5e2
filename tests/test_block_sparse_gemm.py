"""Block-sparse graph attention as batched GEMMs (structattn.graphs.block_gemm): layout
detection, equality with dense masked softmax (float64 1e-10, float32 1e-4) and with the
token-level paths on every backend, gradients on torch."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import structattn.graphs.sparse_attention  # noqa: F401  (the module, not the function)
from structattn.graphs import (
    AttentionGraph,
    bigbird,
    block_gemm,
    hypercube,
    sparse_attention,
    window,
)

sa_mod = sys.modules["structattn.graphs.sparse_attention"]

PATTERNS = {
    "window-b8": lambda n: window(n, 1, block_size=8),
    "hypercube-b16": lambda n: hypercube(n, block_size=16),
    "bigbird-b8": lambda n: bigbird(n, 1, 1, 2, seed=3, block_size=8),
}


def _dense_reference(q, k, v, A):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    s = np.where(A, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    p = np.where(A, np.exp(s - m), 0)
    den = p.sum(-1, keepdims=True)
    return np.where(den > 0, (p @ v) / np.where(den > 0, den, 1), 0)


def _inputs(shape, d, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal((*shape, d)).astype(dtype) for _ in range(3))


@pytest.mark.parametrize("name", list(PATTERNS))
def test_detects_block_layouts(name):
    g = PATTERNS[name](128)
    found = block_gemm.detect_block_layout(g)
    assert found is not None
    layout, b = found
    assert layout.block_expand(b) == g
    assert block_gemm.detect_block_layout(g) is found  # cached


def test_rejects_token_graphs():
    assert block_gemm.detect_block_layout(hypercube(64)) is None
    assert block_gemm.detect_block_layout(window(64, 2)) is None
    g = window(64, 1, block_size=8)
    assert block_gemm.detect_block_layout(g.causal()) is None  # triangular diagonal blocks
    # same degrees as a block layout, but columns not block aligned
    rows = np.repeat(np.arange(16), 4)
    cols = (np.arange(16)[:, None] // 4 * 4 + (np.arange(4)[None, :] + 1) % 4).ravel()
    cols = (cols + 1) % 16
    assert block_gemm.detect_block_layout(AttentionGraph.from_edges(rows, cols, 16)) is None


@pytest.mark.parametrize("name", list(PATTERNS))
@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_matches_dense_and_token_paths(name, backend, dtype, tol, monkeypatch):
    if backend == "numba":
        pytest.importorskip("numba")
    g = PATTERNS[name](128)
    q, k, v = _inputs((2, 3, 128), 16, seed=1, dtype=dtype)
    ref = _dense_reference(*(x.astype(np.float64) for x in (q, k, v)), g.to_dense())
    got = sparse_attention(q, k, v, g, backend=backend)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol)
    monkeypatch.setattr(sa_mod, "BLOCK_GEMM", False)
    token = sparse_attention(q, k, v, g, backend=backend)
    np.testing.assert_allclose(got, token, rtol=0, atol=tol)


@pytest.mark.parametrize("group, chunk", [(1, 1 << 15), (3, 64)])
def test_grouping_and_chunking(group, chunk, monkeypatch):
    """Any width rounding and chunk size, and empty block rows (user layouts)."""
    monkeypatch.setattr(block_gemm, "GROUP", group)
    monkeypatch.setattr(block_gemm, "CHUNK_KEYS", chunk)
    layout = AttentionGraph.from_edges(np.array([0, 0, 0, 2, 3, 3]),
                                       np.array([0, 1, 3, 2, 0, 1]), 4)  # row 1 empty
    g = layout.block_expand(8)
    q, k, v = _inputs((2, 32), 8, seed=2)
    got = sparse_attention(q, k, v, g, backend="numpy")
    np.testing.assert_allclose(got, _dense_reference(q, k, v, g.to_dense()), rtol=0,
                               atol=1e-12)
    assert np.all(got[:, 8:16] == 0)


def test_torch_forward_and_gradients(monkeypatch):
    torch = pytest.importorskip("torch")
    g = PATTERNS["bigbird-b8"](64)
    q, k, v = _inputs((2, 64), 8, seed=4)
    tq, tk, tv = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    calls = []
    real = block_gemm.block_sparse_attention
    monkeypatch.setattr(sa_mod, "block_sparse_attention",
                        lambda *a: calls.append(1) or real(*a))
    y = sparse_attention(tq, tk, tv, g)
    assert calls
    np.testing.assert_allclose(y.detach().numpy(), _dense_reference(q, k, v, g.to_dense()),
                               rtol=0, atol=1e-10)
    grads = torch.autograd.grad(y.square().sum(), (tq, tk, tv))
    monkeypatch.setattr(sa_mod, "BLOCK_GEMM", False)
    y_tok = sparse_attention(tq, tk, tv, g)
    grads_tok = torch.autograd.grad(y_tok.square().sum(), (tq, tk, tv))
    for a, b in zip(grads, grads_tok, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    monkeypatch.undo()
    small = [torch.tensor(x[:1, :32], requires_grad=True) for x in (q, k, v)]
    gs = window(32, 1, block_size=8)
    assert torch.autograd.gradcheck(lambda a, b, c: sparse_attention(a, b, c, gs), small)

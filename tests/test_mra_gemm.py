"""Row-panel batched-GEMM fine part of MRA (structattn.mra._core._fine_rows) and the
numba ``"panel"`` tile-product variant: equal to the per-tile core and the dense
reference (float64 1e-10, float32 1e-4), with masks, padding, chunking and gradients."""

from __future__ import annotations

import numpy as np
import pytest

from structattn.mra import MRAAttention, _core, mra_attention, mra_dense_reference
from structattn.mra._prepare import _prepare

KW = dict(num_blocks=None, prior_first=0, prior_diag=0, key_padding_mask=None, scale=None,
          selection=None, check_finite=False)


def _inputs(shape, d, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return tuple((rng.standard_normal((*shape, d)) * 0.7).astype(dtype) for _ in range(3))


def _mask(L, seed):
    m = np.ones(L, dtype=bool)
    m[np.random.default_rng(seed).choice(L, L // 5, replace=False)] = False
    return m


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
@pytest.mark.parametrize("L, masked", [(256, False), (300, True)])
@pytest.mark.parametrize("group, chunk", [(4, 1 << 14), (1, 1 << 14), (3, 64)])
def test_rows_equal_tiles(dtype, tol, L, masked, group, chunk, monkeypatch):
    """Row panels (any width rounding, any chunking) = per-tile segment core."""
    monkeypatch.setattr(_core, "ROW_PANEL_GROUP", group)
    monkeypatch.setattr(_core, "ROW_PANEL_CHUNK_KEYS", chunk)
    q, k, v = _inputs((2, L), 16, seed=L + group, dtype=dtype)
    kw = dict(KW, key_mask=_mask(L, 1) if masked else None)
    blk, sel, _, _ = _prepare(q, k, v, block_size=16, blocks_per_row=3, mode="full",
                              backend="numpy", **kw)
    a, b = _core._fine_rows(blk, sel), _core._fine_core(blk, sel)
    np.testing.assert_array_equal(np.isfinite(a[2]), np.isfinite(b[2]))
    fin = np.isfinite(b[2])
    np.testing.assert_allclose(a[2][fin], b[2][fin], rtol=0, atol=tol)
    scale = np.max(np.abs(b[0])) + 1
    np.testing.assert_allclose(a[0], b[0], rtol=0, atol=tol * scale)
    np.testing.assert_allclose(a[1], b[1], rtol=0, atol=tol * scale)


@pytest.mark.parametrize("mode", ["full", "sparse"])
def test_numpy_backend_matches_reference(mode):
    """The numpy backend (row panels) equals the dense float64 reference, incl. empty
    rows of MRA-2-s below coverage (num_blocks < n_b) and masked tokens."""
    q, k, v = _inputs((3, 200), 8, seed=5)
    km = _mask(200, 2)
    for nb in (5, 13, 40):
        kw = dict(block_size=16, num_blocks=nb, mode=mode, key_mask=km)
        y = mra_attention(q, k, v, backend="numpy", **kw)
        ref = mra_dense_reference(q, k, v, block_size=16, num_blocks=nb, mode=mode,
                                  key_padding_mask=~km)
        np.testing.assert_allclose(y, ref.output, rtol=0, atol=1e-10)


def test_all_blocks_is_exact_softmax():
    q, k, v = _inputs((2, 96), 8, seed=9)
    y = mra_attention(q, k, v, block_size=16, num_blocks=36, backend="numpy")
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(8)
    p = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(y, (p / p.sum(-1, keepdims=True)) @ v, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
@pytest.mark.parametrize("parallel", [True, False])
def test_numba_panel_variant(dtype, tol, parallel, monkeypatch):
    """numba kernel, gathered-panel products (one gemm per product) = per-block BLAS."""
    pytest.importorskip("numba")
    from structattn.backends.numba import mra as nb_mra

    q, k, v = _inputs((4, 300), 32, seed=3, dtype=dtype)
    kw = dict(block_size=32, blocks_per_row=4, key_mask=_mask(300, 4))
    monkeypatch.setattr(nb_mra, "PARALLEL_MIN_WORK", 0 if parallel else 1 << 62)
    monkeypatch.setattr(nb_mra, "TILE_PRODUCTS", "blas")
    y_blas = mra_attention(q, k, v, backend="numba", **kw)
    monkeypatch.setattr(nb_mra, "TILE_PRODUCTS", "panel")
    y_pan = mra_attention(q, k, v, backend="numba", **kw)
    y_np = mra_attention(q, k, v, backend="numpy", **kw)
    np.testing.assert_allclose(y_pan, y_blas, rtol=0, atol=tol)
    np.testing.assert_allclose(y_pan, y_np, rtol=0, atol=tol)


def test_torch_rows_forward_and_gradients(monkeypatch):
    """torch with a host selection runs the row panels: forward and gradients equal the
    per-tile core; gradcheck in float64."""
    torch = pytest.importorskip("torch")
    q, k, v = _inputs((2, 80), 8, seed=11)
    km = _mask(80, 6)
    op = MRAAttention(block_size=16, blocks_per_row=2, backend="torch")
    host = MRAAttention(block_size=16, blocks_per_row=2, backend="numpy")
    sel = host.approximate(q, k, key_mask=km).selection
    tq, tk, tv = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    tm = torch.tensor(km)

    def run():
        return op(tq, tk, tv, selection=sel, key_mask=tm)

    calls = []
    real = _core._fine_rows
    monkeypatch.setattr(_core, "_fine_rows", lambda *a: calls.append(1) or real(*a))
    y_rows = run()
    assert calls, "host selection should use the row-panel core"
    g_rows = torch.autograd.grad(y_rows.square().sum(), (tq, tk, tv))
    monkeypatch.setattr(_core, "_fine", lambda blk, s: _core._fine_core(blk, s))
    y_tiles = run()
    g_tiles = torch.autograd.grad(y_tiles.square().sum(), (tq, tk, tv))
    torch.testing.assert_close(y_rows, y_tiles, rtol=0, atol=1e-10)
    for a, b in zip(g_rows, g_tiles, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    np.testing.assert_allclose(y_rows.detach().numpy(),
                               mra_attention(q, k, v, selection=sel, key_mask=km,
                                             block_size=16, backend="numpy"),
                               rtol=0, atol=1e-10)
    monkeypatch.undo()
    small = [torch.tensor(x[:1, :40], requires_grad=True) for x in (q, k, v)]
    sel2 = host.approximate(q[:1, :40], k[:1, :40]).selection
    assert torch.autograd.gradcheck(lambda a, b, c: op(a, b, c, selection=sel2), small)

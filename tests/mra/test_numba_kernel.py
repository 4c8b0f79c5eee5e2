"""The numba MRA kernel's own code paths: vectorised float32 exp, empty / fully padded
block rows, and the single-threaded-BLAS coarse products (docs/mra.rst, Benchmarks)."""

from __future__ import annotations

import numpy as np
import pytest

from structattn.mra import BlockSelection, mra_attention, mra_dense_reference
from structattn.mra._layout import _matmul

pytest.importorskip("numba")


def test_fast_exp_f32_accuracy():
    """exp(x - m) over [-100, 0]: <= 2 float32 ulps where representable, exactly 0 below -87."""
    from structattn.backends.numba.mra import _exp_shifted_f32

    x = np.linspace(-100.0, 0.0, 40 * 32, dtype=np.float32).reshape(40, 32)
    x[0, :] = -3.0e38  # the kernel's stand-in for -inf (padded keys)
    m = np.full(32, 0.25, dtype=np.float32)
    ST = (x + m).astype(np.float32)  # so that ST - m is x up to rounding
    arg = ST.astype(np.float64) - m.astype(np.float64)
    z = np.empty(32, dtype=np.float32)
    ibuf = np.empty(ST.shape, dtype=np.int32)
    _exp_shifted_f32(ST, m, ibuf, z)
    expect = np.exp(arg)
    live = arg >= -87.0
    rel = np.abs(ST[live] - expect[live]) / expect[live]
    assert rel.max() <= 2.5e-7
    assert np.all(ST[arg < -87.5] == 0.0)
    np.testing.assert_allclose(z, ST.astype(np.float64).sum(axis=0), rtol=1e-6)


@pytest.mark.parametrize("mode", ["full", "sparse"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_empty_and_fully_padded_block_rows(mode, dtype):
    """Block rows with no selected block, or only fully padded key blocks, match the
    dense reference (coarse only in "full", zero output in "sparse")."""
    rng = np.random.default_rng(3)
    L, b, n = 128, 32, 4
    q, k, v = (rng.standard_normal((2, L, 16)) for _ in range(3))
    kpm = np.zeros(L, dtype=bool)
    kpm[96:] = True  # block 3 fully padded
    kpm[[5, 40]] = True
    # rows: 0 -> [3] (only padded keys), 1 -> [] (none), 2 -> all four, 3 -> [1]
    indptr = np.tile(np.array([0, 1, 1, 5, 6]), (2, 1))
    indices = np.tile(np.array([3, 0, 1, 2, 3, 1]), (2, 1))
    sel = BlockSelection(indptr, indices, n)
    x = [a.astype(dtype) for a in (q, k, v)]
    ref = mra_dense_reference(*x, block_size=b, mode=mode, key_padding_mask=kpm,
                              selection=sel)
    y_nb = mra_attention(*x, block_size=b, mode=mode, key_padding_mask=kpm,
                         selection=sel, backend="numba")
    y_np = mra_attention(*x, block_size=b, mode=mode, key_padding_mask=kpm,
                         selection=sel, backend="numpy")
    if dtype == "float64":
        np.testing.assert_allclose(y_nb, ref.output, rtol=0, atol=1e-10)
    else:
        np.testing.assert_allclose(y_nb, ref.output, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y_nb, y_np, rtol=1e-5, atol=1e-6)
    assert np.all(y_nb[:, 96:] == 0.0)
    if mode == "sparse":  # nothing to attend to in block rows 0 and 1
        assert np.all(y_nb[:, :64] == 0.0)
    else:
        assert np.all(np.abs(y_nb[:, :64]).sum(axis=-1)[:, [0, 1, 2, 3, 6, 33]] > 0)


def test_serial_blas_matmul_matches():
    """The chunked per-head products equal ``a @ b`` (float64, round-off only)."""
    rng = np.random.default_rng(4)
    a = rng.standard_normal((3, 150, 64))
    b = rng.standard_normal((3, 64, 130))
    np.testing.assert_allclose(_matmul(a, b), a @ b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_matmul(a, np.swapaxes(a, -1, -2)), a @ np.swapaxes(a, -1, -2),
                               rtol=1e-12, atol=1e-12)
    small = rng.standard_normal((2, 8, 4)).astype(np.float32)
    assert _matmul(small, np.swapaxes(small, -1, -2)).dtype == np.float32


def test_long_rows_float32_match_numpy():
    """Rows holding many blocks (16 per row, uneven row lengths) in float32."""
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((2, 1024, 32)).astype(np.float32) for _ in range(3))
    kw = dict(block_size=32, blocks_per_row=16)
    y_nb = mra_attention(q, k, v, backend="numba", **kw)
    ref = mra_dense_reference(q, k, v, **kw)
    np.testing.assert_allclose(y_nb, ref.output, rtol=1e-4, atol=1e-5)

"""MRA-2 / MRA-2-s: references, invariants E1–E4, padding, priors, gradients, backends.

The test table of mra.md §3.2.
"""

from __future__ import annotations

import numpy as np
import pytest

from structattn import softmax_attention
from structattn.masks import Dense
from structattn.mra import (
    BlockSelection,
    MRAAttention,
    block_mean,
    mra_attention,
    mra_dense_reference,
    select_blocks,
)
from structattn.testing import relative_error

from ..conftest import convert, to_np

torch = pytest.importorskip("torch")

MODES = ("full", "sparse")


def _keep(padding):
    """The library's key mask (True = attend) from a padding mask (True = padding)."""
    return None if padding is None else ~padding


def walk_inputs(shape, d, *, seed, dv=None, step=0.35, temperature=1.0):
    """Random-walk (locally correlated) q, k and Gaussian v: structured attention inputs.

    I.i.d. Gaussian q, k have near-zero block means (mra.md §3.3); random walks give
    informative coarse scores and peaked, local attention.
    """
    rng = np.random.default_rng(seed)
    *batch, L = shape
    dv = d if dv is None else dv

    def walk():
        x = np.cumsum(rng.standard_normal((*batch, L, d)) * step, axis=-2)
        return x + 0.5 * rng.standard_normal((*batch, L, d))

    q, k = walk() * temperature, walk() * temperature
    k = 0.6 * k + 0.4 * q
    v = rng.standard_normal((*batch, L, dv))
    return q, k, v


def masked_softmax_dense(q, k, v, valid):
    """Exact softmax attention with a 1-D key padding (valid: (L,) bool), padded rows 0."""
    L = q.shape[-2]
    mask = np.broadcast_to(valid[None, :], (L, L))
    y = softmax_attention(q, k, v, mask=Dense(mask.astype(np.float64)))
    return np.where(valid[:, None], y, 0.0)


# ------------------------------------------------------------- block-mean identity
@pytest.mark.parametrize("padded", [False, True])
def test_block_mean_identity(backend, dtype, padded):
    q, k, _ = walk_inputs((2, 3, 100), 8, seed=1)
    kpm = None
    if padded:
        kpm = np.zeros(100, dtype=bool)
        kpm[[5, 40, 41, 97]] = True
    qq, kk = convert(backend, dtype, q, k)
    m = None if kpm is None else (torch.as_tensor(kpm) if backend == "torch" else kpm)
    ap = MRAAttention(block_size=16, blocks_per_row=2, backend=backend).approximate(
        qq, kk, key_mask=_keep(m))
    # independent: block means of the dense S over valid pairs (float64)
    ref = mra_dense_reference(q, k, q[..., :1], block_size=16, blocks_per_row=2,
                              key_padding_mask=kpm)
    rtol = 1e-12 if dtype == "float64" else 1e-5
    got = to_np(ap.block_scores)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, ref.block_scores, rtol=rtol, atol=rtol * 10)
    # and block_mean of the reference's own S reproduces its block scores
    S = mra_dense_reference(q, k, q[..., :1], block_size=4, blocks_per_row=1).scores
    np.testing.assert_allclose(block_mean(S, 4), (
        q.reshape(2, 3, 25, 4, 8).mean(-2) @ np.swapaxes(k.reshape(2, 3, 25, 4, 8).mean(-2),
                                                          -1, -2)) / np.sqrt(8), rtol=1e-12)


# ------------------------------------------------------ fast == dense reference
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", ["plain", "padded", "masked"])
def test_fast_matches_dense_reference(backend, dtype, mode, case):
    L, b = {"plain": (128, 16), "padded": (90, 16), "masked": (96, 8)}[case]
    q, k, v = walk_inputs((2, 2, L), 12, seed=2, dv=5)
    kpm = None
    if case == "masked":
        kpm = np.zeros((2, 1, L), dtype=bool)
        kpm[0, 0, -13:] = True  # a padded tail
        kpm[1, 0, 8:16] = True  # a fully padded block in the middle
        kpm[1, 0, 30] = True
    ref = mra_dense_reference(q, k, v, block_size=b, blocks_per_row=2, mode=mode,
                              key_padding_mask=kpm)
    qq, kk, vv = convert(backend, dtype, q, k, v)
    m = None if kpm is None else (torch.as_tensor(kpm) if backend == "torch" else kpm)
    y = mra_attention(qq, kk, vv, block_size=b, blocks_per_row=2, mode=mode,
                      key_mask=_keep(m), selection=ref.selection, backend=backend)
    assert type(y) is type(qq) and y.dtype == qq.dtype and tuple(y.shape) == (2, 2, L, 5)
    if dtype == "float64":
        np.testing.assert_allclose(to_np(y), ref.output, rtol=0, atol=1e-10)
    else:
        np.testing.assert_allclose(to_np(y), ref.output, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_selection_of_fast_path_equals_reference_selection(backend, mode):
    q, k, v = walk_inputs((3, 128), 8, seed=3)
    qq, kk = convert(backend, "float64", q, k)
    ap = MRAAttention(block_size=16, blocks_per_row=3, mode=mode,
                      backend=backend).approximate(qq, kk)
    ref = mra_dense_reference(q, k, v, block_size=16, blocks_per_row=3, mode=mode)
    np.testing.assert_array_equal(ap.selected_mask, ref.selected)
    np.testing.assert_allclose(to_np(ap.matrix()), ref.matrix, rtol=0, atol=1e-12)


# ------------------------------------------------------------- full budget (E1)
@pytest.mark.parametrize("mode", MODES)
def test_full_budget_is_exact_softmax(backend, dtype, mode):
    q, k, v = walk_inputs((2, 2, 96), 8, seed=4)
    qq, kk, vv = convert(backend, dtype, q, k, v)
    n = 96 // 16
    y = mra_attention(qq, kk, vv, block_size=16, num_blocks=n * n, mode=mode,
                      backend=backend)
    y2 = mra_attention(qq, kk, vv, block_size=16, blocks_per_row=n, mode=mode,
                       backend=backend)
    exact = softmax_attention(q, k, v)
    tol = 1e-12 if dtype == "float64" else 1e-5
    assert relative_error(to_np(y), exact) <= tol
    assert relative_error(to_np(y2), exact) <= tol


# ------------------------------------------------------------- shift invariance
@pytest.mark.parametrize("mode", MODES)
def test_shift_invariance(backend, mode):
    """Adding a constant to every logit of a block row (here up to ~600) changes nothing."""
    q, k, v = walk_inputs((2, 64), 6, seed=5)
    rng = np.random.default_rng(0)
    c = np.repeat(rng.uniform(-300, 600, (2, 8)), 8, axis=-1)  # constant per block row
    scale = 0.5
    q2 = np.concatenate([q, c[..., None] / scale], axis=-1)
    k2 = np.concatenate([k, np.ones_like(k[..., :1])], axis=-1)
    q1 = np.concatenate([q, np.zeros_like(q[..., :1])], axis=-1)
    args1 = convert(backend, "float64", q1, k2, v)
    args2 = convert(backend, "float64", q2, k2, v)
    kw = dict(block_size=8, blocks_per_row=2, mode=mode, scale=scale, backend=backend)
    y1, y2 = mra_attention(*args1, **kw), mra_attention(*args2, **kw)
    assert np.all(np.isfinite(to_np(y2)))
    assert relative_error(to_np(y2), to_np(y1)) <= 1e-12
    # the stabiliser: the reference's global shift vs the fast path's per-row shifts
    ref = mra_dense_reference(q1, k2, v, block_size=8, blocks_per_row=2, mode=mode,
                              scale=scale)
    assert relative_error(to_np(y1), ref.output) <= 1e-12


# ----------------------------------------------------------------- nestedness (E2)
@pytest.mark.parametrize("mode", MODES)
def test_nestedness_of_kernel_error(mode):
    q, k, v = walk_inputs((2, 128), 8, seed=6)
    n = 8
    prev_err, prev_mask = None, None
    for kk in range(n, n * n + 1, n):
        ref = mra_dense_reference(q, k, v, block_size=16, num_blocks=kk, mode=mode)
        err = np.linalg.norm(ref.exact_kernel - ref.kernel, axis=(-2, -1))
        if prev_err is not None:
            assert np.all(err <= prev_err + 1e-12)
            assert np.all(ref.selected[prev_mask])  # selections nested
        prev_err, prev_mask = err, ref.selected
    assert np.all(prev_err <= 1e-12)  # full budget: Ê = E


@pytest.mark.parametrize("mode", MODES)
def test_nestedness_fast_path(backend, mode):
    """E2 on each backend: nested selections, kernel error non-increasing in k."""
    q, k, v = walk_inputs((2, 96), 8, seed=61)
    qq, kk = convert(backend, "float64", q, k)
    n, b = 6, 16
    exact = mra_dense_reference(q, k, v, block_size=b, num_blocks=n * n)
    c = exact.shift[:, None, None]
    prev_err, prev_mask = None, None
    for budget in range(n, n * n + 1, n):
        ap = MRAAttention(block_size=b, num_blocks=budget, mode=mode,
                          backend=backend).approximate(qq, kk)
        s = np.repeat(to_np(ap.shift), b, axis=-1)[..., None]  # per block-row shift
        E_hat = to_np(ap.to_dense()) * np.exp(s - c)  # to the reference's global shift
        err = np.linalg.norm(exact.exact_kernel - E_hat, axis=(-2, -1))
        if prev_err is not None:
            assert np.all(ap.selected_mask[prev_mask])
            assert np.all(err <= prev_err + 1e-12)
        prev_err, prev_mask = err, ap.selected_mask
    assert np.all(prev_err <= 1e-12)


def test_selection_nested_for_every_budget_with_ties_and_priors():
    rng = np.random.default_rng(7)
    scores = np.round(rng.standard_normal((3, 10, 10)), 1)  # many ties
    prev = None
    for kk in range(1, 101):
        m = select_blocks(scores, kk, prior_first=1, prior_diag=3).mask
        assert m.reshape(3, -1).sum(-1).tolist() == [kk] * 3
        if prev is not None:
            assert np.all(m[prev])
        prev = m


def test_output_error_decreases_with_budget():
    """Median over 20 seeds of the relative output error decreases strictly with k."""
    n = 8
    budgets = [n, 2 * n, 4 * n, 6 * n]
    errs = np.empty((20, len(budgets)))
    for seed in range(20):
        q, k, v = walk_inputs((128,), 8, seed=100 + seed)
        for j, kk in enumerate(budgets):
            ref = mra_dense_reference(q, k, v, block_size=16, num_blocks=kk)
            errs[seed, j] = relative_error(ref.output, ref.exact_output)
    med = np.median(errs, axis=0)
    assert np.all(np.diff(med) < 0), med


# ---------------------------------------------------------------------- Jensen sign
def test_jensen_sign():
    q, k, v = walk_inputs((3, 128), 8, seed=8)
    ref = mra_dense_reference(q, k, v, block_size=16, blocks_per_row=2)
    c = ref.shift[..., None, None]
    assert np.all(np.exp(ref.block_scores - c) <= block_mean(ref.exact_kernel, 16))


# ---------------------------------------------------------------------- coverage (E4)
@pytest.mark.parametrize("case", ["random", "ties", "padded", "priors"])
def test_coverage(case):
    rng = np.random.default_rng(9)
    n = 12
    scores = rng.standard_normal((4, n, n))
    valid = None
    kw = {}
    if case == "ties":
        scores = np.zeros((4, n, n))
        scores[:, :, 0] = scores[:, :, 1] = 1.0  # two-way ties in every row
        scores[:, 0, :] = 5.0  # one row with all entries tied at the top
    if case == "padded":
        valid = np.ones((4, n), dtype=bool)
        valid[:, -3:] = False
    if case == "priors":
        kw = {"prior_first": 2, "prior_diag": 5}
    n_valid = n if valid is None else int(valid[0].sum())
    for kk in (n_valid, n_valid + 1, 2 * n_valid):
        m = select_blocks(scores, kk, block_valid=valid, **kw).mask
        rows = m.any(axis=-1)
        if valid is not None:
            assert np.all(rows[valid])
            assert not (np.any(m[:, -3:, :]) or np.any(m[:, :, -3:]))  # padded: last tier
        else:
            assert np.all(rows)


def test_coverage_sparse_mode_has_no_empty_rows(backend):
    q, k, v = walk_inputs((2, 80), 8, seed=10)
    qq, kk, vv = convert(backend, "float64", q, k, v)
    y = to_np(mra_attention(qq, kk, vv, block_size=16, blocks_per_row=1, mode="sparse",
                            backend=backend))
    assert np.all(np.abs(y).sum(-1) > 0)  # every row attends to something


# ------------------------------------------------------------------------- padding
@pytest.mark.parametrize("mode", MODES)
def test_padding(backend, mode):
    L = 75  # not a multiple of the block size 16: padded internally to 80
    q, k, v = walk_inputs((2, L), 8, seed=11)
    valid = np.ones(L, dtype=bool)
    valid[[3, 20, 21, 22, 70, 74]] = False
    kpm = ~valid
    qq, kk, vv = convert(backend, "float64", q, k, v)
    m = torch.as_tensor(kpm) if backend == "torch" else kpm
    kw = dict(block_size=16, blocks_per_row=2, mode=mode, key_mask=_keep(m), backend=backend)
    y = to_np(mra_attention(qq, kk, vv, **kw))
    assert y.shape == (2, L, 8)
    assert np.all(y[:, ~valid] == 0.0)  # padded rows output zero
    # padded keys are weightless: changing their k and v changes nothing
    rng = np.random.default_rng(1)
    k2, v2 = k.copy(), v.copy()
    k2[:, ~valid] = rng.standard_normal(k2[:, ~valid].shape) * 50
    v2[:, ~valid] = 1e6
    qq2, kk2, vv2 = convert(backend, "float64", q, k2, v2)
    y2 = to_np(mra_attention(qq2, kk2, vv2, **kw))
    assert relative_error(y2, y) <= 1e-13
    ap = MRAAttention(block_size=16, blocks_per_row=2, mode=mode,
                      backend=backend).approximate(qq, kk, key_mask=_keep(m))
    A = to_np(ap.matrix())
    assert np.all(A[:, :, ~valid] == 0.0) and np.all(A[:, ~valid] == 0.0)
    np.testing.assert_allclose(A[:, valid].sum(-1), 1.0, rtol=1e-12)
    # full budget: equals the dense masked softmax
    n = 5
    yf = to_np(mra_attention(qq, kk, vv, **{**kw, "blocks_per_row": n}))
    assert relative_error(yf, masked_softmax_dense(q, k, v, valid)) <= 1e-12


def test_unpadded_length_needs_no_mask_and_matches_padded_call():
    """A length that is not a multiple of b gives the same result as an explicit pad."""
    q, k, v = walk_inputs((2, 70), 8, seed=12)
    y = mra_attention(q, k, v, block_size=16, blocks_per_row=2, backend="numpy")
    pad = [(0, 0), (0, 10), (0, 0)]
    qp, kp, vp = (np.pad(x, pad) for x in (q, k, v))
    kpm = np.zeros(80, dtype=bool)
    kpm[70:] = True
    yp = mra_attention(qp, kp, vp, block_size=16, blocks_per_row=2, key_mask=~kpm,
                       backend="numpy")
    assert relative_error(yp[:, :70], y) <= 1e-14 and np.all(yp[:, 70:] == 0)


# -------------------------------------------------------------------------- priors
def test_priors_selected_when_budget_allows():
    q, k, _ = walk_inputs((2, 256), 8, seed=13)
    n, f, w = 16, 2, 5
    I, J = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    prior = (I < f) | (J < f) | (np.abs(I - J) <= w // 2)
    ap0 = MRAAttention(block_size=16, num_blocks=n).approximate(q, k)
    rowbest = ap0.selected_mask  # k = n_b: exactly the coverage blocks
    need = int((prior | rowbest).sum(axis=(-2, -1)).max())
    for mode in MODES:
        op = MRAAttention(block_size=16, num_blocks=need, mode=mode, prior_first=f,
                          prior_diag=w)
        M = op.approximate(q, k).selected_mask
        assert np.all(M[:, prior]), "every prior block is refined"
        # without priors the same budget misses some of them (the priors matter)
        M0 = MRAAttention(block_size=16, num_blocks=need, mode=mode).approximate(q, k)
        assert not np.all(M0.selected_mask[:, prior])
    # below that budget, prior blocks still come before every non-prior block
    M = MRAAttention(block_size=16, num_blocks=need - 5, prior_first=f,
                     prior_diag=w).approximate(q, k).selected_mask
    extra = M & ~prior & ~rowbest
    assert not np.any(extra)


# ----------------------------------------------------------------------- gradients
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_fixed_selection(mode):
    q, k, v = walk_inputs((1, 14), 4, seed=14, dv=3)
    kpm = np.zeros(14, dtype=bool)
    kpm[[2, 13]] = True
    qt, kt, vt = (torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (q, k, v))
    m = torch.as_tensor(kpm)
    sel = MRAAttention(block_size=4, blocks_per_row=2, mode=mode).approximate(
        qt, kt, key_mask=_keep(m)).selection

    def f(a, b_, c):
        return mra_attention(a, b_, c, block_size=4, mode=mode, key_mask=_keep(m),
                             selection=sel)

    assert torch.autograd.gradcheck(f, (qt, kt, vt))
    # the gradient is that of the dense reference with the same selection
    y = f(qt, kt, vt)
    (y**2).sum().backward()
    assert qt.grad is not None and torch.all(torch.isfinite(qt.grad))


def test_gradient_flows_through_coarse_part_only_in_full_mode():
    q, k, v = walk_inputs((32,), 4, seed=15)
    grads = {}
    for mode in MODES:
        vt = torch.tensor(v, requires_grad=True)
        y = mra_attention(torch.tensor(q), torch.tensor(k), vt, block_size=8,
                          blocks_per_row=1, mode=mode)
        y[:8].sum().backward()  # rows of block row 0
        grads[mode] = vt.grad.abs().reshape(4, 8, 4).sum(axis=(1, 2))
    # block row 0 refines one block column; the coarse part reaches the other three
    assert int((grads["sparse"] > 0).sum()) == 1
    assert int((grads["full"] > 0).sum()) == 4


# ----------------------------------------------------------------- cross-backend
@pytest.mark.parametrize("mode", MODES)
def test_backend_parity(mode):
    q, k, v = walk_inputs((2, 3, 200), 16, seed=16)
    kpm = np.zeros((2, 1, 200), dtype=bool)
    kpm[1, 0, 150:] = True
    outs, sels = {}, {}
    sel = None
    for be in ("numpy", "numba", "torch"):
        args = convert(be, "float32", q, k, v)
        m = torch.as_tensor(kpm) if be == "torch" else kpm
        op = MRAAttention(block_size=32, blocks_per_row=3, mode=mode, backend=be)
        sels[be] = op.approximate(*args[:2], key_mask=_keep(m)).selected_mask
        sel = sel or op.approximate(*args[:2], key_mask=_keep(m)).selection
        outs[be] = to_np(op(*args, key_mask=_keep(m), selection=sel))
    for be in ("numba", "torch"):
        assert relative_error(outs[be], outs["numpy"]) <= 1e-5
    # float64: every backend selects the same blocks
    sel64 = {}
    for be in ("numpy", "numba", "torch"):
        args = convert(be, "float64", q, k, v)
        m = torch.as_tensor(kpm) if be == "torch" else kpm
        sel64[be] = MRAAttention(block_size=32, blocks_per_row=3, mode=mode,
                                 backend=be).approximate(*args[:2],
                                                         key_mask=_keep(m)).selected_mask
    assert np.array_equal(sel64["numpy"], sel64["numba"])
    assert np.array_equal(sel64["numpy"], sel64["torch"])


@pytest.mark.parametrize("products", ["blas", "loops"])
def test_numba_kernel_variants_match(products, monkeypatch):
    """Parallel and serial drivers, BLAS and BLAS-free tile products: same result."""
    from structattn.backends.numba import mra as nb_mra

    q, k, v = walk_inputs((4, 300), 32, seed=17)
    q, k, v = (x.astype(np.float32) for x in (q, k, v))
    kpm = np.zeros(300, dtype=bool)
    kpm[[0, 31, 32, 299]] = True
    kw = dict(block_size=32, blocks_per_row=4, key_mask=~kpm)
    y_np = mra_attention(q, k, v, backend="numpy", **kw)
    monkeypatch.setattr(nb_mra, "TILE_PRODUCTS", products)
    monkeypatch.setattr(nb_mra, "PARALLEL_MIN_WORK", 0)
    y_par = mra_attention(q, k, v, backend="numba", **kw)
    monkeypatch.setattr(nb_mra, "PARALLEL_MIN_WORK", 1 << 62)  # force the serial driver
    y_ser = mra_attention(q, k, v, backend="numba", **kw)
    assert relative_error(y_par, y_np) <= 1e-5 and relative_error(y_ser, y_np) <= 1e-5
    y64 = mra_attention(*(x.astype(np.float64) for x in (q, k, v)), backend="numba", **kw)
    ref = mra_dense_reference(q, k, v, block_size=32, blocks_per_row=4,
                              key_padding_mask=kpm)
    np.testing.assert_allclose(y64, ref.output, rtol=0, atol=1e-10)


# ------------------------------------------------------------ approximation object
def test_approximation_structure(backend):
    q, k, v = walk_inputs((2, 100), 8, seed=18)
    kpm = np.zeros(100, dtype=bool)
    kpm[95:] = True
    qq, kk, vv = convert(backend, "float64", q, k, v)
    m = torch.as_tensor(kpm) if backend == "torch" else kpm
    op = MRAAttention(block_size=16, blocks_per_row=2, backend=backend)
    ap = op.approximate(qq, kk, key_mask=_keep(m))
    indptr, indices = ap.selected_blocks
    n = 7
    assert indptr.shape == (2, n + 1) and indices.shape == (2, 2 * n)
    assert np.all(np.diff(indptr, axis=-1) >= 0) and np.all(indptr[:, -1] == 2 * n)
    U, C, E = to_np(ap.U), to_np(ap.C), to_np(ap.to_dense())
    assert U.shape == (2, 100, n) and C.shape == (2, n, n) and E.shape == (2, 100, 100)
    M = np.repeat(np.repeat(ap.selected_mask, 16, -2), 16, -1)[:, :100, :100]
    # Ê = U C Uᵀ + B, with B supported on the selected blocks
    np.testing.assert_allclose(np.where(M, 0.0, E), U @ C @ np.swapaxes(U, -1, -2),
                               rtol=1e-13, atol=1e-300)
    assert np.all(E <= 1.0 + 1e-12)  # referenced to the row block's maximum
    A = to_np(ap.matrix())
    ref = mra_dense_reference(q, k, v, block_size=16, blocks_per_row=2, key_padding_mask=kpm,
                              selection=ap.selection)
    np.testing.assert_allclose(A, ref.matrix, rtol=0, atol=1e-12)
    np.testing.assert_allclose(to_np(ap(vv)), to_np(op(qq, kk, vv, key_mask=_keep(m))),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(to_np(op.matrix(qq, kk, key_mask=_keep(m))), A)
    assert isinstance(ap.selection, BlockSelection)


# ------------------------------------------------------------------- bad input
def _qkv(L=64, d=8):
    return walk_inputs((L,), d, seed=0)


def test_bad_block_size_not_power_of_two():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"block_size must be a positive power of two.*24"):
        mra_attention(q, k, v, block_size=24)
    with pytest.raises(ValueError, match="power of two"):
        MRAAttention(block_size=0)
    with pytest.raises(TypeError, match="block_size must be an int"):
        mra_attention(q, k, v, block_size=16.0)


def test_bad_budget_below_one():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"blocks_per_row must be between 1 and .* got 0"):
        mra_attention(q, k, v, block_size=16, blocks_per_row=0)
    with pytest.raises(ValueError, match=r"num_blocks must be between 1 and .* got 0"):
        mra_attention(q, k, v, block_size=16, num_blocks=0)


def test_bad_budget_above_number_of_blocks():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"n_b = 4 \(L=64, block_size=16.*got 5"):
        mra_attention(q, k, v, block_size=16, blocks_per_row=5)
    with pytest.raises(ValueError, match=r"n_b\*\*2 = 16.*got 17"):
        mra_attention(q, k, v, block_size=16, num_blocks=17)


def test_bad_mismatched_padding_mask():
    q, k, v = walk_inputs((2, 64), 8, seed=0)
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape .*\(2, 64\).*"
                                         r"got \(2, 63\)"):
        mra_attention(q, k, v, block_size=16, key_padding_mask=np.zeros((2, 63), dtype=bool),
                      blocks_per_row=2)
    with pytest.raises(TypeError, match="key_padding_mask must have dtype bool"):
        mra_attention(q, k, v, block_size=16, key_padding_mask=np.zeros((2, 64)),
                      blocks_per_row=2)
    with pytest.raises(TypeError, match=r"key_padding_mask must be a torch.Tensor"):
        qt, kt, vt = convert("torch", "float64", q, k, v)
        mra_attention(qt, kt, vt, block_size=16, blocks_per_row=2,
                      key_padding_mask=np.zeros((2, 64), dtype=bool))


def test_bad_lq_not_equal_lk():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"self-attention.*L_q == L_k.*\(32, 8\)"):
        mra_attention(q[:32], k, v, block_size=16, blocks_per_row=2)


def test_bad_other_arguments():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="mode must be one of"):
        mra_attention(q, k, v, block_size=16, blocks_per_row=2, mode="dense")
    with pytest.raises(ValueError, match="prior_first must be an integer >= 0"):
        mra_attention(q, k, v, block_size=16, blocks_per_row=2, prior_first=-1)
    sel = MRAAttention(block_size=8, blocks_per_row=2).approximate(q, k).selection
    with pytest.raises(ValueError, match="selection was made for batch"):
        mra_attention(q, k, v, block_size=16, selection=sel)
    with pytest.raises(ValueError, match="NaN or Inf"):
        mra_attention(np.full_like(q, np.nan), k, v, block_size=16, blocks_per_row=2)
    with pytest.raises(ValueError, match="backend must be one of"):
        MRAAttention(backend="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", MODES)
def test_cuda_matches_cpu(mode):
    q, k, v = walk_inputs((2, 150), 16, seed=19)
    kpm = np.zeros(150, dtype=bool)
    kpm[140:] = True
    ref = mra_dense_reference(q, k, v, block_size=32, blocks_per_row=2, mode=mode,
                              key_padding_mask=kpm)
    args = (torch.as_tensor(x, device="cuda") for x in (q, k, v))
    y = mra_attention(*args, block_size=32, blocks_per_row=2, mode=mode,
                      key_padding_mask=torch.as_tensor(kpm, device="cuda"),
                      selection=ref.selection)
    assert y.device.type == "cuda" and y.dtype == torch.float64
    np.testing.assert_allclose(to_np(y), ref.output, rtol=0, atol=1e-10)


def test_bad_overflowing_scores_raise_instead_of_zero_rows():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 64, 8)).astype(np.float32) for _ in range(3))
    with pytest.raises(ValueError, match="may overflow float32"):
        mra_attention(q * 1e19, k * 1e19, v, block_size=16, blocks_per_row=2)
    y = mra_attention(q.astype(np.float64) * 1e19, k.astype(np.float64) * 1e19,
                      v.astype(np.float64), block_size=16, blocks_per_row=2)
    assert np.all(np.isfinite(y))

"""GridRPE and separable_grid: kit, loop references, attention, learnability, errors."""

from __future__ import annotations

import doctest
import itertools
import math

import numpy as np
import pytest

import structattn.masks.grid as grid_module
from structattn import PositiveRandomFeatures, kernel_attention, softmax_attention
from structattn.masks import GridRPE, Kronecker, Toeplitz, separable_grid
from structattn.testing import MaskTestCase, assert_close, relative_error

from ..conftest import convert, to_np

RNG = np.random.default_rng(47)


def loop_grid(c, shape, num_special=0, special_value=1.0, key_mask=None):
    """Independent constructor: explicit positions, offsets and index arithmetic."""
    d = len(shape)
    batch = c.shape[: c.ndim - d]
    positions = list(itertools.product(*(range(n) for n in shape)))  # row-major
    S = num_special
    L = S + len(positions)
    if key_mask is None:
        real = np.ones((*batch, L))
    else:
        pad_batch = np.shape(key_mask)[: np.ndim(key_mask) - d]
        flags = np.reshape(key_mask, (*pad_batch, -1))
        real = np.concatenate([np.ones((*pad_batch, S)), flags], axis=-1).astype(float)
    sv = np.asarray(special_value, dtype=float)
    full_batch = np.broadcast_shapes(batch, real.shape[:-1], sv.shape)
    M = np.zeros((*full_batch, L, L))
    for i in range(L):
        for j in range(L):
            if i < S or j < S:
                M[..., i, j] = sv
            else:
                p, q = positions[i - S], positions[j - S]
                offset = tuple(p[t] - q[t] + shape[t] - 1 for t in range(d))
                M[..., i, j] = c[(..., *offset)]
    return M * real[..., :, None] * real[..., None, :]


def normalized(A, v):
    """Row-normalized ``A v``; rows with an empty mask (padded queries) give zeros."""
    den = A.sum(-1, keepdims=True)
    return np.where(den > 0, A @ v / np.where(den > 0, den, 1.0), 0.0)


def offsets_table(shape):
    return np.meshgrid(*(np.arange(-(n - 1), n) for n in shape), indexing="ij")


C57 = RNG.uniform(0.1, 2.0, (9, 13))  # asymmetric: f(Δ) != f(-Δ)
C345 = RNG.uniform(0.1, 2.0, (5, 7, 9))
B57 = RNG.uniform(-2.0, 2.0, (3, 9, 13))  # per-head log-coefficients
PAD57 = RNG.uniform(size=(5, 7)) > 0.3
PAD_BATCH = RNG.uniform(size=(2, 1, 4, 3)) > 0.25  # per example, broadcast over heads
C43 = RNG.uniform(0.1, 2.0, (3, 7, 5))


class _GridCase(MaskTestCase):
    shape = (5, 7)
    coeffs = C57
    method = "auto"
    kwargs: dict = {}  # noqa: RUF012

    def make_operator(self):
        return GridRPE(self.shape, self.coeffs, method=self.method, **self.kwargs)

    def dense_reference(self):
        return loop_grid(self.coeffs, self.shape, **self.kwargs)


class TestGrid57FFT(_GridCase):
    method = "fft"


class TestGrid57Dense(_GridCase):
    method = "dense"


class TestGrid345FFT(_GridCase):
    shape = (3, 4, 5)
    coeffs = C345
    method = "fft"


class TestGridBatchedLog(MaskTestCase):
    """One log-parameterized mask per head, coefficients of shape (3, 9, 13)."""

    def make_operator(self):
        return GridRPE.from_log(B57, (5, 7), method="fft")

    def dense_reference(self):
        return np.exp(loop_grid(B57, (5, 7)))


class TestGridCLS(_GridCase):
    method = "fft"
    kwargs = {"num_special": 1, "special_value": 0.7}  # noqa: RUF012


class TestGridPaddingTwoSpecial(_GridCase):
    method = "fft"
    kwargs = {"num_special": 2, "special_value": 1.3, "key_mask": PAD57}  # noqa: RUF012


class TestGridPaddingDense(_GridCase):
    method = "dense"
    kwargs = {"key_mask": PAD57}  # noqa: RUF012


class TestGridBatchedPaddingAndSpecial(_GridCase):
    """Per-head coefficients (3,), per-example padding (2, 1) and per-head CLS weights."""

    shape = (4, 3)
    coeffs = C43
    method = "fft"
    kwargs = {"num_special": 1, "key_mask": PAD_BATCH,  # noqa: RUF012
              "special_value": np.array([0.5, 1.0, 2.0])}


class TestSeparable(MaskTestCase):
    factors = (RNG.uniform(0.2, 1.5, 7), RNG.uniform(0.2, 1.5, 9), RNG.uniform(0.2, 1.5, 5))

    def make_operator(self):
        return separable_grid((4, 5, 3), self.factors)

    def dense_reference(self):
        c = np.einsum("a,b,c->abc", *self.factors)
        return loop_grid(c, (4, 5, 3))


def test_docstring_examples():
    result = doctest.testmod(grid_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 1 and result.failed == 0


def test_separable_equals_full_fft_and_dense(backend):
    shape = (6, 8)
    f1, f2 = RNG.uniform(0.2, 1.5, 11), RNG.uniform(0.2, 1.5, 15)
    sep = separable_grid(shape, [f1, f2], method="fft")
    assert isinstance(sep, Kronecker) and isinstance(sep.left, Toeplitz)
    full = np.outer(f1, f2)
    X = RNG.standard_normal((2, 48, 5))
    (Xb,) = convert(backend, "float64", X)
    dense = loop_grid(full, shape)
    y_sep = sep.matmat(Xb, backend=backend)
    y_fft = GridRPE(shape, full, method="fft").matmat(Xb, backend=backend)
    assert_close(y_sep, dense @ X, what="separable")
    assert_close(y_fft, dense @ X, what="grid FFT")
    assert relative_error(y_sep, y_fft) < 1e-13
    # log factors: exp(b1 + b2) is separable too
    b1, b2 = np.log(f1), np.log(f2)
    assert_close(separable_grid(shape, [b1, b2], log=True).to_dense(), dense, what="log")
    assert separable_grid((4,), [f1[2:-2]]).shape == (4, 4)


def test_function_constructor_matches_coefficients():
    shape = (3, 4, 5)
    c = GridRPE(shape, function=lambda a, b, c: np.exp(-0.3 * np.abs(a) - 0.1 * b + 0.05 * c))
    grids = offsets_table(shape)
    expected = np.exp(-0.3 * np.abs(grids[0]) - 0.1 * grids[1] + 0.05 * grids[2])
    np.testing.assert_allclose(c.coeffs, expected, rtol=1e-15)
    assert_close(c.to_dense(), loop_grid(expected, shape), what="function")
    # a constant function broadcasts to the offset table
    assert GridRPE((2, 3), function=lambda a, b: 2.0).coeffs.shape == (3, 5)


def test_transpose_reflects_coefficients():
    m = GridRPE((5, 7), C57, num_special=1, special_value=0.4, key_mask=PAD57)
    t = m.T
    assert isinstance(t, GridRPE)
    np.testing.assert_array_equal(t.coeffs, C57[::-1, ::-1])
    np.testing.assert_allclose(t.to_dense(), m.to_dense().T, rtol=1e-15)
    assert not m.lower_triangular and GridRPE((1, 1), np.ones((1, 1))).lower_triangular


def test_normalized_log_mask_is_a_positive_multiple():
    for sv in (1.0, 1e-3, 50.0):
        m = GridRPE.from_log(B57 + 20.0, (5, 7), num_special=1, special_value=sv)
        n = m._normalized()
        dense, ndense = m.to_dense(), n.to_dense()
        ratio = dense / ndense
        np.testing.assert_allclose(ratio, ratio[..., :1, :1] * np.ones_like(ratio), rtol=1e-12)
        assert ndense.max() <= 1.0 + 1e-12
        assert np.allclose(ndense.max(axis=(-1, -2)), 1.0)


@pytest.mark.parametrize("grid", [(5, 7), (3, 4, 5)])
def test_masked_attention_matches_dense_reference(backend, dtype, grid):
    Lg = math.prod(grid)
    L, d = Lg + 1, 8
    b = RNG.uniform(-1.0, 1.0, (2, *(2 * n - 1 for n in grid)))  # per head
    pad = RNG.uniform(size=grid) > 0.2
    mask = GridRPE.from_log(b, grid, num_special=1, special_value=0.8, key_mask=pad)
    M = loop_grid(np.exp(b), grid, num_special=1, special_value=0.8, key_mask=pad)
    q, k, v = RNG.standard_normal((3, 2, L, d))
    phi = PositiveRandomFeatures(d, 16, seed=0)
    A = (phi.queries(q) @ np.swapaxes(phi.keys(k), -1, -2)) * M
    out = kernel_attention(*convert(backend, dtype, q, k, v), phi, mask=mask, backend=backend)
    assert_close(out, normalized(A, v), what=f"kernel grid={grid}")
    S = np.exp(q @ np.swapaxes(k, -1, -2) / np.sqrt(d)) * M
    sm = softmax_attention(*convert(backend, dtype, q, k, v), mask=mask, backend=backend)
    assert_close(sm, normalized(S, v), what=f"softmax grid={grid}")
    assert np.all(to_np(out)[..., 1:, :][..., ~pad.reshape(-1), :] == 0)  # padded queries


def test_fft_against_dense_accuracy():
    """FFT vs dense path: normwise error in float64 and float32 (coefficients in e^±2)."""
    shape = (24, 32)
    c = np.exp(RNG.uniform(-2, 2, (47, 63)))
    X = RNG.standard_normal((shape[0] * shape[1], 16))
    dense = GridRPE(shape, c, method="dense").matmat(X)
    for dtype, tol in (("float64", 1e-13), ("float32", 1e-6)):
        y = GridRPE(shape, c, method="fft").matmat(X.astype(dtype))
        assert relative_error(y, dense) < tol


def test_learnable_coefficients_gradcheck():
    torch = pytest.importorskip("torch")
    shape = (3, 4)
    b = torch.tensor(RNG.uniform(-1, 1, (5, 7)), requires_grad=True)
    sv = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    q, k, v = (torch.tensor(RNG.standard_normal((13, 4))) for _ in range(3))
    phi = PositiveRandomFeatures(4, 8, seed=0)
    pad = torch.tensor(RNG.uniform(size=shape) > 0.2)

    def attn(bb, s):
        return kernel_attention(q, k, v, phi, mask=GridRPE.from_log(
            bb, shape, num_special=1, special_value=s, key_mask=pad, method="fft"))

    assert torch.autograd.gradcheck(attn, (b, sv), fast_mode=True)
    c = torch.tensor(RNG.uniform(0.5, 1, (2, 5, 7)), requires_grad=True)
    X = torch.tensor(RNG.standard_normal((12, 3)))
    assert torch.autograd.gradcheck(lambda cc: GridRPE(shape, cc, method="fft").matmat(X), (c,),
                                    fast_mode=True)
    assert torch.autograd.gradcheck(lambda cc: GridRPE(shape, cc, method="fft").rmatmat(X), (c,),
                                    fast_mode=True)


def test_cost_model_and_describe():
    small = GridRPE((3, 3), np.ones((5, 5)))
    big = GridRPE((64, 64), np.ones((127, 127)))
    assert small._choose(64) == "dense" and big._choose(64) == "fft"
    assert big.cost(64) < 2.0 * 4096**2 * 64
    sep = separable_grid((64, 64), [np.ones(127), np.ones(127)])
    assert sep.cost(64) < big.cost(64)  # no 2^d padding blow-up
    text = GridRPE((5, 7), C57, num_special=1, key_mask=PAD57).describe()
    assert "2-level block Toeplitz on a 5x7 grid" in text and "special" in text
    assert "padding" in text
    assert GridRPE.from_log(B57, (5, 7)).nonnegative
    assert not GridRPE((5, 7), C57, num_special=1, special_value=-1.0).nonnegative


def test_bad_coefficient_shape():
    with pytest.raises(ValueError, match=r"coeffs must have trailing shape .* \(9, 13\)"):
        GridRPE((5, 7), np.ones((9, 12)))


def test_grid_shape_must_match_attention_length():
    mask = GridRPE((5, 7), C57)
    x = np.ones((36, 2))
    with pytest.raises(ValueError, match="mask has shape"):
        kernel_attention(x, x, x, PositiveRandomFeatures(2, 2, seed=0), mask=mask)


def test_non_finite_coefficients():
    c = C57.copy()
    c[3, 4] = np.nan
    with pytest.raises(ValueError, match="coeffs contains NaN or Inf"):
        GridRPE((5, 7), c)


def test_key_mask_shape_mismatch():
    with pytest.raises(ValueError, match=r"key_mask must have shape \(\.\.\., 5, 7\)"):
        GridRPE((5, 7), C57, key_mask=np.ones((7, 5), dtype=bool))
    with pytest.warns(DeprecationWarning), pytest.raises(  # the old keyword, named as given
            ValueError, match=r"padding must have shape \(\.\.\., 5, 7\)"):
        GridRPE((5, 7), C57, padding=np.ones((7, 5), dtype=bool))


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (((5, 0), C57), {}, ValueError, "shape must be a non-empty tuple of positive"),
        (((), C57), {}, ValueError, "shape must be a non-empty tuple of positive"),
        (((5, 7),), {}, ValueError, "exactly one of coeffs .* neither"),
        (((5, 7), C57), {"function": np.add}, ValueError, "exactly one of coeffs .* both"),
        (((2, 2),), {"function": lambda a, b: np.ones(4)}, ValueError, "function must return"),
        (((5, 7), C57.astype(np.int64)), {}, TypeError, "coeffs must be float32 or float64"),
        (((5, 7), C57), {"key_mask": np.ones((5, 7))}, TypeError, "key_mask must be a boolean"),
        (((5, 7), C57), {"num_special": -1}, ValueError, "num_special must be a non-negative"),
        (((5, 7), C57), {"special_value": np.inf}, ValueError, "special_value must be finite"),
        (((5, 7), C57), {"method": "fast"}, ValueError, "method must be one of"),
        (((5, 7), np.ones((2, 9, 13))), {"special_value": np.ones(3)}, ValueError,
         "do not broadcast"),
    ],
)
def test_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        GridRPE(*args, **kwargs)


def test_bad_separable_factors():
    with pytest.raises(ValueError, match=r"factors\[1\] must have shape"):
        separable_grid((3, 4), [np.ones(5), np.ones(8)])
    with pytest.raises(ValueError, match="one coefficient vector per grid axis"):
        separable_grid((3, 4), [np.ones(5)])


def test_torch_parameters_follow_the_input():
    torch = pytest.importorskip("torch")
    m = GridRPE((3, 4), torch.tensor(RNG.uniform(0.5, 1, (5, 7))), num_special=1)
    X = torch.ones((13, 2), dtype=torch.float32)
    y = m.matmat(X)
    assert y.dtype == torch.float32
    assert_close(to_np(y), to_np(m.to_dense()) @ np.ones((13, 2)), rtol=1e-5, what="torch")


def test_hadamard_with_causal_folds_into_grid_coefficients():
    import warnings as _w

    from structattn.masks import Causal, DecayedCausal, GridRPE, StructureWarning

    rng = np.random.default_rng(3)
    for shape in ((3, 4), (2, 3, 2)):
        offs = tuple(2 * n - 1 for n in shape)
        for mask in (GridRPE(shape, rng.uniform(0.2, 1, offs)),
                     GridRPE.from_log(rng.uniform(-1, 1, offs), shape)):
            L = mask.shape[0]
            for causal in (Causal(L), DecayedCausal(L, 0.7, exclusive=True)):
                with _w.catch_warnings():
                    _w.simplefilter("error", StructureWarning)
                    fused = mask.hadamard(causal)
                assert fused.lower_triangular
                np.testing.assert_allclose(fused.to_dense(),
                                           mask.to_dense() * causal.to_dense(), rtol=1e-12)

"""Toeplitz, ExponentialDecay and SumOfExponentials: kit, references, learnability, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from structattn import (
    NormalizerWarning,
    PositiveRandomFeatures,
    kernel_attention,
    softmax_attention,
)
from structattn.masks import ExponentialDecay, SumOfExponentials, Toeplitz
from structattn.testing import MaskTestCase, assert_close

from ..conftest import convert, to_np

RNG = np.random.default_rng(31)


def loop_toeplitz(c: np.ndarray) -> np.ndarray:
    """Independent constructor: M[i, j] = c[i - j + L - 1] by explicit loops."""
    L = (c.shape[-1] + 1) // 2
    M = np.zeros((*c.shape[:-1], L, L))
    for i in range(L):
        for j in range(L):
            M[..., i, j] = c[..., i - j + L - 1]
    return M


def loop_exponential(L, left, right):
    M = np.zeros((L, L))
    for i in range(L):
        for j in range(L):
            if j <= i:
                M[i, j] = sum(a * g ** (i - j) for a, g in left)
            else:
                M[i, j] = sum(a * g ** (j - i) for a, g in right)
    return M


ASYM = {L: RNG.uniform(0.1, 2.0, 2 * L - 1) for L in (1, 2, 37, 200)}


class _ToeplitzCase(MaskTestCase):
    L = 37
    method = "auto"

    def make_operator(self):
        return Toeplitz(ASYM[self.L], method=self.method)

    def dense_reference(self):
        return loop_toeplitz(ASYM[self.L])


class TestToeplitzL1(_ToeplitzCase):
    L = 1


class TestToeplitzL2(_ToeplitzCase):
    L = 2


class TestToeplitzFFT37(_ToeplitzCase):
    method = "fft"


class TestToeplitzDense37(_ToeplitzCase):
    method = "dense"


class TestToeplitzFFT200(_ToeplitzCase):
    L = 200
    method = "fft"


class TestToeplitzBatchedLog(MaskTestCase):
    """One log-parameterized mask per head, shape (3, 2L - 1)."""

    b = RNG.uniform(-3, 3, (3, 2 * 17 - 1))

    def make_operator(self):
        return Toeplitz.from_log(self.b)

    def dense_reference(self):
        return np.exp(loop_toeplitz(self.b))


class TestToeplitzCausal(MaskTestCase):
    c = np.concatenate([np.zeros(12), RNG.uniform(0.5, 1, 13)])

    def make_operator(self):
        return Toeplitz(self.c)

    def dense_reference(self):
        return loop_toeplitz(self.c)


class TestExponentialDecay(MaskTestCase):
    def make_operator(self):
        return ExponentialDecay(23, gamma_left=0.8, gamma_right=0.6)

    def dense_reference(self):
        return loop_exponential(23, [(1.0, 0.8)], [(1.0, 0.6)])


class TestSumOfExponentials(MaskTestCase):
    def make_operator(self):
        return SumOfExponentials(19, [0.5, 2.0], [0.9, 0.3], [1.5], [0.7])

    def dense_reference(self):
        return loop_exponential(19, [(0.5, 0.9), (2.0, 0.3)], [(1.5, 0.7)])


def test_printed_index_convention():
    np.testing.assert_array_equal(
        Toeplitz(np.arange(-3.0, 4.0)).to_dense(),
        [[0, -1, -2, -3], [1, 0, -1, -2], [2, 1, 0, -1], [3, 2, 1, 0]],
    )


def test_from_function_and_exponential_coefficients_agree():
    L = 50
    T = Toeplitz.from_function(lambda k: np.where(k >= 0, 0.9**k, 0.5 ** (-k)), L)
    E = ExponentialDecay(L, 0.9, 0.5)
    np.testing.assert_allclose(T.to_dense(), E.to_dense(), rtol=1e-13)
    np.testing.assert_allclose(E.coefficients(), T.coeffs, rtol=1e-13)
    assert E.to_toeplitz().shape == (L, L)
    assert ExponentialDecay(5, 0.5).lower_triangular
    assert Toeplitz(np.r_[np.zeros(4), np.ones(5)]).lower_triangular
    assert not Toeplitz.from_log(np.zeros(9)).lower_triangular


@pytest.mark.parametrize("L", [1, 2, 37, 1000])
def test_masked_attention_matches_dense_reference(backend, dtype, L):
    c = RNG.uniform(0.2, 1.5, 2 * L - 1)
    M = loop_toeplitz(c) if L <= 40 else Toeplitz(c).to_dense()
    d = 8
    q, k, v = RNG.standard_normal((3, 2, L, d))
    phi = PositiveRandomFeatures(d, 16, seed=0)
    A = (phi.queries(q) @ np.swapaxes(phi.keys(k), -1, -2)) * M
    expected = (A @ v) / A.sum(-1, keepdims=True)
    out = kernel_attention(*convert(backend, dtype, q, k, v), phi, mask=Toeplitz(c),
                           backend=backend)
    assert_close(out, expected, what=f"kernel L={L}")
    if L <= 200:
        S = np.exp(q @ np.swapaxes(k, -1, -2) / np.sqrt(d)) * M
        sm = softmax_attention(*convert(backend, dtype, q, k, v), mask=Toeplitz(c),
                               backend=backend)
        assert_close(sm, (S @ v) / S.sum(-1, keepdims=True), what=f"softmax L={L}")


@pytest.mark.parametrize("s", [1.0, 5.0, 15.0, 30.0])
def test_dynamic_range_sweep(backend, s):
    """Log-coefficients in [-s, s]; float32 tolerances of masks.md §3."""
    L, d = 300, 8
    b = RNG.uniform(-s, s, 2 * L - 1)
    q, k, v = RNG.standard_normal((3, L, d))
    phi = PositiveRandomFeatures(d, 16, seed=1)
    mask = Toeplitz.from_log(b, method="fft")
    M = np.exp(loop_toeplitz(b - b.max()))
    A = (phi.queries(q) @ phi.keys(k).T) * M
    num, den = A @ v, A.sum(-1, keepdims=True)
    expected = num / den
    for dtype, rtol in (("float64", 1e-10 if s <= 5 else 1e-8), ("float32", 1e-4)):
        out = to_np(kernel_attention(*convert(backend, dtype, q, k, v), phi, mask=mask,
                                     backend=backend))
        # the matrix-vector product is normwise accurate: check M x directly
        Mx = to_np(mask._normalized().matmat(*convert(backend, dtype, v), backend=backend))
        assert_close(Mx, M @ v, rtol=rtol if dtype == "float64" else 1e-4,
                     what=f"M v, s={s} {dtype}")
        # entrywise only on rows whose normalizer is not tiny next to the largest
        rows = den[:, 0] >= 1e-3 * den.max()
        tol = 1e-10 if dtype == "float64" and s <= 5 else 1e-3
        err = np.abs(out[rows] - expected[rows]).max() / np.abs(expected[rows]).max()
        assert err <= tol, f"s={s} {dtype}: {err:.2e}"


def test_learnable_log_coefficients_gradcheck():
    torch = pytest.importorskip("torch")
    L = 9
    b = torch.tensor(RNG.uniform(-1, 1, 2 * L - 1), requires_grad=True)
    q, k, v = (torch.tensor(RNG.standard_normal((L, 4))) for _ in range(3))
    phi = PositiveRandomFeatures(4, 8, seed=0)
    for method in ("fft", "dense"):
        assert torch.autograd.gradcheck(
            lambda bb, method=method: kernel_attention(
                q, k, v, phi, mask=Toeplitz.from_log(bb, method=method)), (b,))
    c = torch.tensor(RNG.uniform(0.5, 1, 2 * L - 1), requires_grad=True)
    X = torch.tensor(RNG.standard_normal((L, 3)))
    assert torch.autograd.gradcheck(lambda cc: Toeplitz(cc, method="fft").matmat(X), (c,))


def test_cost_model_picks_dense_for_small_and_fft_for_large():
    assert Toeplitz(np.ones(2 * 4 - 1))._choose(64) == "dense"
    assert Toeplitz(np.ones(2 * 4096 - 1))._choose(64) == "fft"
    big = Toeplitz(np.ones(2 * 4096 - 1))
    assert big.cost(64) < 2.0 * 4096**2 * 64


def test_bad_coefficients():
    with pytest.raises(ValueError, match="odd length 2L - 1"):
        Toeplitz(np.ones(4))
    with pytest.raises(ValueError, match="coeffs contains NaN or Inf"):
        Toeplitz(np.array([1.0, np.inf, 1.0]))
    with pytest.raises(TypeError, match="coeffs must be float32 or float64"):
        Toeplitz(np.ones(3, dtype=np.int64))
    with pytest.raises(ValueError, match="method must be one of"):
        Toeplitz(np.ones(3), method="fast")
    with pytest.raises(ValueError, match=r"f must return one value per offset"):
        Toeplitz.from_function(lambda k: np.ones(3), 5)
    with pytest.raises(ValueError, match="mask has shape"):
        kernel_attention(*(np.ones((6, 2)) for _ in range(3)), PositiveRandomFeatures(2, 2, seed=0),
                         mask=Toeplitz(np.ones(9)))


def test_negative_mask_values_warn():
    c = np.ones(9)
    c[3] = -2.0
    x = RNG.standard_normal((5, 2))
    with pytest.warns(NormalizerWarning, match="has negative entries"):
        softmax_attention(x, x, x, mask=Toeplitz(c))
    with warnings.catch_warnings():
        warnings.simplefilter("error", NormalizerWarning)
        softmax_attention(x, x, x, mask=Toeplitz.from_log(c))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"gamma_left": 0.0}, "gamma_left must be"), ({"gamma_left": 1.5}, "gamma_left must be"),
     ({"gamma_left": 0.5, "gamma_right": -0.1}, "gamma_right must be")],
)
def test_exponential_decay_parameter_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ExponentialDecay(4, **kwargs)


def test_sum_of_exponentials_length_mismatch():
    with pytest.raises(ValueError, match="left_amplitudes must be finite and match"):
        SumOfExponentials(4, [1.0, 2.0], [0.5])


def test_hadamard_with_causal_stays_structured():
    from structattn.masks import Causal, DecayedCausal, StructureWarning

    b = RNG.uniform(-1, 1, 2 * 7 - 1)
    cases = [
        (Toeplitz.from_log(b), Causal(7), Toeplitz),
        (Toeplitz(np.exp(b)), DecayedCausal(7, 0.5, exclusive=True), Toeplitz),
        (ExponentialDecay(7, 0.8, 0.6), Causal(7), SumOfExponentials),
        (ExponentialDecay(7, 0.8, 0.6), DecayedCausal(7, 0.5), SumOfExponentials),
        (SumOfExponentials(7, [1.0, 2.0], [0.5, 0.9]), Causal(7, exclusive=True), Toeplitz),
    ]
    for mask, causal, kind in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("error", StructureWarning)
            fused = mask.hadamard(causal)
            assert isinstance(fused, kind), (type(mask), type(fused))
            assert fused.lower_triangular
            np.testing.assert_allclose(fused.to_dense(), mask.to_dense() * causal.to_dense(),
                                       rtol=1e-13, atol=1e-300)

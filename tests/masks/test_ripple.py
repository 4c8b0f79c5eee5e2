"""Ripple masks: kit, SAT == FFT == loop reference, stick-breaking, kernels, errors."""

from __future__ import annotations

import doctest
import functools

import numpy as np
import pytest

import structattn.masks.ripple as ripple_module
from structattn import PositiveRandomFeatures, kernel_attention, softmax_attention
from structattn.backends import kernel
from structattn.masks import Ripple, stick_breaking
from structattn.testing import MaskTestCase, assert_close, relative_error

from ..conftest import convert, to_np

RNG = np.random.default_rng(53)


@functools.cache
def _ring_distances(H: int, W: int) -> np.ndarray:
    """Explicit max(|dx|, |dy|) between every pair of row-major grid positions."""
    L = H * W
    r = np.zeros((L, L), dtype=np.int64)
    for i in range(L):
        for j in range(L):
            r[i, j] = max(abs(i // W - j // W), abs(i % W - j % W))
    return r


def loop_ripple(H: int, W: int, alpha: np.ndarray) -> np.ndarray:
    """Reference mask: alpha[..., min(ring, r̂)] with alpha = (α_0 … α_{r̂-1}, ᾱ)."""
    cutoff = alpha.shape[-1] - 1
    return alpha[..., np.minimum(_ring_distances(H, W), cutoff)]


def loop_stick_breaking(logits: np.ndarray) -> np.ndarray:
    beta = 1.0 / (1.0 + np.exp(-logits))
    out, rest = [], 1.0
    for b in beta:
        out.append(b * rest)
        rest *= 1.0 - b
    return np.array([*out, rest])


WEIGHTS = {(H, W, R): RNG.uniform(0.05, 1.0, R + 1)
           for H, W in ((6, 9), (16, 16)) for R in (1, 3, max(H, W))}


class _RippleCase(MaskTestCase):
    H, W, R = 6, 9, 3
    method = "sat"

    def make_operator(self):
        return Ripple((self.H, self.W), WEIGHTS[self.H, self.W, self.R], method=self.method)

    def dense_reference(self):
        return loop_ripple(self.H, self.W, WEIGHTS[self.H, self.W, self.R])


class TestRippleSAT69Cutoff1(_RippleCase):
    R = 1


class TestRippleSAT69Cutoff3(_RippleCase):
    pass


class TestRippleSAT69CutoffMax(_RippleCase):
    R = 9


class TestRippleFFT69(_RippleCase):
    method = "fft"


class TestRippleSAT1616(_RippleCase):
    H, W, R = 16, 16, 3


class TestRippleFFT1616(_RippleCase):
    H, W, R = 16, 16, 16
    method = "fft"


class TestRippleStickBreakingPerHead(MaskTestCase):
    """Three heads of learnable (stick-breaking) ring weights on a 5 x 4 grid."""

    logits = RNG.normal(0.0, 1.5, (3, 4))

    def make_operator(self):
        return Ripple((5, 4), stick_breaking_logits=self.logits)

    def dense_reference(self):
        alpha = np.stack([loop_stick_breaking(x) for x in self.logits])
        return loop_ripple(5, 4, alpha)


def test_docstring_examples():
    result = doctest.testmod(ripple_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 1 and result.failed == 0


@pytest.mark.parametrize(("H", "W"), [(6, 9), (16, 16)])
@pytest.mark.parametrize("which", ["one", "three", "max"])
def test_sat_equals_fft_equals_dense(backend, H, W, which):
    R = {"one": 1, "three": 3, "max": max(H, W)}[which]
    alpha = WEIGHTS[H, W, R]
    X = RNG.standard_normal((2, H * W, 5))
    expected = loop_ripple(H, W, alpha) @ X
    (Xb,) = convert(backend, "float64", X)
    outs = {m: Ripple((H, W), alpha, method=m).matmat(Xb, backend=backend)
            for m in ("sat", "fft", "dense")}
    for m, y in outs.items():
        assert_close(y, expected, what=f"{m} {H}x{W} r̂={R}")
    assert relative_error(outs["sat"], outs["fft"]) < 1e-13


def test_stick_breaking_weights_sum_to_one():
    logits = np.random.default_rng(5).normal(0.0, 3.0, (4, 7))
    logits[0, 2] = 60.0  # a saturated break: everything after it is ~0
    logits[1, :] = -60.0  # nothing broken: all mass in the tail
    alpha = stick_breaking(logits)
    assert alpha.shape == (4, 8)
    assert np.all(alpha >= 0)
    np.testing.assert_allclose(alpha.sum(-1), 1.0, rtol=1e-14)  # Σ_{r<r̂} α_r + ᾱ = 1
    # log-space pieces: relative error ~u·|Σ log(1 − β)|
    np.testing.assert_allclose(alpha[2], loop_stick_breaking(logits[2]), rtol=1e-12)
    assert alpha[1, -1] == pytest.approx(1.0) and alpha[0, 3:].max() < 1e-25
    mask = Ripple((8, 8), stick_breaking_logits=logits)
    np.testing.assert_allclose(mask.ring_weights(), alpha, rtol=1e-15)
    assert mask.cutoff == 7 and mask.batch_shape == (4,)
    # r̂ = max(H, W): the tail is empty; the corner of a 1 x 5 grid sees rings 0 … 4 once
    M = Ripple((1, 5), stick_breaking_logits=logits[2, :5]).to_dense()
    a = stick_breaking(logits[2, :5])
    assert M[0].sum() == pytest.approx(1.0 - a[-1])


def test_masked_attention_matches_dense_reference(backend, dtype):
    H, W, d = 6, 9, 8
    alpha = WEIGHTS[H, W, 3]
    M = loop_ripple(H, W, alpha)
    q, k, v = RNG.standard_normal((3, 2, H * W, d))
    phi = PositiveRandomFeatures(d, 16, seed=0)
    A = (phi.queries(q) @ np.swapaxes(phi.keys(k), -1, -2)) * M
    for method in ("sat", "fft"):
        mask = Ripple((H, W), alpha, method=method)
        out = kernel_attention(*convert(backend, dtype, q, k, v), phi, mask=mask,
                               backend=backend)
        assert_close(out, (A @ v) / A.sum(-1, keepdims=True), what=f"kernel {method}")
    S = np.exp(q @ np.swapaxes(k, -1, -2) / np.sqrt(d)) * M
    sm = softmax_attention(*convert(backend, dtype, q, k, v), mask=Ripple((H, W), alpha),
                           backend=backend)
    assert_close(sm, (S @ v) / S.sum(-1, keepdims=True), what="softmax")


@pytest.mark.parametrize("method", ["sat", "fft"])
def test_learnable_logits_gradcheck(method):
    torch = pytest.importorskip("torch")
    logits = torch.tensor(RNG.normal(0.0, 1.0, (2, 3)), requires_grad=True)
    X = torch.tensor(RNG.standard_normal((2, 5 * 4, 3)))
    # fast_mode: random Jacobian projections (full Jacobians cost one backward per output)
    assert torch.autograd.gradcheck(
        lambda lg: Ripple((5, 4), stick_breaking_logits=lg, method=method).matmat(X),
        (logits,), fast_mode=True)
    weights = torch.tensor(RNG.uniform(0.1, 1.0, 4), requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda w: Ripple((5, 4), w, method=method).matmat(X), (weights,), fast_mode=True)
    q, k, v = (torch.tensor(RNG.standard_normal((20, 4))) for _ in range(3))
    phi = PositiveRandomFeatures(4, 6, seed=0)
    assert torch.autograd.gradcheck(
        lambda lg: kernel_attention(q, k, v, phi, mask=Ripple(
            (5, 4), stick_breaking_logits=lg[0], method=method)), (logits,), fast_mode=True)
    # the SAT and FFT gradients agree with the dense path's
    grads = []
    for m in ("dense", method):
        lg = logits.detach().clone().requires_grad_(True)
        Ripple((5, 4), stick_breaking_logits=lg, method=m).matmat(X).pow(2).sum().backward()
        grads.append(lg.grad)
    assert relative_error(grads[1], grads[0]) < 1e-12


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_numba_and_torch_sat_kernels_agree(dtype):
    torch = pytest.importorskip("torch")
    X = RNG.standard_normal((3, 12, 17, 6)).astype(dtype)
    alpha = RNG.uniform(0.0, 1.0, (3, 6))
    y_numba = kernel("ripple_sat", "numba")(X, alpha)
    y_torch = kernel("ripple_sat", "torch")(torch.as_tensor(X),
                                            torch.as_tensor(alpha.astype(dtype)))
    y_numpy = kernel("ripple_sat", "numpy")(X, alpha.astype(dtype))
    assert y_numba.dtype == X.dtype and y_torch.dtype == getattr(torch, dtype)
    tol = 1e-13 if dtype == "float64" else 1e-6
    assert relative_error(y_torch, y_numba) < tol
    assert relative_error(y_numpy, y_numba) < tol
    # broadcasting of the ring weights over leading dimensions
    y_b = kernel("ripple_sat", "numba")(X[0], alpha)
    assert y_b.shape == (3, 12, 17, 6)
    assert relative_error(y_b[1], kernel("ripple_sat", "numba")(X[0], alpha[1])) < 1e-15


def test_numba_parallel_and_serial_paths_agree(monkeypatch):
    import structattn.backends.numba.ripple as numba_ripple

    X = RNG.standard_normal((2, 20, 23, 5))
    alpha = RNG.uniform(0.0, 1.0, (2, 8))
    serial = numba_ripple.ripple_sat(X, alpha)
    monkeypatch.setattr(numba_ripple, "PARALLEL_MIN_WORK", 0)
    parallel = numba_ripple.ripple_sat(X, alpha)
    assert relative_error(parallel, serial) < 1e-15
    expected = np.stack([loop_ripple(20, 23, a) for a in alpha]) @ X.reshape(2, -1, 5)
    assert relative_error(parallel.reshape(2, -1, 5), expected) < 1e-13


def test_float32_sat_accuracy_64x64():
    """float64 tables keep float32 SAT products at input rounding (masks.md §3: <= 1e-4)."""
    H = W = 64
    alpha = np.array([1.0, 0.6, 0.3, 0.1, 1e-3])  # local ripple: small boxes dominate
    X = RNG.uniform(0.0, 1.0, (H * W, 8)) + 3.0  # positive features: large prefix sums
    reference = Ripple((H, W), alpha, method="sat").matmat(X, backend="numba")
    for backend in ("numba", "numpy"):
        y = Ripple((H, W), alpha, method="sat").matmat(X.astype(np.float32), backend=backend)
        assert y.dtype == np.float32
        assert relative_error(y, reference) < 1e-6  # measured ~3e-8 (float32 tables: ~3e-6)


def test_cost_model_dispatch_and_describe():
    assert Ripple((4, 4), np.ones(3))._choose(16) == "dense"
    big = Ripple((64, 64), np.ones(4))
    assert big._choose(64) == "sat"
    assert big.cost(64) < Ripple((64, 64), np.ones(4), method="fft").cost(64)
    assert Ripple((64, 64), np.ones(4), method="fft")._choose(64) == "fft"
    m = Ripple((6, 9), np.ones(3))
    assert m.T is m and m.nonnegative and not m.lower_triangular
    assert "ripple on a 6x9 grid" in m.describe()


@pytest.mark.parametrize("cutoff", [0, 10])
def test_cutoff_out_of_range(cutoff):
    match = r"cutoff r̂ must satisfy 1 <= r̂ <= max\(H, W\) = 9"
    with pytest.raises(ValueError, match=match):
        Ripple((6, 9), stick_breaking_logits=np.zeros(cutoff))
    with pytest.raises(ValueError, match=match):
        Ripple((6, 9), np.ones(cutoff + 1), cutoff=cutoff)


def test_cutoff_must_match_parameters():
    with pytest.raises(ValueError, match="cutoff=2 does not match weights of length 5"):
        Ripple((6, 9), np.ones(5), cutoff=2)


@pytest.mark.parametrize("kwargs", [{}, {"weights": np.ones(3),
                                        "stick_breaking_logits": np.zeros(2)}])
def test_exactly_one_parameterisation(kwargs):
    with pytest.raises(ValueError, match="give exactly one of weights"):
        Ripple((6, 9), **kwargs)


def test_negative_ring_weights():
    with pytest.raises(ValueError, match="ring weights must be >= 0"):
        Ripple((6, 9), np.array([1.0, -0.5, 0.2]))


def test_bad_grid_and_values():
    with pytest.raises(ValueError, match=r"shape must be a 2-D grid \(H, W\)"):
        Ripple((2, 3, 4), np.ones(2))
    with pytest.raises(ValueError, match="weights contains NaN or Inf"):
        Ripple((6, 9), np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="method must be one of"):
        Ripple((6, 9), np.ones(2), method="fast")
    x = np.ones((50, 2))
    with pytest.raises(ValueError, match="mask has shape"):
        kernel_attention(x, x, x, PositiveRandomFeatures(2, 2, seed=0),
                         mask=Ripple((6, 9), np.ones(2)))


def test_torch_parameters_follow_the_input():
    torch = pytest.importorskip("torch")
    m = Ripple((5, 4), stick_breaking_logits=torch.zeros(3, dtype=torch.float64))
    X = torch.ones((20, 2), dtype=torch.float32)
    y = m.matmat(X)
    assert y.dtype == torch.float32
    assert_close(to_np(y), to_np(m.to_dense()) @ np.ones((20, 2)), rtol=1e-6, what="torch")

"""Causal and decayed-causal masks: testing kit, kernels, scan chunking, errors."""

from __future__ import annotations

import numpy as np
import pytest

from structattn.backends import kernel
from structattn.backends.scan import causal_masked_matmul as scan
from structattn.masks import Causal, DecayedCausal
from structattn.testing import MaskTestCase, assert_close


def loop_reference(L: int, gamma: float = 1.0, exclusive: bool = False) -> np.ndarray:
    """Independent constructor: explicit double loop."""
    M = np.zeros((L, L))
    for i in range(L):
        for j in range(L):
            if j < i or (j == i and not exclusive):
                M[i, j] = gamma ** (i - j)
    return M


class TestCausal37(MaskTestCase):
    def make_operator(self):
        return Causal(37)

    def dense_reference(self):
        return loop_reference(37)


class TestCausalExclusive(MaskTestCase):
    def make_operator(self):
        return Causal(11, exclusive=True)

    def dense_reference(self):
        return loop_reference(11, exclusive=True)


class TestCausalLength1(MaskTestCase):
    def make_operator(self):
        return Causal(1)

    def dense_reference(self):
        return loop_reference(1)


class TestCausalLength2(MaskTestCase):
    def make_operator(self):
        return Causal(2)

    def dense_reference(self):
        return loop_reference(2)


class TestDecayedCausal(MaskTestCase):
    def make_operator(self):
        return DecayedCausal(29, gamma=0.83)

    def dense_reference(self):
        return loop_reference(29, 0.83)


class TestDecayedCausalExclusive(MaskTestCase):
    def make_operator(self):
        return DecayedCausal(13, gamma=0.5, exclusive=True)

    def dense_reference(self):
        return loop_reference(13, 0.5, exclusive=True)


@pytest.mark.parametrize("gamma", [1.0, 0.9, 1e-3])
@pytest.mark.parametrize("exclusive", [False, True])
def test_scan_chunk_sizes_agree_with_dense(gamma, exclusive):
    rng = np.random.default_rng(3)
    L = 45
    A, B = rng.uniform(0.1, 1, (2, 2, L, 5))
    V = rng.standard_normal((2, L, 3))
    expected = (loop_reference(L, gamma, exclusive) * (A @ np.swapaxes(B, -1, -2))) @ V
    for chunk in (1, 2, 7, 44, 45, 46, 1000):
        out = scan(A, B, V, gamma=gamma, exclusive=exclusive, chunk_size=chunk)
        assert_close(out, expected, what=f"scan chunk={chunk}")
    assert_close(kernel("causal_masked_matmul", "numba")(A, B, V, gamma=gamma,
                                                          exclusive=exclusive),
                 expected, what="numba")


def test_torch_function_chunked_gradients_match_dense_autograd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    L = 23
    A, B = (torch.tensor(rng.uniform(0.1, 1, (2, L, 4)), requires_grad=True) for _ in range(2))
    V = torch.tensor(rng.standard_normal((2, L, 3)), requires_grad=True)
    G = torch.tensor(rng.standard_normal((2, L, 3)))
    fast = kernel("causal_masked_matmul", "torch")
    for gamma, exclusive, chunk in ((1.0, False, 4), (0.7, True, 1), (0.95, False, 64)):
        M = torch.tensor(loop_reference(L, gamma, exclusive))
        grads_fast = torch.autograd.grad(
            (fast(A, B, V, gamma=gamma, exclusive=exclusive, chunk_size=chunk) * G).sum(),
            (A, B, V),
        )
        grads_dense = torch.autograd.grad(((M * (A @ B.mT)) @ V * G).sum(), (A, B, V))
        for gf, gd in zip(grads_fast, grads_dense, strict=True):
            assert_close(gf, gd, what=f"grad gamma={gamma} chunk={chunk}")


def test_torch_function_saves_only_inputs():
    """The autograd graph keeps A, B, V, not per-chunk states or score blocks."""
    torch = pytest.importorskip("torch")
    L, m, dv = 512, 8, 8
    A, B, V = (torch.rand(1, L, k, dtype=torch.float64, requires_grad=True)
               for k in (m, m, dv))
    out = kernel("causal_masked_matmul", "torch")(A, B, V, chunk_size=16)
    saved = out.grad_fn.saved_tensors
    assert sum(t.numel() for t in saved) == A.numel() + B.numel() + V.numel()


@pytest.mark.parametrize("gamma", [0.0, -0.5, 1.5, float("nan"), float("inf")])
def test_decayed_causal_rejects_gamma_out_of_range(gamma):
    with pytest.raises(ValueError, match=r"gamma must satisfy 0 < gamma <= 1"):
        DecayedCausal(4, gamma=gamma)


def test_causal_rejects_bad_length_and_flag():
    with pytest.raises(ValueError, match="L must be a positive integer"):
        Causal(0)
    with pytest.raises(TypeError, match="exclusive must be a bool"):
        Causal(3, exclusive="yes")
    with pytest.raises(TypeError, match="gamma must be a real number"):
        DecayedCausal(3, gamma="0.5")


def test_decayed_causal_long_sequence_has_no_overflow():
    L = 5000
    mask = DecayedCausal(L, gamma=0.5)
    x = np.ones((L, 1))
    y = mask.matmat(x, backend="numpy")
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y[-1, 0], 2.0, rtol=1e-12)

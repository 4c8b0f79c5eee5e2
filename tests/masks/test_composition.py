"""Hadamard, Kronecker and transposed masks, and the Mask API surface."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from structattn.masks import (
    Causal,
    DecayedCausal,
    Dense,
    Full,
    Hadamard,
    Kronecker,
    LowRank,
    StructureWarning,
)
from structattn.testing import MaskTestCase, assert_close

from .test_causal import loop_reference

RNG = np.random.default_rng(11)
U, W = RNG.uniform(0.2, 1.0, (2, 12, 3))
D = RNG.uniform(0.0, 1.0, (12, 12))
K1, K2 = RNG.uniform(0.0, 1.0, (3, 4)), RNG.uniform(0.0, 1.0, (5, 2))


class TestCausalTimesLowRank(MaskTestCase):
    def make_operator(self):
        return Hadamard(Causal(12), LowRank(U, W))

    def dense_reference(self):
        return loop_reference(12) * (U @ W.T)


class TestLowRankTimesDecayed(MaskTestCase):
    def make_operator(self):
        return LowRank(U, W) * DecayedCausal(12, gamma=0.8)

    def dense_reference(self):
        return (U @ W.T) * loop_reference(12, 0.8)


class TestCausalTimesFull(MaskTestCase):
    def make_operator(self):
        return Causal(12) * Full(12)

    def dense_reference(self):
        return loop_reference(12)


class TestKroneckerDense(MaskTestCase):
    def make_operator(self):
        return Kronecker(Dense(K1), Dense(K2))

    def dense_reference(self):
        return np.kron(K1, K2)


class TestKroneckerCausal(MaskTestCase):
    def make_operator(self):
        return Causal(3).kron(DecayedCausal(4, gamma=0.5))

    def dense_reference(self):
        return np.kron(loop_reference(3), loop_reference(4, 0.5))


class TestTransposedCausal(MaskTestCase):
    def make_operator(self):
        return Causal(9).T

    def dense_reference(self):
        return loop_reference(9).T


class TestDenseTimesCausalFallback(MaskTestCase):
    """No low-rank factor: the product is materialized with a StructureWarning."""

    def make_operator(self):
        return Hadamard(Dense(D), Causal(12))

    def dense_reference(self):
        return D * loop_reference(12)

    @pytest.fixture(autouse=True)
    def _expect_fallback_warning(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StructureWarning)
            yield


def test_dense_fallback_warns():
    with pytest.warns(StructureWarning, match="no structured algorithm"):
        Hadamard(Dense(D), Causal(12)).matmat(np.ones((12, 1)))


def test_low_rank_hadamard_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", StructureWarning)
        Hadamard(Causal(12), LowRank(U, W)).masked_matmul(U, W, np.ones((12, 2)))


def test_hadamard_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"equal shape; got left.shape=\(3, 3\)"):
        Hadamard(Causal(3), Full(4))


def test_hadamard_of_non_mask_raises():
    with pytest.raises(TypeError, match="right must be a Mask"):
        Hadamard(Causal(3), np.ones((3, 3)))


def test_kronecker_rejects_batched_factor():
    with pytest.raises(ValueError, match="Kronecker factors must be unbatched"):
        Kronecker(Dense(np.ones((2, 3, 3))), Causal(2))


def test_transpose_of_transpose_is_original():
    c = Causal(5)
    assert c.T.T is c
    assert c.H.shape == (5, 5)


def test_describe_mentions_structure():
    text = Hadamard(Causal(4), Full(4)).describe()
    assert "Hadamard" in text and "low-rank factor folded" in text
    assert "prefix-sum" in Causal(4).describe()
    assert "parameters dtype: float64" in Dense(D).describe()


def test_mask_batch_broadcasts_against_operand():
    batched = Dense(RNG.uniform(size=(3, 4, 4)))
    X = RNG.standard_normal((2, 1, 4, 2))
    assert_close(batched.matmat(X), batched.matrix @ X, what="broadcast matmat")
    with pytest.raises(ValueError, match="do not broadcast"):
        batched.matmat(RNG.standard_normal((2, 4, 2)))


def test_masked_matmul_feature_mismatch_raises():
    with pytest.raises(ValueError, match="same number of features m"):
        Causal(4).masked_matmul(np.ones((4, 2)), np.ones((4, 3)), np.ones((4, 1)))


def test_masked_matmul_mixed_kinds_and_dtypes_raise():
    torch = pytest.importorskip("torch")
    A = np.ones((4, 2))
    with pytest.raises(TypeError, match="both be numpy arrays or both torch tensors"):
        Causal(4).masked_matmul(A, torch.ones(4, 2, dtype=torch.float64), A)
    with pytest.raises(TypeError, match="same dtype as A"):
        Causal(4).masked_matmul(A, A.astype(np.float32), A)


def test_generic_masked_matmul_blocks_over_features(monkeypatch):
    """The generic path processes the feature axis in blocks; the result is unchanged."""
    import structattn.masks.base as base

    A = RNG.uniform(size=(12, 7))
    B = RNG.uniform(size=(12, 7))
    V = RNG.standard_normal((12, 3))
    expected = (D * (A @ B.T)) @ V
    monkeypatch.setattr(base, "_GENERIC_BLOCK_ELEMENTS", 40)
    out = base.generic_masked_matmul(lambda X: D @ X, A, B, V)
    assert_close(out, expected, what="blocked generic")


class TestSumOfCausalAndTransposedDecay(MaskTestCase):
    """A two-sided exponential decay as a sum of structured masks."""

    def make_operator(self):
        return DecayedCausal(10, 0.6) + DecayedCausal(10, 0.8, exclusive=True).T

    def dense_reference(self):
        return loop_reference(10, 0.6) + loop_reference(10, 0.8, exclusive=True).T


class TestScaledLowRankSum(MaskTestCase):
    def make_operator(self):
        return 0.5 * Causal(12) + LowRank(U, W) * 2.0

    def dense_reference(self):
        return 0.5 * loop_reference(12) + 2.0 * (U @ W.T)


def test_algebra_properties():
    assert (Causal(4) + DecayedCausal(4, 0.5)).lower_triangular
    assert not (Causal(4) + Causal(4).T).lower_triangular
    assert (Causal(4) * Full(4)).lower_triangular
    assert not (-1.0 * Causal(4)).nonnegative
    assert Causal(4).cost(3) < Full(4).cost(3) * 4 < Dense(np.ones((4, 4))).cost(3) * 4
    with pytest.raises(ValueError, match="Sum needs masks of equal shape"):
        Causal(3) + Causal(4)
    with pytest.raises(ValueError, match="alpha must be a finite real number"):
        Causal(3) * float("inf")


def test_mask_batch_larger_than_operand_batch_on_every_backend():
    """A batched mask applied to an unbatched operand (broadcast before the kernels)."""
    torch = pytest.importorskip("torch")
    Ub = RNG.uniform(0.5, 1, (3, 6, 2))
    mask = DecayedCausal(6, 0.5) * LowRank(Ub, Ub)
    X = RNG.standard_normal((6, 2))
    expected = mask.to_dense() @ X
    for backend in ("numpy", "numba"):
        assert_close(mask.matmat(X, backend=backend), expected, what=backend)
        assert_close(mask.rmatmat(X, backend=backend),
                     np.swapaxes(mask.to_dense(), -1, -2) @ X, what=f"r{backend}")
    assert_close(mask.matmat(torch.tensor(X)), expected, what="torch")


def test_causal_times_causal_is_fused():
    with warnings.catch_warnings():
        warnings.simplefilter("error", StructureWarning)
        a = DecayedCausal(8, 0.9).hadamard(Causal(8, exclusive=True))
        b = (2.0 * DecayedCausal(8, 0.5)) * DecayedCausal(8, 0.5)
    assert isinstance(a, DecayedCausal) and a.exclusive and a.gamma == 0.9
    np.testing.assert_allclose(b.to_dense(), 2.0 * loop_reference(8, 0.25), rtol=1e-14)


@pytest.mark.parametrize("wrap", ["T", "hadamard", "kron"])
def test_large_log_masks_are_normalized_through_compositions(wrap):
    """exp(b) with b ~ 90 overflows float32 unless attention shifts b by its max."""
    from structattn import PositiveRandomFeatures, kernel_attention
    from structattn.masks import Toeplitz

    L = 12
    b = -0.1 * np.abs(np.arange(-(L - 1), L)) + 90.0
    if wrap == "T":
        mask = Toeplitz.from_log(b).T
    elif wrap == "hadamard":
        mask = Hadamard(Toeplitz.from_log(b), LowRank(U[:L], W[:L]))
    else:  # 3 x 4 grid
        mask = Kronecker(Toeplitz.from_log(b[L - 3: L + 2]), Toeplitz.from_log(b[L - 4: L + 3]))
    q, k, v = RNG.standard_normal((3, L, 4)).astype(np.float32)
    out = kernel_attention(q, k, v, PositiveRandomFeatures(4, 8, seed=0), mask=mask)
    assert np.all(np.isfinite(out))
    ref = kernel_attention(*(a.astype(np.float64) for a in (q, k, v)),
                           PositiveRandomFeatures(4, 8, seed=0), mask=mask)
    assert_close(out, ref, rtol=1e-4, what=wrap)


def test_masks_and_features_keep_the_device():
    """Outputs stay on the inputs' device (meta tensors: no data, only placement)."""
    torch = pytest.importorskip("torch")
    from structattn import PositiveRandomFeatures
    from structattn.masks import GridRPE, Ripple, Toeplitz

    masks = [Causal(6), DecayedCausal(6, 0.5), Full(6), LowRank(U[:6], W[:6]),
             Toeplitz(RNG.uniform(size=11)), GridRPE((2, 3), RNG.uniform(size=(3, 5))),
             Ripple((2, 3), weights=[1.0, 0.5]), Causal(6) + Causal(6).T]
    X = torch.empty(2, 6, 3, device="meta")
    for mask in masks:
        for out in (mask.matmat(X, check_finite=False), mask.rmatmat(X, check_finite=False),
                    mask.masked_matmul(X, X, X, check_finite=False),
                    mask.to_dense(like=X)):
            assert out.device.type == "meta", type(mask).__name__
    phi = PositiveRandomFeatures(3, 4, seed=0)
    x = torch.empty(5, 3, device="meta")
    assert phi.queries(x).device.type == "meta" and phi.keys(x).device.type == "meta"

"""Full, Dense and LowRank masks through the testing kit, plus their input errors."""

from __future__ import annotations

import numpy as np
import pytest

from structattn.masks import Dense, Full, LowRank
from structattn.testing import MaskTestCase

RNG = np.random.default_rng(7)
DENSE = RNG.uniform(0.0, 2.0, (6, 5))
DENSE_BATCHED = RNG.uniform(0.0, 2.0, (3, 5, 5))
U, W = RNG.uniform(0.1, 1.0, (7, 2)), RNG.uniform(0.1, 1.0, (4, 2))


class TestFullSquare(MaskTestCase):
    def make_operator(self):
        return Full(9)

    def dense_reference(self):
        return np.ones((9, 9))


class TestFullRectangular(MaskTestCase):
    def make_operator(self):
        return Full(4, 6)

    def dense_reference(self):
        return np.ones((4, 6))


class TestDense(MaskTestCase):
    def make_operator(self):
        return Dense(DENSE)

    def dense_reference(self):
        return DENSE


class TestDenseBool(MaskTestCase):
    pattern = RNG.uniform(size=(5, 5)) > 0.4

    def make_operator(self):
        return Dense(self.pattern)

    def dense_reference(self):
        return self.pattern.astype(float)


class TestDenseBatched(MaskTestCase):
    extra_batch = (2, 1)

    def make_operator(self):
        return Dense(DENSE_BATCHED)

    def dense_reference(self):
        return DENSE_BATCHED


class TestLowRank(MaskTestCase):
    def make_operator(self):
        return LowRank(U, W)

    def dense_reference(self):
        return np.array([[U[i] @ W[j] for j in range(4)] for i in range(7)])


def test_full_rejects_bad_lengths():
    with pytest.raises(ValueError, match="M must be a positive integer"):
        Full(0)
    with pytest.raises(ValueError, match="N must be a positive integer"):
        Full(3, -1)
    with pytest.raises(ValueError, match="M must be a positive integer"):
        Full(2.5)


def test_dense_rejects_non_finite_and_bad_types():
    bad = DENSE.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="matrix contains NaN or Inf"):
        Dense(bad)
    with pytest.raises(TypeError, match="matrix must have dtype"):
        Dense(np.ones((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        Dense(np.ones(3))
    with pytest.raises(TypeError, match=r"numpy\.ndarray or torch\.Tensor"):
        Dense([[1.0]])


def test_low_rank_rejects_rank_mismatch():
    with pytest.raises(ValueError, match="same rank r"):
        LowRank(np.ones((3, 2)), np.ones((3, 1)))


def test_dense_signed_reports_nonnegative_false():
    assert not Dense(-DENSE).nonnegative
    assert Dense(DENSE).nonnegative


def test_torch_mask_applied_to_numpy_raises():
    torch = pytest.importorskip("torch")
    mask = Dense(torch.ones(3, 3))
    with pytest.raises(TypeError, match="holds torch tensors but was applied to a numpy"):
        mask.matmat(np.ones((3, 1)), backend="numpy")


def test_dense_mask_gradient_flows_to_matrix():
    torch = pytest.importorskip("torch")
    m = torch.tensor(DENSE, requires_grad=True)
    x = torch.tensor(RNG.standard_normal((5, 2)))
    assert torch.autograd.gradcheck(lambda mm: Dense(mm).matmat(x), (m,))

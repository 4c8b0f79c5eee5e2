"""Error metrics: closed-form values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from structattn.studies import max_abs_error, relative_error, row_kl
from structattn.studies.metrics import KL_FLOOR


def test_identical_inputs_give_zero():
    x = np.random.default_rng(0).random((2, 3, 5, 5))
    P = x / x.sum(-1, keepdims=True)
    assert relative_error(x, x) == 0.0
    assert max_abs_error(x, x) == 0.0
    assert row_kl(P, P) == pytest.approx(0.0, abs=1e-15)


def test_relative_error_is_normwise_over_the_whole_batch():
    exact = np.array([[3.0, 0.0], [0.0, 4.0]])  # ‖e‖_F = 5
    approx = exact + np.array([[0.0, 1.0], [0.0, 0.0]])
    assert relative_error(approx, exact) == pytest.approx(0.2)
    assert max_abs_error(approx, exact) == pytest.approx(1.0)
    assert max_abs_error(-approx, exact) == pytest.approx(8.0)


def test_relative_error_with_zero_reference():
    z = np.zeros(3)
    assert relative_error(z, z) == 0.0
    assert relative_error(np.ones(3), z) == math.inf


def test_row_kl_hand_computed_2x2():
    P = np.array([[0.5, 0.5], [1.0, 0.0]])
    Q = np.array([[0.25, 0.75], [0.5, 0.5]])
    # row 0: ½ln(0.5/0.25) + ½ln(0.5/0.75) = ½ln2 + ½ln(2/3); row 1: 1·ln2 + 0·log0
    expected = ((0.5 * math.log(2) + 0.5 * math.log(2 / 3)) + math.log(2)) / 2
    assert row_kl(P, Q) == pytest.approx(expected, rel=1e-14)
    assert expected == pytest.approx(0.418494, abs=1e-6)


def test_row_kl_floor_for_zero_and_negative_approx():
    P = np.array([[0.5, 0.5]])
    for bad in (0.0, -0.1):
        Q = np.array([[1.0 - bad, bad]])
        q = np.maximum(Q, KL_FLOOR)
        q = q / q.sum()
        expected = 0.5 * math.log(0.5 / q[0, 0]) + 0.5 * math.log(0.5 / q[0, 1])
        value = row_kl(P, Q)
        assert math.isfinite(value)
        assert value == pytest.approx(expected, rel=1e-12)
        assert value > 10  # a missed key costs about ½·ln(½/1e-12)


def test_metrics_accept_torch_and_check_shapes():
    a = torch.tensor([[1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    assert relative_error(a, np.array([[1.0, 2.0]])) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        max_abs_error(np.zeros((2, 2)), np.zeros((2, 3)))

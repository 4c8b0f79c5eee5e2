"""EigenAttention in a study: a rank above the kernel's numerical rank is clipped, not refused."""

from __future__ import annotations

import numpy as np
import pytest

from structattn.eigen import EigenAttention
from structattn.eigen.features import RankClippedWarning
from structattn.studies import run_study


def _low_rank_inputs():
    # tokens on a line: exp(s·x·y) on 1-D points has fast-decaying eigenvalues, so the
    # kernel matrix of 64 points has a numerical rank far below 48
    rng = np.random.default_rng(0)
    t = rng.uniform(-1, 1, size=(1, 1, 32, 1))
    direction = np.array([1.0, 0.5, -0.25, 0.0])
    q, k = t * direction, rng.uniform(-1, 1, size=(1, 1, 32, 1)) * direction
    return q, k, rng.standard_normal((1, 1, 32, 3))


def test_rank_above_numerical_rank_is_clipped_with_a_warning():
    q, k, v = _low_rank_inputs()
    with pytest.raises(ValueError, match="numerical rank"):
        EigenAttention(rank=48, landmarks=64)(q, k, v)
    with pytest.warns(RankClippedWarning, match="numerical rank"):
        out = EigenAttention(rank=48, landmarks=64, clip_rank=True)(q, k, v)
    assert out.shape == v.shape and np.isfinite(out).all()


def test_study_records_the_clipping_in_notes():
    records = run_study(["eigen-nystrom"], lengths=(64,), dim=4, value_dim=4, heads=1,
                        causal=False, timing=False, matrix_max_length=0)
    assert all(r["head_error"] is not None for r in records)  # never refused mid-study
    notes = {r["budget_value"]: r["notes"] for r in records}
    assert "RankClippedWarning" in notes[512]

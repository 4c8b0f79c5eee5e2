"""The optimization-based study rows: sparsemax/entmax attention and VARS."""

from __future__ import annotations

import numpy as np
import pytest

from structattn.studies import get, run_study

NAMES = ("sparsemax-attention", "entmax15-attention", "vars")
TINY = {"lengths": (16,), "dim": 8, "value_dim": 8, "repeats": 1}


def test_registered_with_budgets():
    assert dict(get("sparsemax-attention").budgets) == {}
    assert dict(get("entmax15-attention").budgets) == {}
    assert get("vars").budgets == {"num_features": (16, 64)}
    assert get("sparsemax-attention").causal and get("entmax15-attention").causal
    assert not get("vars").causal


def test_tiny_run_study_gives_finite_errors():
    records = run_study(list(NAMES), causal=(False, True), **TINY)
    keys = {(r["operator"], r["budget_value"], r["causal"]) for r in records}
    assert keys == {
        ("sparsemax-attention", None, False), ("sparsemax-attention", None, True),
        ("entmax15-attention", None, False), ("entmax15-attention", None, True),
        ("vars", 16, False), ("vars", 64, False),
    }
    for r in records:
        assert not r["notes"].startswith("error"), r["notes"]
        for key in ("rel_error", "max_abs_error", "row_kl", "time_s"):
            assert r[key] is not None and np.isfinite(r[key]) and r[key] >= 0
    err = {(r["operator"], r["causal"]): r["rel_error"] for r in records
           if r["operator"] != "vars"}
    # a different map, not an approximation: the error does not vanish
    assert all(value > 1e-3 for value in err.values())


@pytest.mark.parametrize("name", NAMES[:2])
def test_sparse_rows_build_causal_operators(name):
    op = get(name).build(dim=4, seed=0, causal=True)
    x = np.random.default_rng(1).standard_normal((1, 6, 4))
    P = op.matrix(x, x)
    assert (np.triu(P[0], 1) == 0).all()
    np.testing.assert_allclose(P.sum(-1), 1.0, rtol=1e-10)
    np.testing.assert_allclose(op(x, x, x), P @ x, atol=1e-12)


def test_vars_matrix_is_its_linear_map():
    op = get("vars").build(dim=4, seed=0, causal=False, num_features=16)
    rng = np.random.default_rng(2)
    q, v = rng.standard_normal((2, 1, 8, 4)), rng.standard_normal((2, 1, 8, 3))
    np.testing.assert_allclose(op.matrix(q, q) @ v, op(q, q, v), atol=1e-12)


def test_float32_torch_backend():
    records = run_study(list(NAMES), lengths=(16,), dim=8, dtype="float32",
                        backend="torch", causal=(False, True), repeats=1)
    assert all(r["rel_error"] is not None and np.isfinite(r["rel_error"]) for r in records)

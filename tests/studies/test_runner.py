"""The sweep runner, synthetic inputs and reports on tiny settings."""

from __future__ import annotations

import numpy as np
import pytest

from structattn.studies import (
    format_table,
    register,
    registry,
    run_study,
    synthetic_inputs,
    write_records,
)
from structattn.studies.registry import unregister
from structattn.studies.runner import RECORD_KEYS

TINY = {"lengths": (16, 32), "dim": 8, "value_dim": 8, "repeats": 1}


def test_synthetic_inputs_shapes_determinism_and_scale():
    q, k, v = synthetic_inputs(32, dim=8, value_dim=4, heads=3, batch=2, seed=5, scale=0.5)
    assert q.shape == k.shape == (2, 3, 32, 8) and v.shape == (2, 3, 32, 4)
    assert q.dtype == np.float64
    q2, k2, v2 = synthetic_inputs(32, dim=8, value_dim=4, heads=3, batch=2, seed=5, scale=0.5)
    np.testing.assert_array_equal(q, q2)
    np.testing.assert_array_equal(k, k2)
    np.testing.assert_array_equal(v, v2)
    assert not np.array_equal(q, synthetic_inputs(32, dim=8, value_dim=4, heads=3,
                                                   batch=2, seed=6, scale=0.5)[0])
    q1, _, v1 = synthetic_inputs(32, dim=8, value_dim=4, heads=3, batch=2, seed=5, scale=1.0)
    np.testing.assert_allclose(q, 0.5 * q1)  # scale multiplies q and k only
    np.testing.assert_array_equal(v, v1)
    q32 = synthetic_inputs(32, dim=8, seed=5, dtype="float32")[0]
    assert q32.dtype == np.float32
    with pytest.raises(ValueError, match="dtype"):
        synthetic_inputs(4, dtype="float16")


def test_inputs_independent_of_feature_draws_with_same_seed():
    q = synthetic_inputs(8, dim=8, heads=1, seed=0)[0]
    assert not np.allclose(q[0, 0], np.random.default_rng(0).standard_normal((8, 8)))


def test_tiny_run_records_have_all_keys():
    records = run_study(seeds=(0,), **TINY)
    # one record per (budget point, length, mode) of every registered operator
    from structattn.studies import registry

    expected = sum(len(list(e.budget_points())) * 2 * (2 if e.causal else 1)
                   for e in registry().values())  # x 2 lengths x modes supported
    assert len(records) == expected
    for r in records:
        assert tuple(r) == RECORD_KEYS
        assert r["rel_error"] >= 0 and np.isfinite(r["rel_error"])
        assert r["max_abs_error"] >= 0
        assert r["row_kl"] >= 0
        assert r["time_s"] > 0 and r["exact_time_s"] > 0
        assert r["dtype"] == "float64" and r["backend"] == "numba"
        assert not r["notes"].startswith("error")
    # the same relative-position mask by FFT and by exact recurrences
    fft = {(r["budget_value"], r["length"], r["causal"]): r["rel_error"] for r in records
           if r["operator"] == "performer+toeplitz"}
    rec = {(r["budget_value"], r["length"], r["causal"]): r["rel_error"] for r in records
           if r["operator"] == "performer+exp-decay"}
    assert fft.keys() == rec.keys()
    for key in fft:
        assert abs(fft[key] - rec[key]) <= 1e-9 * rec[key]
    elu = [r for r in records if r["operator"] == "linear-elu"]
    assert {(r["budget_name"], r["budget_value"]) for r in elu} == {(None, None)}
    assert {r["causal"] for r in records} == {False, True}


def test_row_kl_skipped_above_matrix_max_length():
    records = run_study(["linear-elu"], matrix_max_length=16, causal=False, **TINY)
    kl = {r["length"]: r["row_kl"] for r in records}
    assert kl[16] is not None and kl[32] is None


def test_more_features_give_smaller_error():
    # Verified over 100 disjoint seed triples (400 comparisons): the error ratio
    # 512 vs 32 features was at most 0.63 (mean 0.33).
    records = run_study(["performer"], seeds=(0, 1, 2), scale=0.5, **TINY)
    for mode in (False, True):
        for length in (16, 32):
            def mean_error(m, mode=mode, length=length):
                return np.mean([r["rel_error"] for r in records if r["budget_value"] == m
                                and r["causal"] == mode and r["length"] == length])
            assert mean_error(512) < 0.8 * mean_error(32)


def test_deterministic_given_seed():
    settings = {**TINY, "lengths": (16,)}
    first = run_study(["performer", "rfa-trig"], seeds=(3,), **settings)
    second = run_study(["performer", "rfa-trig"], seeds=(3,), **settings)
    assert len(first) == 12
    for a, b in zip(first, second, strict=True):
        for key in ("rel_error", "max_abs_error", "row_kl"):
            assert a[key] == b[key]


def test_non_causal_methods_are_skipped_in_causal_mode():
    name = "test-noncausal-elu"
    base = registry()["linear-elu"].factory
    register(name, budgets={}, description="x", causal=False)(base)
    try:
        records = run_study([name], causal=(False, True), **TINY)
    finally:
        unregister(name)
    assert {r["causal"] for r in records} == {False}


def test_failing_operator_is_recorded_not_raised():
    name = "test-failing"

    @register(name, budgets={}, description="always fails")
    def _fail(**kwargs):
        raise RuntimeError("boom")

    try:
        records = run_study([name], lengths=(8,), dim=4, causal=False, repeats=1)
    finally:
        unregister(name)
    assert records[0]["rel_error"] is None
    assert records[0]["notes"] == "error: RuntimeError: boom"
    assert "E" in format_table(records).splitlines()[2]


def test_float32_and_torch_backend():
    records = run_study(["performer"], lengths=(16,), dim=8, dtype="float32",
                        backend="torch", causal=True, repeats=1)
    assert {r["backend"] for r in records} == {"torch"}
    assert all(np.isfinite(r["rel_error"]) for r in records)


def test_argument_validation():
    with pytest.raises(KeyError, match="registered operators"):
        run_study(["nope"])
    with pytest.raises(ValueError, match="lengths"):
        run_study(lengths=(0,))
    with pytest.raises(ValueError, match="dtype"):
        run_study(dtype="float16")
    with pytest.raises(ValueError, match="backend"):
        run_study(backend="cuda")
    with pytest.raises(ValueError, match="causal"):
        run_study(causal=("yes",))


def _fake(operator, length, causal, budget, rel=0.5):
    return {"operator": operator, "budget_name": "m" if budget is not None else None,
            "budget_value": budget, "length": length, "causal": causal, "seed": 0,
            "dtype": "float64", "rel_error": rel, "max_abs_error": 1.0, "row_kl": None,
            "time_s": 0.5, "exact_time_s": 1.0, "notes": ""}


def test_format_table_sorted_and_formatted():
    records = [_fake("b", 16, False, 8), _fake("a", 32, False, 8), _fake("a", 16, True, 4),
               _fake("a", 16, False, 64), _fake("a", 16, False, 8, rel=1.23456e-3)]
    lines = format_table(records).splitlines()
    assert lines[0].split()[:3] == ["operator", "budget", "L"]
    body = [line.split() for line in lines[2:]]
    assert [(b[0], b[1], b[2], b[3]) for b in body] == [
        ("a", "m=8", "16", "no"), ("a", "m=64", "16", "no"), ("a", "m=8", "32", "no"),
        ("a", "m=4", "16", "yes"), ("b", "m=8", "16", "no"),
    ]
    assert body[0][6] == "1.235e-03" and body[0][8] == "-" and body[0][-1] == "2.00x"
    assert len({len(line) for line in lines[:2]}) == 1  # fixed width header/rule
    assert format_table([]) == "(no records)"


def test_write_records_rejects_unknown_extension(tmp_path):
    with pytest.raises(ValueError, match=r"\.csv, \.json"):
        write_records([_fake("a", 16, False, 8)], tmp_path / "out.txt")


def test_masked_operators_on_the_torch_backend():
    """The exact reference of a masked operator runs on the float64 numpy copies."""
    records = run_study(["performer+toeplitz", "performer+exp-decay"], lengths=(16,), dim=8,
                        value_dim=4, heads=1, causal=(False, True), backend="torch",
                        repeats=1)
    assert records and all(r["rel_error"] is not None for r in records), records[0]["notes"]
    assert all(r["backend"] == "torch" for r in records)

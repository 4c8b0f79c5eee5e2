"""Vectorized populations vs a loop vs one member (issue 17).

Usage::

    python benchmarks/bench_population.py [--quick] [--threads N] [--output PATH]

For ``P`` in {1, 2, 4, …, 64} members that differ in one batchable hyper-parameter,
time (a) the loop of ``P`` calls, (b) the ``vectorize="auto"`` call
(:func:`structattn.population.population_map`: one batched call, or the loop where the
documented rule picks it — the record says which path ran), (c) a single member's call; report

* ``speedup(P) = T_loop(P) / T_vec(P)``, the median over the paired (alternating)
  repeats of their ratio (target on small problems: ``speedup(32) >= 3``;
  on large problems: ``>= 0.9``, never materially slower than the loop);
* ``overhead(P) = T_vec(P) / T_single`` (``≈ P`` when compute bound on a CPU; the
  paper's "little more than one member" is an accelerator claim).

Operators: exact softmax over a temperature grid, FAVOR+ (m = 128) over per-member
seeds, FAVOR+ with a decayed causal mask over a ``γ`` grid.  Problems: small
(L = 128, d = 32) with P up to 64, large (L = 4096, d = 64) with P up to 8 (P = 64 would
need 4 GiB of float32 softmax weights per call).  float32, one head, numpy and torch.
Per-call times are medians of CPU time of this process (``time.process_time``; the wall
clock is recorded too), loop and vectorized calls alternating, after one warm-up call,
with ``--threads`` threads (default 1) for torch, numba and the BLAS/OpenMP pools alike;
the speedup of the per-call minima is recorded and printed next to the medians' (the
machine is shared and noisy).
A JSON record is written under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from functools import partial

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness as H

SIZES = {"small": (128, 32), "large": (4096, 64)}
M = 128


def _timed(fn, repeats: int) -> dict:
    return _timed_interleaved([fn], repeats)[0]


def _timed_interleaved(fns: list, repeats: int) -> list[dict]:
    """Time ``fns`` in alternation (one call of each per round, after one warm-up call
    of each), so that drifts of the machine's speed hit every variant alike."""
    for fn in fns:
        fn()  # warm-up
    walls: list[list[float]] = [[] for _ in fns]
    cpus: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            walls[i].append(time.perf_counter() - t0)
            cpus[i].append(time.process_time() - c0)
    return [{"cpu_s": statistics.median(c), "wall_s": statistics.median(w),
             "cpu_times_s": c, "wall_times_s": w} for c, w in zip(cpus, walls, strict=True)]


def _limit_threads(n: int) -> None:
    """Run torch, numba and the BLAS/OpenMP pools (threadpoolctl) on ``n`` threads.

    ``process_time`` counts every thread's CPU time, so a BLAS pool left at the core
    count adds its spin-waiting to both the loop and the vectorized timings (in the
    first full run only torch was limited: OpenBLAS and numba ran 2 threads).
    """
    import torch

    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)
    except ImportError:  # pragma: no cover - threadpoolctl is a numba/sklearn dependency
        pass
    try:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    except ImportError:  # pragma: no cover
        pass


def _thread_counts() -> dict:
    """The thread counts in effect (torch, numba, BLAS pools by threadpoolctl)."""
    import torch

    out = {"torch": torch.get_num_threads()}
    try:
        import numba

        out["numba"] = numba.get_num_threads()
    except ImportError:  # pragma: no cover
        pass
    try:
        from threadpoolctl import threadpool_info

        out["pools"] = {f"{i['internal_api']}:{os.path.basename(i['filepath'])}":
                        i["num_threads"] for i in threadpool_info()}
    except ImportError:  # pragma: no cover
        pass
    return out


def _grid(method: str, P: int) -> tuple[str, dict, dict]:
    import numpy as np

    if method == "softmax":
        return "exact", {"scale": np.linspace(0.05, 0.3, P)}, {}
    if method == "favor":
        return "performer", {"seed": np.arange(P)}, {"num_features": M}
    return "performer", {"gamma": np.linspace(0.99, 0.999, P)}, {"num_features": M, "seed": 0}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of torch, numba and the BLAS/OpenMP pools (default 1)")
    parser.add_argument("--output", default=None,
                        help="record path (default benchmarks/results/population.json)")
    args = parser.parse_args(argv)
    pops = {"small": (1, 2, 4, 8, 16, 32, 64), "large": (1, 2, 4, 8)}
    if args.quick:
        pops = {"small": (1, 4, 32), "large": ()}
    config = {"quick": args.quick, "threads": args.threads, "sizes": SIZES, "m": M,
              "populations": pops, "dtype": "float32"}
    rec = H.Record("population", config)
    import numpy as np
    import torch

    from structattn.population import population_map

    _limit_threads(args.threads)  # after Record(): it resets thread counts
    rec.data["config"]["threads_applied"] = _thread_counts()
    rows = []
    for size, (L, d) in SIZES.items():
        if not pops[size]:
            continue
        rng = np.random.default_rng(0)
        base = [rng.standard_normal((1, L, d)).astype(np.float32) * 0.5 for _ in range(3)]
        for backend in ("numpy", "torch"):
            qkv = base if backend == "numpy" else [torch.from_numpy(x) for x in base]
            for method in ("softmax", "favor", "decay"):
                name, _, fixed = _grid(method, 1)
                # large softmax calls take ~1 s: fewer repeats there
                repeats = 3 if (size == "large" and method == "softmax") else 7
                one_grid = _grid(method, 1)[1]
                single = _timed(partial(population_map, name, one_grid, *qkv,
                                        vectorize=False, **fixed), repeats)
                with torch.no_grad():
                    for P in pops[size]:
                        _, grid, fixed = _grid(method, P)
                        loop, vec = _timed_interleaved(
                            [partial(population_map, name, grid, *qkv, vectorize=False,
                                     **fixed),
                             partial(population_map, name, grid, *qkv, vectorize="auto",
                                     **fixed)], repeats)
                        _, info = population_map(name, grid, *qkv, vectorize="auto",
                                                 return_info=True, **fixed)
                        vec["path"] = "vectorized" if info.vectorized else "loop"
                        vec["reason"] = info.reason
                        # the rounds are paired (loop and vectorized alternate): the median
                        # of the per-round ratios is robust to a drift of the machine's
                        # speed during the measurement, the ratio of medians is not
                        speedup = statistics.median(
                            a / b for a, b in zip(loop["cpu_times_s"], vec["cpu_times_s"],
                                                  strict=True))
                        speedup_of_medians = loop["cpu_s"] / vec["cpu_s"]
                        speedup_min = min(loop["cpu_times_s"]) / min(vec["cpu_times_s"])
                        overhead = vec["cpu_s"] / single["cpu_s"]
                        rec.add_measurement({"size": size, "L": L, "d": d, "backend": backend,
                                             "method": method, "P": P, "loop": loop,
                                             "vectorized": vec, "single": single,
                                             "speedup": speedup, "speedup_min": speedup_min,
                                             "speedup_of_medians": speedup_of_medians})
                        rows.append([size, backend, method, P, vec["path"], loop["cpu_s"],
                                     vec["cpu_s"], speedup, overhead])
                        print(f"{size:5s} {backend:5s} {method:7s} P={P:3d} "
                              f"loop {loop['cpu_s']:.4f}s vec {vec['cpu_s']:.4f}s "
                              f"({vec['path']}) speedup {speedup:5.2f} "
                              f"(of minima {speedup_min:5.2f}) "
                              f"overhead {overhead:6.2f}", flush=True)
    rec.add_table(
        "population", "Population of P members: loop vs one vectorized call",
        ["size", "backend", "method", "P", "auto path", "loop (s)", "vectorized (s)",
         "speedup", "overhead vs 1"], rows,
        notes=["small: L = 128, d = 32; large: L = 4096, d = 64; one head, float32; "
               "softmax: temperature grid; favor: FAVOR+ m = 128, per-member seeds; "
               "decay: FAVOR+ m = 128 with a decayed causal mask, γ grid.",
               "speedup = T_loop / T_vec, the median of the per-round ratios of the "
               "alternating loop and vectorized calls (targets: >= 3 at P = 32 on small "
               "problems, >= 0.9 on large ones); loop (s) and vectorized (s) are medians; "
               "overhead = T_vec / T_single (1 member).",
               "T_vec: population_map(vectorize='auto'); 'auto path' says what ran (random-"
               "feature operators loop above LOOP_ABOVE tokens, where one call's own kernels "
               "are as fast per member).",
               f"time: median CPU seconds of this process per call, {args.threads} "
               "thread(s), after a warm-up call; loop and vectorized calls alternate; 7 repeats (3 "
               "for the ~1 s large softmax calls)."])
    print(rec.write(args.output))


if __name__ == "__main__":
    main()

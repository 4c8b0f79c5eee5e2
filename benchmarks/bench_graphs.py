"""structattn.graphs benchmarks: sparse attention on a graph vs dense masked attention.

Usage::

    python benchmarks/bench_graphs.py [--quick] [--sections sparse,kernels] [--out res.json]

Section ``sparse``: batch x heads = 1 x 1, d = d_v = 64, float32, N in {1k, 4k, 16k}
(``--quick``: 1k, 4k), patterns

* ``hypercube``      token-level Gray-code hypercube, ``nnz = N(log2 N + 1)``;
* ``bigbird``        token-level window ``w = 3`` ∪ 2 globals ∪ 8 random keys per row;
* ``hypercube-b16``  the official block layout (``hypercube(N/16) ⊗ 1_{16x16}``);
* ``bigbird-b16``    the official LRA BigBird preset (3 window, 1 global, 4 random blocks
                     of 16);

each run, in the same process and run, by

* ``sparse numba``   :func:`structattn.graphs.sparse_attention`, numba online-softmax kernel;
* ``sparse torch``   the same function on torch tensors (gather + segment reduce), forward,
                     and forward + backward;
* ``dense masked``   :func:`structattn.softmax_attention` with the dense boolean mask
                     (``O(N²)`` time and memory);
* ``sdpa``           ``torch.nn.functional.scaled_dot_product_attention`` with the dense
                     boolean mask (``attn_mask``, True = attend).

Reported: median times (one warm-up call, numba compile excluded), ratios dense/sparse
and sdpa/sparse, the agreement of the sparse output with SDPA's, and "others (cores)":
CPU used by other processes while a row ran (the machine is shared; times of rows with a
high value are inflated).

Section ``kernels`` (graph-kernel masks) is added from ``benchmarks/_bench_graph_kernels.py``
when that file exists (its ``run(args) -> list[dict]``).
Timings are printed and recorded, never asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness as H

from structattn import softmax_attention
from structattn.graphs import AttentionGraph, bigbird, hypercube, sparse_attention

D = 64
DTYPE = np.float32

PATTERNS: dict[str, Callable[[int], AttentionGraph]] = {
    "hypercube": hypercube,
    "bigbird": lambda n: bigbird(n, 3, 2, 8, seed=0),
    "hypercube-b16": lambda n: hypercube(n, block_size=16),
    "bigbird-b16": lambda n: bigbird(n, 1, 1, 4, seed=0, block_size=16),
}


def _timed(fn: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """Median time of ``fn`` plus the other processes' CPU load while it ran (cores)."""
    b0, c0 = H.cpu_busy_seconds(), H.process_cpu_seconds()
    t0 = time.perf_counter()
    res = H.time_calls(fn, repeats=repeats, budget_s=20.0)
    wall = time.perf_counter() - t0
    b1, c1 = H.cpu_busy_seconds(), H.process_cpu_seconds()
    res["other_cores"] = (None if b0 is None or b1 is None
                          else max(0.0, (b1 - b0) - (c1 - c0)) / wall)
    return res


def run_sparse(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The ``sparse`` section: one row per (pattern, N); prints its table."""
    import torch

    lengths = [1024, 4096] if args.quick else [1024, 4096, 16384]
    repeats = 1 if args.quick else args.repeats
    rows: list[dict[str, Any]] = []
    print("\n-- sparse attention on a graph vs dense masked attention (float32, "
          f"batch x heads = 1 x 1, d = d_v = {D})", flush=True)
    for N in lengths:
        rng = np.random.default_rng(N)
        q, k, v = (rng.standard_normal((1, N, D), dtype=DTYPE) for _ in range(3))
        tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
        for name, make in PATTERNS.items():
            g = make(N)
            row: dict[str, Any] = {"pattern": name, "N": N, "nnz": g.nnz,
                                   "mean_degree": g.mean_degree, "density": g.density}
            t = _timed(lambda g=g, q=q, k=k, v=v: sparse_attention(
                q, k, v, g, backend="numba", check_finite=False), repeats)
            row["numba_s"], row["numba_first_s"] = t["median_s"], t["first_call_s"]
            loads = [t["other_cores"]]
            t = _timed(lambda g=g, tq=tq, tk=tk, tv=tv: sparse_attention(
                tq, tk, tv, g, check_finite=False), repeats)
            row["torch_s"] = t["median_s"]
            loads.append(t["other_cores"])

            def fwd_bwd(g=g, qkv=(tq, tk, tv)):
                a, b, c = (x.clone().requires_grad_(True) for x in qkv)
                sparse_attention(a, b, c, g, check_finite=False).sum().backward()

            t = _timed(fwd_bwd, repeats)
            row["torch_fwd_bwd_s"] = t["median_s"]
            loads.append(t["other_cores"])
            A = g.to_dense()
            dense_reps = 1 if N >= 16384 else repeats
            t = _timed(lambda A=A, q=q, k=k, v=v: softmax_attention(
                q, k, v, mask=A, backend="numpy", check_finite=False), dense_reps)
            row["dense_s"] = t["median_s"]
            loads.append(t["other_cores"])
            tA = torch.from_numpy(A)
            with torch.no_grad():
                t = _timed(lambda tA=tA, tq=tq, tk=tk, tv=tv:
                           torch.nn.functional.scaled_dot_product_attention(
                               tq, tk, tv, attn_mask=tA), dense_reps)
                row["sdpa_s"] = t["median_s"]
                loads.append(t["other_cores"])
                ref = torch.nn.functional.scaled_dot_product_attention(
                    tq, tk, tv, attn_mask=tA).numpy()
            got = sparse_attention(q, k, v, g, backend="numba")
            row["max_rel_diff_vs_sdpa"] = float(np.abs(got - ref).max() / np.abs(ref).max())
            known = [x for x in loads if x is not None]
            row["other_cores"] = max(known) if known else None
            del A, tA, ref
            rows.append(row)
            print(f"   N={N:6d} {name:<14} numba {row['numba_s']:.4f}s  torch "
                  f"{row['torch_s']:.4f}s  dense {row['dense_s']:.3f}s  sdpa "
                  f"{row['sdpa_s']:.3f}s", flush=True)
    table = [[r["N"], r["pattern"], r["nnz"], r["mean_degree"], r["numba_s"], r["torch_s"],
              r["torch_fwd_bwd_s"], r["dense_s"], r["sdpa_s"], r["dense_s"] / r["numba_s"],
              r["sdpa_s"] / r["numba_s"], r["sdpa_s"] / r["torch_s"],
              r["max_rel_diff_vs_sdpa"], r["other_cores"]] for r in rows]
    print(H.format_table(
        ["N", "pattern", "nnz", "deg", "numba (s)", "torch (s)", "torch f+b (s)",
         "dense (s)", "sdpa (s)", "dense/numba", "sdpa/numba", "sdpa/torch",
         "rel diff vs sdpa", "others (cores)"], table))
    print("   ratios: baseline median / sparse median, same run; others (cores): the largest "
          "CPU load of other processes over the row's measurements")
    return rows


SECTIONS: dict[str, Callable[[argparse.Namespace], list[dict[str, Any]]]] = {
    "sparse": run_sparse,
}

# the graph-kernel-mask section lives in its own file; merged when present
_KERNELS_FILE = Path(__file__).with_name("_bench_graph_kernels.py")
if _KERNELS_FILE.exists():
    _spec = importlib.util.spec_from_file_location("_bench_graph_kernels", _KERNELS_FILE)
    _kernels = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_kernels)
    SECTIONS["kernels"] = _kernels.run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short run (smaller sizes, 1 repeat)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated sections to run, from {sorted(SECTIONS)} "
                        "(default: all)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", help="write all measurements as JSON to this path")
    if "kernels" in SECTIONS:  # the kernels section reads args.dense_max (getattr default)
        p.add_argument("--dense-max", type=int, default=10_000,
                       help="kernels section: largest L for the dense baseline")
    args = p.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {unknown}; available: {sorted(SECTIONS)}")

    info = H.environment_info()
    info["other_load_before"] = H.other_load(2.0)
    load = info["other_load_before"]
    H.print_header("bench_graphs: attention graphs", info, [
        f"sections {chosen}, quick={args.quick}",
        "other processes' CPU load before the run: "
        + ("unknown" if load is None else f"{load:.2f} cores (2 s sample)"),
    ])
    results: dict[str, Any] = {"environment": info}
    for name in chosen:
        results[name] = SECTIONS[name](args)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())

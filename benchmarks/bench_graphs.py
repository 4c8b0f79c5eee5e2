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

Block patterns (``-b16``) run as batched GEMMs over gathered key/value blocks on every
backend (:mod:`structattn.graphs.block_gemm`); token patterns by the token kernels.
Roofline columns (issue #21): flops ``2·nnz·(d + d_v)`` (exponentials not counted) and
bytes moved (:func:`sparse_bytes`: token path ``q`` and the output once plus one key
row, one value row and one int64 index per edge; block path ``q`` and the output once
plus one key and value block and one index per block edge), achieved GB/s of the numba
backend's time, its fraction of the stream triad, and the fraction of the bound
``max(flops / batched GEMM peak, bytes / stream)`` measured in the same run.

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
from _flex import flex_available, flex_sparse

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


def sparse_bytes(N: int, nnz: int, d: int, dv: int, block: int | None,
                 itemsize: int = 4) -> int:
    """Bytes moved by graph sparse attention (module docstring): token or block path."""
    if block is None:
        return (N * d + nnz * (d + dv) + N * dv) * itemsize + 8 * nnz
    nb = nnz // (block * block)  # block edges
    return (N * d + nb * block * (d + dv) + N * dv) * itemsize + 8 * nb


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
    repeats = 3 if args.quick else args.repeats
    rows: list[dict[str, Any]] = []
    from structattn.graphs.block_gemm import detect_block_layout

    roof = H.machine_roofline(quick=args.quick)
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
            found = detect_block_layout(g)
            row["block"] = None if found is None else found[1]
            row["flops"] = 2 * g.nnz * (D + D)
            row["bytes"] = sparse_bytes(N, g.nnz, D, D, row["block"])
            t = _timed(lambda g=g, q=q, k=k, v=v: sparse_attention(
                q, k, v, g, backend="numba", check_finite=False), repeats)
            row["numba_s"], row["numba_first_s"] = t["median_s"], t["first_call_s"]
            row["numba_times_s"] = t["times_s"]
            loads = [t["other_cores"]]
            t = _timed(lambda g=g, tq=tq, tk=tk, tv=tv: sparse_attention(
                tq, tk, tv, g, check_finite=False), repeats)
            row["torch_s"], row["torch_times_s"] = t["median_s"], t["times_s"]
            loads.append(t["other_cores"])

            def fwd_bwd(g=g, qkv=(tq, tk, tv)):
                a, b, c = (x.clone().requires_grad_(True) for x in qkv)
                sparse_attention(a, b, c, g, check_finite=False).sum().backward()

            t = _timed(fwd_bwd, repeats)
            row["torch_fwd_bwd_s"], row["torch_fwd_bwd_times_s"] = t["median_s"], t["times_s"]
            loads.append(t["other_cores"])
            A = g.to_dense()
            dense_reps = 1 if N >= 16384 else repeats
            t = _timed(lambda A=A, q=q, k=k, v=v: softmax_attention(
                q, k, v, mask=A, backend="numpy", check_finite=False), dense_reps)
            row["dense_s"], row["dense_times_s"] = t["median_s"], t["times_s"]
            loads.append(t["other_cores"])
            tA = torch.from_numpy(A)
            with torch.no_grad():
                t = _timed(lambda tA=tA, tq=tq, tk=tk, tv=tv:
                           torch.nn.functional.scaled_dot_product_attention(
                               tq, tk, tv, attn_mask=tA), dense_reps)
                row["sdpa_s"], row["sdpa_times_s"] = t["median_s"], t["times_s"]
                loads.append(t["other_cores"])
                ref = torch.nn.functional.scaled_dot_product_attention(
                    tq, tk, tv, attn_mask=tA).numpy()
            if args.flex_ok:
                fn, finfo = flex_sparse(A)
                tq4, tk4, tv4 = (x[None] for x in (tq, tk, tv))
                t = _timed(lambda fn=fn, a=(tq4, tk4, tv4): fn(*a), repeats)
                row.update(flex_s=t["median_s"], flex_first_s=t["first_call_s"],
                           flex_times_s=t["times_s"], **finfo)
                loads.append(t["other_cores"])
                fo = fn(tq4, tk4, tv4)[0].numpy()
                row["flex_max_rel_diff_vs_sdpa"] = float(np.abs(fo - ref).max()
                                                         / np.abs(ref).max())
            got = sparse_attention(q, k, v, g, backend="numba")
            row["max_rel_diff_vs_sdpa"] = float(np.abs(got - ref).max() / np.abs(ref).max())
            bound = H.roofline_bound(row["flops"], row["bytes"], roof, "float32",
                                     gemm_kind="batched")
            row["numba_gbs"] = row["bytes"] / row["numba_s"] / 1e9
            row["numba_stream_frac"] = row["numba_gbs"] / roof["stream_gbs"]
            row["numba_roofline_frac"] = bound / row["numba_s"]
            row["torch_roofline_frac"] = bound / row["torch_s"]
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
    print(H.format_table(
        ["N", "pattern", "path", "GFLOP", "MiB moved", "numba (s)", "numba GFLOP/s",
         "numba GB/s", "of stream", "of roofline (numba)", "of roofline (torch)"],
        [[r["N"], r["pattern"], "token" if r["block"] is None else f"block {r['block']}",
          r["flops"] / 1e9, r["bytes"] / 2**20, r["numba_s"], r["flops"] / r["numba_s"] / 1e9,
          r["numba_gbs"], r["numba_stream_frac"], r["numba_roofline_frac"],
          r["torch_roofline_frac"]] for r in rows]))
    print(f"   roofline (same run): batched float32 GEMM "
          f"{roof['gflops']['float32']['batched']:.1f} GFLOP/s, stream triad "
          f"{roof['stream_gbs']:.1f} GB/s; bytes: see sparse_bytes")
    return rows


def _r(a, b):
    return None if a is None or b is None or b == 0 else a / b


def _table_sparse(rec, rows: list[dict[str, Any]]) -> None:
    table = [[r["N"], r["pattern"], r["nnz"], r["mean_degree"], r["numba_s"], r["torch_s"],
              r.get("flex_s"), r["sdpa_s"], r["dense_s"], _r(r.get("flex_s"), r["numba_s"]),
              _r(r["sdpa_s"], r["numba_s"]), _r(r["sdpa_s"], r["torch_s"]),
              r["torch_fwd_bwd_s"], r.get("block_sparsity"),
              "token" if r.get("block") is None else f"block GEMM ({r['block']})",
              r.get("bytes", 0) / 2**20, r.get("numba_gbs"), r.get("numba_stream_frac"),
              r.get("numba_roofline_frac"), r["other_cores"]]
             for r in rows]
    rec.add_table(
        "sparse", "Sparse attention on a graph vs SDPA and block-sparse flex_attention, "
        "forward", ["N", "pattern", "nnz", "mean degree", "sa numba fwd (s)",
                    "sa torch fwd (s)", "flex_attention compiled fwd (s)",
                    "SDPA + dense bool mask fwd (s)", "numpy dense masked fwd (s)",
                    "x vs flex (numba)", "x vs SDPA (numba)", "x vs SDPA (torch)",
                    "sa torch fwd+bwd (s)", "flex blocks skipped", "path",
                    "MiB moved", "numba GB/s", "of stream triad", "of roofline bound (numba)",
                    "others (cores)"], table,
        ["Batch x heads = 1 x 1, d = d_v = 64, float32, standard-normal inputs; median of "
         "the repeats after one warm-up call (numba compile and flex_attention's "
         "torch.compile excluded: see the record's flex_first_s), in-process. SDPA "
         "receives the dense L x L boolean mask (its math path); flex_attention "
         "(torch.compile, inductor C++ on the CPU) skips the 128 x 128 blocks with no "
         "edge ('flex blocks skipped' = fraction of such blocks) and reads the mask "
         "inside the others. Ratios: baseline time / structattn time (> 1: structattn "
         "faster), forward vs forward. Path: block patterns run as batched GEMMs over "
         "gathered key/value blocks (structattn.graphs.block_gemm), token patterns by "
         "the token kernels. Bytes moved: q and the output once plus, per edge (token "
         "path) or block edge (block path), one key and one value row/block and an int64 "
         "index; GB/s from the numba time; roofline bound = max(2 nnz (d + d_v) flops / "
         "batched float32 GEMM peak, bytes / stream triad), both measured in the same run."])


def _table_kernels(rec, rows: list[dict[str, Any]]) -> None:
    tree = [r for r in rows if r.get("part") == "tree"]
    table = []
    for r in tree:
        with_build = (None if r["dense_s"] is None or r["dense_build_s"] is None
                      else r["dense_s"] + r["dense_build_s"])
        mwith = (None if r["dense_masked_s"] is None or r["dense_build_s"] is None
                 else r["dense_masked_s"] + r["dense_build_s"])
        table.append([r["L"], r["height"], r["dp_s"], r["dp_ns_per_entry"], r["dp_torch_s"],
                      r["dense_s"], _r(r["dense_s"], r["dp_s"]),
                      r["dense_build_s"], _r(with_build, r["dp_s"]), r["dp_masked_s"],
                      r["dense_masked_s"], _r(r["dense_masked_s"], r["dp_masked_s"]),
                      _r(mwith, r["dp_masked_s"]), r.get("dp_bytes", 0) / 2**20,
                      r.get("dp_gbs"), r.get("dp_stream_frac"), r["max_rel_diff"],
                      r["others_cores"]])
    rec.add_table(
        "tree", "Tree-distance mask (r = 0.9): sibling-sum DP vs dense mask",
        ["L", "tree height", "DP M @ X (s)", "DP ns / (L·F)", "torch DP, 1 thread (s)",
         "dense M @ X (s)", "x vs dense (mask prebuilt)",
         "dense mask build (s)", "x vs dense (incl. mask build)", "DP masked product (s)",
         "dense masked product (s)", "x vs dense masked (prebuilt)",
         "x vs dense masked (incl. build)", "DP MiB moved", "DP GB/s",
         "DP of stream triad", "rel diff", "others (cores)"], table,
        ["Random recursive tree, float64, X: L x 64 (masked product: m = 16, d_v + 1 = 17 "
         "columns), numba DP; dense: BLAS with the L x L mask, only where it fits. "
         "'prebuilt' leaves out the all-pairs tree distances the dense mask needs; "
         "'incl. build' charges them once to the product (one product per mask). "
         "L = 10⁶: DP M @ X only. DP bytes moved: 7 float64 L x F streams (X read, up "
         "and down passes, output) plus 3 int64 index arrays; GB/s over the DP time, "
         "against the stream triad measured in the same run."])
    expo = next((r for r in rows if r.get("part") == "tree_exponents"), {})
    pairs = [(1_000, 10_000), (10_000, 100_000), (100_000, 1_000_000)]
    erows = []
    for key, label in (("dp", "DP M @ X"), ("dp_min", "DP M @ X, fastest repeat"),
                       ("dp_torch", "torch DP, 1 thread"), ("dp_masked", "DP masked product")):
        erows.append([label] + [expo.get(f"{key}_{lo}_{hi}") for lo, hi in pairs])
    rec.add_table(
        "tree_growth", "Tree-distance DP: growth exponents log(t(10L)/t(L)) / log 10",
        ["product", "10³ → 10⁴", "10⁴ → 10⁵", "10⁵ → 10⁶"], erows,
        ["From the times of the table above (1 = linear; the issue's target is ≤ 1.1)."])
    walks = [r for r in rows if r.get("part") == "random_walk"]
    rec.add_table(
        "walks", "Random-walk (GRF) mask on a 100 x 100 grid, L = 10⁴",
        ["num_walks", "sample (s)", "nnz(Ψ)+nnz(Ψ')", "matmat (s)", "others (cores)"],
        [[r["num_walks"], r["sample_s"], r["nnz"], r["matmat_s"], r["others_cores"]]
         for r in walks],
        ["Halting probability 0.5, modulation (1, 1/2, 1/8, 1/48); product with 64 "
         "columns; one warm-up call, median of the repeats, in-process."])


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
    p.add_argument("--no-flex", action="store_true",
                   help="skip the compiled flex_attention baseline (sparse section)")
    p.add_argument("--record", default=None,
                   help="JSON record path (default benchmarks/results/graphs.json)")
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
    rec = H.Record("graphs", config={"quick": args.quick, "sections": chosen,
                                     "repeats": 3 if args.quick else args.repeats,
                                     "dense_max": getattr(args, "dense_max", None),
                                     "d": D, "dtype": "float32 (sparse), float64 (kernels)"})
    args.flex_ok, flex_err = (flex_available() if "sparse" in chosen and not args.no_flex
                              else (False, "not requested"))
    rec.data["flex"] = {"available": args.flex_ok, "why_not": flex_err}
    print(f"   compiled flex_attention: {'yes' if args.flex_ok else 'no: ' + flex_err}")
    results: dict[str, Any] = {"environment": info}
    for name in chosen:
        results[name] = SECTIONS[name](args)
        for r in results[name]:
            rec.add_measurement({"section": name, **r})
    if "sparse" in results:
        _table_sparse(rec, results["sparse"])
    if "kernels" in results:
        _table_kernels(rec, results["kernels"])
    H.record_roofline(rec, H.machine_roofline(quick=args.quick))
    rec.write(args.record)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())

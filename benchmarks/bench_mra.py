"""MRA-2 / MRA-2-s against exact attention: time and peak memory on the CPU.

Usage::

    python benchmarks/bench_mra.py [--quick] [--out results.json]

batch x heads = 1 x 8, d = d_v = 64, float32, block size 32, forward pass, non-causal;
``L`` in {1024, 4096, 16384}, ``blocks_per_row`` in {4, 8, 16}:

* ``mra2-numba``    ``mra_attention(mode="full", backend="numba")``: block means, coarse
                    part with BLAS, the row-block-parallel numba kernel;
* ``mra2s-numba``   the same with ``mode="sparse"`` (MRA-2-s);
* ``mra2-numpy``    ``mode="full"``, ``backend="numpy"``: the array-API row-panel core
                    (each block row's selected key/value blocks gathered into one panel,
                    batched matmuls, exact row softmax); 8 blocks per row only;
* ``mra2-torch``    ``mode="full"`` on torch CPU tensors (device selection, gather /
                    index_add core, under ``torch.inference_mode``);
* ``exact-numpy``   ``structattn.softmax_attention`` on numpy (materialises ``L x L``);
                    at 16384 (8.6 GB per score copy) it runs one head at a time and the
                    row says so;
* ``sdpa``          ``torch.nn.functional.scaled_dot_product_attention`` on CPU (fused,
                    O(L) memory).

Each configuration runs in a fresh process forked from a zygote that only imported the
libraries (:mod:`_harness`): one warm-up call (numba compile or cache load, reported),
the median of the timed repeats, then one call under :func:`_harness.measure_peak`
(extra resident memory at the peak, inputs excluded).  The issue's targets — MRA-2 at
least 4x faster and 10x less memory than exact attention at L = 4096 with 8 blocks per
row (the authors' GPU ratio was 4.4x / 14x, forward + backward) — are printed as met /
not met against both exact baselines; nothing is asserted.

Roofline (issue #21): every MRA configuration is split into its two hot paths, each
timed in the worker (median of repeats) and reported with counted flops and bytes and
the fraction of the bound ``max(flops / batched-GEMM peak, bytes / stream bandwidth)``
measured in the same run (:func:`_harness.machine_roofline`):

* ``prepare`` — padding, block sums of ``q, k, v``, coarse scores ``Ŝ`` and the block
  selection: ``3 L d + 2 n_b² d`` flops, ``3 L d`` elements read;
* ``attend``  — coarse part and exact blocks (``full`` minus ``prepare``):
  ``2 k b² (d + d_v)`` flops for the exact blocks plus ``2 n_b² d_v`` for the coarse
  product (the ``k b²`` exponentials are not counted), ``(3 L d + L d_v)`` elements
  (``q, k, v`` read once, output written once: compulsory traffic; re-reads of the
  gathered key/value blocks hit the cache and are not counted);
* ``total``   — both, against the sum of the two bounds.

Per head, ``n_b = L / b`` and ``k = n_b · blocks_per_row``; times ``batch x heads``.
Other processes' CPU load is sampled around every configuration (the machine is
shared): read timings with it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness as H

BATCH, HEADS, D, BLOCK = 1, 8, 64, 32
SEED = 0
METHODS = ("mra2-numba", "mra2s-numba", "mra2-numpy", "mra2-torch", "exact-numpy", "sdpa")
MRA_METHODS = ("mra2-numba", "mra2s-numba", "mra2-numpy", "mra2-torch")
NUMPY_BPR = 8  # mra2-numpy runs at this blocks_per_row only (keeps --quick short)
OTHER_LOAD_WARN = 0.5
PER_HEAD_FROM = 16384  # exact-numpy runs one head at a time from this length


def _call(method: str, L: int, bpr: int | None):
    import numpy as np

    rng = np.random.default_rng(SEED)
    q, k, v = (rng.standard_normal((BATCH, HEADS, L, D), dtype=np.float32) for _ in range(3))
    note = ""
    if method in ("mra2-numba", "mra2s-numba", "mra2-numpy"):
        from structattn.mra import mra_attention

        mode = "sparse" if method == "mra2s-numba" else "full"
        be = "numpy" if method == "mra2-numpy" else "numba"

        def call():
            return mra_attention(q, k, v, block_size=BLOCK, blocks_per_row=bpr, mode=mode,
                                 backend=be, check_finite=False)
    elif method == "mra2-torch":
        import torch

        from structattn.mra import mra_attention

        qt, kt, vt = (torch.from_numpy(x) for x in (q, k, v))

        def call():
            with torch.inference_mode():
                return mra_attention(qt, kt, vt, block_size=BLOCK, blocks_per_row=bpr,
                                     backend="torch", check_finite=False)
    elif method == "exact-numpy":
        from structattn import softmax_attention

        if L >= PER_HEAD_FROM:
            note = "one head at a time"

            def call():
                out = np.empty_like(v)
                for h in range(HEADS):
                    out[:, h] = softmax_attention(q[:, h], k[:, h], v[:, h], backend="numpy",
                                                  check_finite=False)
                return out
        else:
            def call():
                return softmax_attention(q, k, v, backend="numpy", check_finite=False)
    elif method == "sdpa":
        import torch

        qt, kt, vt = (torch.from_numpy(x) for x in (q, k, v))

        def call():
            with torch.inference_mode():
                return torch.nn.functional.scaled_dot_product_attention(qt, kt, vt)
    else:
        raise ValueError(method)
    return call, note


def mra_costs(L: int, bpr: int, mode: str, *, heads: int = BATCH * HEADS, d: int = D,
              b: int = BLOCK, itemsize: int = 4) -> dict[str, dict[str, float]]:
    """Counted flops and bytes of MRA's hot paths (see the module docstring).

    Returns ``{"prepare": {"flops", "bytes"}, "attend": {...}}`` for ``heads`` heads of
    length ``L`` (``d = d_v``); ``mode="sparse"`` has no coarse product.
    """
    n = -(-L // b)
    k = n * min(bpr, n)
    prep = {"flops": heads * (3 * L * d + 2 * n * n * d), "bytes": heads * 3 * L * d * itemsize}
    att_flops = 2 * k * b * b * (d + d) + (2 * n * n * d if mode == "full" else 0)
    att = {"flops": heads * att_flops, "bytes": heads * 4 * L * d * itemsize}
    return {"prepare": prep, "attend": att}


def _prepare_call(method: str, L: int, bpr: int):
    """The ``prepare`` hot path (blocking, coarse scores, selection) of an MRA method."""
    import numpy as np

    from structattn.mra._prepare import _prepare

    rng = np.random.default_rng(SEED)
    q, k, v = (rng.standard_normal((BATCH, HEADS, L, D), dtype=np.float32) for _ in range(3))
    be = {"mra2-numba": "numba", "mra2s-numba": "numba", "mra2-numpy": "numpy"}.get(method)
    if method == "mra2-torch":
        import torch

        q, k, v = (torch.from_numpy(x) for x in (q, k, v))
        be = "torch"
    kw = dict(block_size=BLOCK, blocks_per_row=bpr, num_blocks=None,
              mode="sparse" if method == "mra2s-numba" else "full", prior_first=0,
              prior_diag=0, key_padding_mask=None, scale=None, selection=None,
              backend=be, check_finite=False, device_selection=be == "torch")

    def call():
        return _prepare(q, k, v, **kw)
    return call


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration, in its own process."""
    call, note = _call(spec["method"], spec["L"], spec.get("bpr"))
    res: dict[str, Any] = dict(spec)
    res.update(H.time_calls(call, repeats=spec["repeats"], budget_s=spec["budget_s"]))
    if spec["method"] in MRA_METHODS:
        prep = H.time_calls(_prepare_call(spec["method"], spec["L"], spec["bpr"]),
                            repeats=spec["repeats"], budget_s=spec["budget_s"])
        res["prepare_s"] = prep["median_s"]
    H.strict_malloc()
    mem = H.measure_peak(call)
    res.update(peak_extra_bytes=mem["peak_extra_bytes"], mem_method=mem["method"], note=note)
    res["cpu_s"] = H.process_cpu_seconds()
    return res


def _preload() -> None:
    import numba  # noqa: F401
    import numpy  # noqa: F401
    import torch
    import torch.nn.functional  # noqa: F401

    import structattn
    import structattn.backends.numba.mra
    import structattn.mra  # noqa: F401


def _compile_probe() -> float:
    """First MRA call in this process (numba compile or cache load), seconds."""
    import numpy as np

    from structattn.mra import mra_attention

    x = np.random.default_rng(0).standard_normal((1, 2, 256, D), dtype=np.float32)
    t0 = time.perf_counter()
    mra_attention(x, x, x, block_size=BLOCK, blocks_per_row=2, backend="numba")
    return time.perf_counter() - t0


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="L in {1024, 4096}, 1 repeat")
    p.add_argument("--out", help="write all measurements as JSON to this path")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--budget", type=float, default=20.0,
                   help="stop timed repeats of a configuration after this many seconds")
    p.add_argument("--record", default=None,
                   help="write the JSON record here (default benchmarks/results/mra.json)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--zygote", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        H.worker_emit(worker(json.loads(args.worker)))
        return 0
    if args.zygote:
        H.zygote_serve(worker, _preload)
        return 0

    lengths = [1024, 4096] if args.quick else [1024, 4096, 16384]
    bprs = [4, 8, 16]
    repeats = args.repeats or (3 if args.quick else 5)
    info = H.environment_info()
    info["other_load_before"] = H.other_load(2.0)
    load = info["other_load_before"]
    H.print_header(
        "bench_mra: MRA-2 / MRA-2-s vs exact attention, batch x heads = 1 x 8, d = 64, "
        "float32, block 32, forward", info,
        [f"lengths {lengths}, blocks_per_row {bprs}, timed repeats <= {repeats} (median)",
         "each configuration in a fresh process forked from an import-only zygote",
         f"other processes' CPU load before the run: "
         f"{'unknown' if load is None else f'{load:.2f} cores'} (2 s sample)"],
    )
    print(f"   numba first call (compile or cache load, this process): "
          f"{_compile_probe():.2f} s", flush=True)

    rec = H.Record("mra", config={"quick": args.quick, "lengths": lengths,
                                  "blocks_per_row": bprs, "repeats": repeats,
                                  "budget_s": args.budget, "batch": BATCH, "heads": HEADS,
                                  "d": D, "block_size": BLOCK, "dtype": "float32",
                                  "pass": "forward"})
    server = H.ForkServer(os.path.abspath(__file__), dict(os.environ))
    server.start()
    results: list[dict[str, Any]] = []
    try:
        for L in lengths:
            specs = [{"method": m, "L": L, "bpr": r} for r in bprs for m in MRA_METHODS
                     if r <= L // BLOCK and (m != "mra2-numpy" or r == NUMPY_BPR)]
            specs += [{"method": "exact-numpy", "L": L}, {"method": "sdpa", "L": L}]
            for spec in specs:
                reps = 1 if spec["method"] == "exact-numpy" and L >= PER_HEAD_FROM else repeats
                spec.update(repeats=reps, budget_s=args.budget)
                b0, t0 = H.cpu_busy_seconds(), time.perf_counter()
                r = server.run(spec)
                b1, wall = H.cpu_busy_seconds(), time.perf_counter() - t0
                r.update({k: spec[k] for k in ("method", "L")}, bpr=spec.get("bpr"))
                if b0 is not None and b1 is not None and "cpu_s" in r:
                    r["other_cpu_cores"] = max(0.0, (b1 - b0) - r["cpu_s"]) / wall
                results.append(r)
                if "error" in r:
                    print(f"   L={L} {spec['method']} bpr={spec.get('bpr')}: ERROR "
                          f"{r['error'][-300:]}", flush=True)
                else:
                    print(f"   L={L:6d} {spec['method']:12s} bpr={spec.get('bpr')!s:4s} "
                          f"{r['median_s']:.4f} s  peak +{r['peak_extra_bytes'] / H.MiB:.1f} "
                          f"MiB  (others {r.get('other_cpu_cores', 0):.2f} cores)", flush=True)
    finally:
        server.close()

    ok = [r for r in results if "error" not in r]
    base = {(r["L"], r["method"]): r for r in ok if r["method"] in ("exact-numpy", "sdpa")}
    rows = []
    for r in ok:
        ex, sd = base.get((r["L"], "exact-numpy")), base.get((r["L"], "sdpa"))
        rows.append([
            r["L"], r["method"] + (f" ({r['note']})" if r.get("note") else ""), r["bpr"],
            r["median_s"] * 1e3, r["peak_extra_bytes"] / H.MiB,
            _ratio(ex and ex["median_s"], r["median_s"]),
            _ratio(ex and ex["peak_extra_bytes"], r["peak_extra_bytes"]),
            _ratio(sd and sd["median_s"], r["median_s"]),
            _ratio(sd and sd["peak_extra_bytes"], r["peak_extra_bytes"]),
            r.get("other_cpu_cores"),
        ])
    print()
    print(H.format_table(
        ["L", "method", "bpr", "time (ms)", "peak (MiB)", "exact/this t", "exact/this mem",
         "sdpa/this t", "sdpa/this mem", "others (cores)"], rows))

    target = next((r for r in ok if r["L"] == 4096 and r["method"] == "mra2-numba"
                   and r["bpr"] == 8), None)
    print("\n-- targets at L = 4096, 8 blocks per row (MRA-2, numba): >= 4x faster, "
          ">= 10x less memory than exact attention")
    for name in ("exact-numpy", "sdpa"):
        ref = base.get((4096, name))
        if target is None or ref is None:
            print(f"   vs {name}: not measured")
            continue
        t = _ratio(ref["median_s"], target["median_s"])
        m = _ratio(ref["peak_extra_bytes"], target["peak_extra_bytes"])
        print(f"   vs {name:11s}: speed {t:.2f}x -> {'met' if t >= 4 else 'not met'};  "
              f"memory {m:.1f}x -> {'met' if m >= 10 else 'not met'}")
    roof = H.machine_roofline(quick=args.quick)
    H.record_roofline(rec, roof)
    _roofline_table(rec, ok, roof)
    errors = minilm_errors(bprs)
    for r in results:
        rec.add_measurement(r)
    rec.data["minilm_errors"] = errors
    _record_table(rec, ok, base, errors)
    rec.write(args.record)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"info": info, "results": results}, f, indent=1, default=str)
    return 0


def _roofline_table(rec, ok, roof) -> None:
    """Per hot path: flops, bytes, time, achieved rates and fraction of the bound."""
    rows = []
    for r in ok:
        if r["method"] not in MRA_METHODS or r.get("prepare_s") is None:
            continue
        mode = "sparse" if r["method"] == "mra2s-numba" else "full"
        c = mra_costs(r["L"], r["bpr"], mode)
        t_prep = r["prepare_s"]
        t_att = max(r["median_s"] - t_prep, 1e-9)
        paths = [("prepare", c["prepare"], t_prep), ("attend", c["attend"], t_att),
                 ("total", {"flops": c["prepare"]["flops"] + c["attend"]["flops"],
                            "bytes": c["prepare"]["bytes"] + c["attend"]["bytes"]},
                  r["median_s"])]
        bounds = {}
        for name, cost, t in paths:
            if name == "total":
                bound = bounds["prepare"] + bounds["attend"]
            else:
                bound = H.roofline_bound(cost["flops"], cost["bytes"], roof, "float32",
                                         gemm_kind="batched")
                bounds[name] = bound
            rows.append([r["L"], r["method"], r["bpr"], name, cost["flops"] / 1e9,
                         cost["bytes"] / H.MiB, t * 1e3, cost["flops"] / t / 1e9,
                         cost["bytes"] / t / 1e9, bound * 1e3, bound / t])
    cols = ["L", "method", "bpr", "hot path", "GFLOP", "MiB", "time (ms)", "GFLOP/s",
            "GB/s", "bound (ms)", "fraction of bound"]
    print()
    print(H.format_table(cols, rows))
    g = roof["gflops"]["float32"]["batched"]
    print(f"   roofline: batched float32 GEMM {g:.1f} GFLOP/s, stream triad "
          f"{roof['stream_gbs']:.1f} GB/s (same run); target: MRA-2 at L = 16384, "
          f"8 blocks per row, total within 4x of its bound (fraction >= 0.25)")
    rec.add_table(
        "roofline", "MRA hot paths against the measured roofline", cols, rows,
        ["bound = max(flops / batched float32 GEMM peak, bytes / stream triad bandwidth), "
         "both measured in the same run (table 'roofline' ceilings in config). prepare: "
         "block sums, coarse scores, selection (3 L d + 2 n_b^2 d flops, q, k, v read); "
         "attend: coarse product and exact blocks (2 k b^2 (d + d_v) + 2 n_b^2 d_v flops, "
         "exponentials not counted; q, k, v read and the output written once), timed as "
         "the full call minus prepare; total: against the sum of the two bounds. "
         "Fraction 1 = at the roof; the issue's target is >= 0.25 for MRA-2 at "
         "L = 16384, 8 blocks per row."])


def minilm_errors(bprs) -> dict[str, Any]:
    """Output error of MRA-2 / MRA-2-s (block 32) on real MiniLM attention at L = 512."""
    from _accuracy import MINILM_L, exact_attention, minilm_inputs, rel_error, uniform_attention

    from structattn.mra import mra_attention

    try:
        q, k, v = minilm_inputs(MINILM_L)
    except (AssertionError, ImportError) as e:
        print(f"MiniLM errors not measured: {e}")
        return {}
    ref = exact_attention(q, k, v)
    out: dict[str, Any] = {"L": MINILM_L, "uniform": rel_error(uniform_attention(v), ref)}
    for bpr in bprs:
        for method, mode in (("mra2-numba", "full"), ("mra2s-numba", "sparse")):
            o = mra_attention(q, k, v, block_size=BLOCK, blocks_per_row=bpr, mode=mode,
                              backend="numba")
            out[f"{method}/{bpr}"] = rel_error(o, ref)
        out[f"mra2-torch/{bpr}"] = out[f"mra2-numba/{bpr}"]  # same algorithm
        out[f"mra2-numpy/{bpr}"] = out[f"mra2-numba/{bpr}"]
    print("MiniLM errors (L = 512):", {k: round(v, 4) for k, v in out.items()})
    return out


def _record_table(rec, ok, base, errors) -> None:
    from _accuracy import MINILM_L, error_note

    rows = []
    for r in ok:
        ex, sd = base.get((r["L"], "exact-numpy")), base.get((r["L"], "sdpa"))
        exact = r["method"] in ("exact-numpy", "sdpa")
        err = "exact" if exact else errors.get(f"{r['method']}/{r['bpr']}")
        rows.append([
            r["L"], r["method"] + (f" ({r['note']})" if r.get("note") else ""), r["bpr"],
            r["median_s"] * 1e3, r["peak_extra_bytes"] / H.MiB,
            _ratio(sd and sd["median_s"], r["median_s"]),
            _ratio(sd and sd["peak_extra_bytes"], r["peak_extra_bytes"]),
            _ratio(ex and ex["median_s"], r["median_s"]),
            len(r["times_s"]), r.get("other_cpu_cores"), err,
        ])
    rec.add_table(
        "forward", "MRA-2 / MRA-2-s vs exact attention, forward, non-causal",
        ["L", "method", "blocks per row", "fwd time (ms)", "peak extra (MiB)",
         "x vs SDPA (time)", "SDPA peak / this peak (< 1: more memory)",
         "x vs numpy exact (materializes L x L)", "reps", "others (cores)",
         f"error on MiniLM (L = {MINILM_L}, same blocks per row)"], rows,
        ["Batch x heads = 1 x 8, d = 64, block size 32, float32, standard-normal inputs, "
         "forward only (inference mode). The strongest exact baseline is torch SDPA "
         "(fused, O(L) memory); numpy exact attention materializes the L x L scores and is "
         "shown only for reference. Time: median of the timed repeats after one warm-up "
         "call, each configuration in a fresh process; peak extra = extra resident memory "
         "at the peak of one call; others = cores other processes used meanwhile.",
         error_note(MINILM_L) + " At L = 512 a row has 16 blocks of 32, so the same "
         "blocks per row refine a larger fraction of the row than at the L of the timing "
         "(16 blocks per row is exact there). Uniform attention (trivial baseline): "
         + (f"{errors['uniform']:.3f}." if "uniform" in errors else "not measured.")])


if __name__ == "__main__":
    raise SystemExit(main())

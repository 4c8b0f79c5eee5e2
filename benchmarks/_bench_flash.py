"""FLASH mixed-chunk attention vs a quadratic GAU vs torch SDPA: forward and backward.

The "flash" section of ``bench_estimators.py`` (``add_arguments(parser)`` and
``run(args) -> list[dict]``); also runnable on its own::

    python benchmarks/_bench_flash.py --quick
    python benchmarks/_bench_flash.py --out flash.json

Problem: one sequence (batch 1), ``d_model = 256``, shared ``s = 128``, ``e = 512``,
float32 on the CPU (or ``--flash-device cuda``), inputs standard normal (seed 0).
Rows, all the same gated unit (LayerNorm, ``U, V, Z`` projections, gating, output
projection, residual) with a different attention core:

* ``flash C=128`` / ``flash C=256``: :class:`structattn.layers.FLASH`, mixed-chunk;
* ``gau (quadratic)``: :class:`structattn.layers.GAU`, ``relu²`` attention on the full
  ``T x T`` matrix (FLASH-Quad);
* ``gau + sdpa``: the GAU's projections with
  ``torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=...)`` (exact
  softmax ``softmax(Q Kᵀ/√s) V``) as the core.  The values (size ``e``) are split into
  ``e/s`` heads of size ``s`` sharing ``Q, K`` — the same product in the shape torch's
  fused (flash) kernels accept; with ``e != s`` SDPA would fall back to its
  ``O(T²)``-memory math kernel.

"fwd" is a forward call under ``torch.no_grad()``; "fwd+bwd" a forward with autograd
plus ``out.sum().backward()`` (gradients for the input and every parameter).  Every
(mode, T, row) runs in a fresh interpreter (``_harness.run_isolated``): one warm-up
call, then timed repeats until ``--flash-budget`` seconds, then one more fwd+bwd call
whose extra peak RSS is reported (``_harness.measure_peak``; on CUDA
``torch.cuda.max_memory_allocated``).  Quadratic rows whose estimated memory
(``8 T²`` floats for fwd+bwd) exceeds 70% of the available memory are skipped and say
so.  Nothing is asserted.
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

D_MODEL, QK_DIM, EXPANSION = 256, 128, 2.0
METHODS = ("flash", "gau", "sdpa")
_LABEL = {"gau": "gau (quadratic)", "sdpa": "gau + sdpa"}


# ----------------------------------------------------------------------- options
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this section's options (``--quick`` only if the parser lacks it)."""
    if "--quick" not in parser._option_string_actions:
        parser.add_argument("--quick", action="store_true",
                            help="T = 1024, 4096, causal only, one repeat")
    g = parser.add_argument_group("flash section")
    g.add_argument("--flash-lengths", type=int, nargs="+", default=None,
                   help="sequence lengths (default 1024 4096 16384; quick: 1024 4096)")
    g.add_argument("--flash-chunks", type=int, nargs="+", default=[128, 256])
    g.add_argument("--flash-methods", nargs="+", default=list(METHODS), choices=METHODS,
                   help="rows: flash (mixed chunk), gau (quadratic), sdpa (GAU + SDPA)")
    g.add_argument("--flash-modes", nargs="+", default=None,
                   choices=("causal", "noncausal"),
                   help="default both (quick: causal)")
    g.add_argument("--flash-repeats", type=int, default=None,
                   help="timed repeats (default 5; quick: 1)")
    g.add_argument("--flash-budget", type=float, default=20.0,
                   help="stop repeating a row once its timed calls took this many seconds")
    g.add_argument("--flash-device", default="cpu", help="torch device (cpu, cuda)")
    g.add_argument("--flash-threads", type=int, default=None,
                   help="torch.set_num_threads in the workers (default: torch's)")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    quick = bool(getattr(args, "quick", False))
    return {
        "lengths": args.flash_lengths or ([1024, 4096] if quick else [1024, 4096, 16384]),
        "chunks": args.flash_chunks,
        "methods": args.flash_methods,
        "modes": args.flash_modes or (["causal"] if quick else ["causal", "noncausal"]),
        "repeats": args.flash_repeats or (3 if quick else 5),
        "budget": args.flash_budget,
        "device": args.flash_device,
        "threads": args.flash_threads,
    }


# ------------------------------------------------------------------------ worker
def _build(spec: dict[str, Any]):
    import torch

    from structattn.layers import FLASH, GAU

    torch.manual_seed(0)
    causal = spec["mode"] == "causal"
    common = {"qk_dim": QK_DIM, "expansion_factor": EXPANSION, "causal": causal,
              "check_finite": False}
    if spec["method"] == "flash":
        layer = FLASH(D_MODEL, chunk_size=spec["chunk"], **common)
        fn = layer
    else:
        layer = GAU(D_MODEL, **common)
        if spec["method"] == "gau":
            fn = layer
        else:
            groups = layer.hidden_dim // QK_DIM

            def fn(x, layer=layer, causal=causal, groups=groups):
                # softmax(Q Kᵀ/√s) V with V split into `groups` heads of size s: the
                # same product, in the shape torch's fused CPU/CUDA kernels accept
                # (they need one head size for q, k and v; e = 512 != s = 128 would
                # fall back to the O(T²)-memory math kernel)
                u, v, heads = layer.project(x)
                T = x.shape[-2]
                q, k = (h.unsqueeze(-3).expand(*h.shape[:-2], groups, T, QK_DIM)
                        for h in heads[:2])
                vh = v.reshape(*v.shape[:-1], groups, QK_DIM).movedim(-2, -3)
                av = torch.nn.functional.scaled_dot_product_attention(
                    q, k, vh, is_causal=causal)
                return layer._finish(x, u, av.movedim(-3, -2).reshape(v.shape))
    layer = layer.to(spec["device"])
    return layer, fn


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One (mode, T, method[, chunk]) configuration, in its own process."""
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    layer, fn = _build(spec)
    dev = spec["device"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, spec["T"], D_MODEL, generator=g).to(dev).requires_grad_()
    sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)

    def fwd():
        with torch.no_grad():
            out = fn(x)
        sync()
        return out

    def fwd_bwd():
        x.grad = None
        layer.zero_grad(set_to_none=True)
        fn(x).sum().backward()
        sync()

    big = spec["T"] >= 16384 and spec["method"] != "flash"
    reps = 1 if big else spec["repeats"]
    t_f = H.time_calls(fwd, repeats=reps, warmup=not big, budget_s=spec["budget"])
    t_fb = H.time_calls(fwd_bwd, repeats=reps, warmup=not big, budget_s=spec["budget"])
    if dev.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fwd_bwd()
        peak = {"peak_extra_bytes": torch.cuda.max_memory_allocated() - base,
                "method": "torch.cuda.max_memory_allocated"}
    else:
        H.strict_malloc()
        peak = H.measure_peak(fwd_bwd)
    return {
        "fwd_s": t_f["median_s"], "fwd_min_s": min(t_f["times_s"]),
        "fwdbwd_s": t_fb["median_s"], "fwdbwd_min_s": min(t_fb["times_s"]),
        "reps": len(t_fb["times_s"]), "warmup": not big,
        "fwd_times_s": t_f["times_s"], "fwdbwd_times_s": t_fb["times_s"],
        "peak_mib": peak["peak_extra_bytes"] / H.MiB, "peak_method": peak["method"],
        "cpu_s": H.process_cpu_seconds(),  # the whole worker process, imports included
        "torch_threads": torch.get_num_threads(),
    }


# ------------------------------------------------------------------------ driver
def _available_bytes() -> int | None:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _configs(st: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for mode in st["modes"]:
        for T in st["lengths"]:
            for method in st["methods"]:
                for chunk in (st["chunks"] if method == "flash" else [None]):
                    out.append({"mode": mode, "T": T, "method": method, "chunk": chunk,
                                "repeats": st["repeats"], "budget": st["budget"],
                                "device": st["device"], "threads": st["threads"]})
    return out


def _label(r: dict[str, Any]) -> str:
    return f"flash C={r['chunk']}" if r["method"] == "flash" else _LABEL[r["method"]]


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the section; print its table; return one dict per (mode, T, row)."""
    st = _settings(args)
    print("\n-- flash: FLASH mixed-chunk vs quadratic GAU vs SDPA (forward, forward+backward)")
    print(f"   d_model={D_MODEL}, s={QK_DIM}, e={int(EXPANSION * D_MODEL)}, batch 1, "
          f"float32, device {st['device']}; one fresh interpreter per row", flush=True)
    rows: list[dict[str, Any]] = []
    for spec in _configs(st):
        row = {"section": "flash", **{k: spec[k] for k in ("mode", "T", "method", "chunk")}}
        row["label"] = _label(row)
        if spec["method"] != "flash" and st["device"] == "cpu":
            need, avail = 8 * 4 * spec["T"] ** 2, _available_bytes()
            if avail is not None and need > 0.7 * avail:
                row["skipped"] = (f"estimated {need / 2**30:.1f} GiB for fwd+bwd > 70% of "
                                  f"the {avail / 2**30:.1f} GiB available")
                rows.append(row)
                print(f"   {row['mode']:9s} T={row['T']:6d} {row['label']:16s} skipped: "
                      f"{row['skipped']}", flush=True)
                continue
        busy0, t0 = H.cpu_busy_seconds(), time.perf_counter()
        res = H.run_isolated(os.path.abspath(__file__), spec, timeout_s=1800)
        busy1, t1 = H.cpu_busy_seconds(), time.perf_counter()
        row.update(res)
        if "error" not in res and busy0 is not None and busy1 is not None:
            row["others_cores"] = max(0.0, (busy1 - busy0) - res["cpu_s"]) / (t1 - t0)
        rows.append(row)
        msg = res.get("error", "")[-300:] if "error" in res else (
            f"fwd {res['fwd_s']:.3g}s  fwd+bwd {res['fwdbwd_s']:.3g}s  "
            f"peak {res['peak_mib']:.0f} MiB")
        print(f"   {row['mode']:9s} T={row['T']:6d} {row['label']:16s} {msg}", flush=True)
    _compare(rows)
    return rows


def _compare(rows: list[dict[str, Any]]) -> None:
    """Ratios against the quadratic rows of the same (mode, T); the winners."""
    ok = [r for r in rows if "fwdbwd_s" in r]
    base = {(r["mode"], r["T"], r["method"]): r for r in ok if r["method"] != "flash"}
    table = []
    for r in rows:
        gau, sdpa = base.get((r["mode"], r["T"], "gau")), base.get((r["mode"], r["T"], "sdpa"))
        if "fwdbwd_s" in r:
            r["x_vs_gau"] = gau["fwdbwd_s"] / r["fwdbwd_s"] if gau else None
            r["x_vs_sdpa"] = sdpa["fwdbwd_s"] / r["fwdbwd_s"] if sdpa else None
        table.append([r["mode"], r["T"], r["label"], r.get("fwd_s"), r.get("fwdbwd_s"),
                      r.get("fwdbwd_min_s"), r.get("x_vs_gau"), r.get("x_vs_sdpa"),
                      r.get("peak_mib"), r.get("reps"), r.get("others_cores"),
                      "skipped" if "skipped" in r else ("error" if "error" in r else "")])
    print(H.format_table(
        ["mode", "T", "row", "fwd (s)", "fwd+bwd (s)", "min (s)", "x vs gau", "x vs sdpa",
         "peak extra (MiB)", "reps", "others (cores)", "note"], table))
    print("   x vs gau / x vs sdpa: fwd+bwd time of that row / this row (> 1: faster)")
    for mode in sorted({r["mode"] for r in ok}):
        for T in sorted({r["T"] for r in ok if r["mode"] == mode}):
            cand = [r for r in ok if r["mode"] == mode and r["T"] == T]
            best = min(cand, key=lambda r: r["fwdbwd_s"])
            flash = [r for r in cand if r["method"] == "flash"]
            quad = [r for r in cand if r["method"] != "flash"]
            if flash and quad:
                f, q = min(flash, key=lambda r: r["fwdbwd_s"]), min(
                    quad, key=lambda r: r["fwdbwd_s"])
                verdict = "mixed-chunk wins" if f["fwdbwd_s"] < q["fwdbwd_s"] else \
                    "quadratic wins"
                print(f"   {mode:9s} T={T:6d}: fastest fwd+bwd = {best['label']}; {verdict} "
                      f"({f['label']} {f['fwdbwd_s']:.3g}s vs {q['label']} "
                      f"{q['fwdbwd_s']:.3g}s, {q['fwdbwd_s'] / f['fwdbwd_s']:.2f}x)")
    flagged = [r for r in ok if (r.get("others_cores") or 0) > 0.2]
    if flagged:
        print(f"   WARNING: {len(flagged)} row(s) ran while other processes used > 0.2 "
              "cores: their times are inflated")


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--worker":
        H.worker_emit(worker(json.loads(sys.argv[2])))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="write the rows and the environment as JSON")
    add_arguments(p)
    args = p.parse_args(argv)
    info = H.environment_info()
    H.print_header("bench flash: mixed-chunk attention", info,
                   [f"others (cores) before start: {H.other_load(2.0)}"])
    rows = run(args)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"environment": info, "flash": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

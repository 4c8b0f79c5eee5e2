"""Importance-sampling estimators vs FAVOR+ vs exact attention: time, memory and error.

Usage::

    python benchmarks/bench_estimators.py [--quick] [--out results.json]
                                          [--sections estimators flash] [--lengths ...]

Section ``estimators`` (this file): batch x heads = 1 x 2, d = d_v = 64, float32 numpy
inputs at L in {1024, 4096, 16384} (``--quick``: 1024, 4096 and one repeat), of two
kinds (``--inputs``):

* ``clustered`` — the structured case the estimators target: tokens in 64 contiguous
  clusters (``L/64`` neighbouring tokens each, as patches of an image), queries and keys
  near the same centre (scaled norm 2.5, jitter 0.3), ``v ~ N(0, I)``: peaked rows;
* ``gaussian`` — the study's defaults ``q, k ~ 0.5·N(0, I)``: nearly uniform rows, whose
  exact output is close to the mean value, so every estimator's *relative* error is
  large (RA with one sample worst of all: each sample is a peaked softmax).

Rows, all on the *same* inputs:

* ``exact``       softmax attention by blocks of 1024 query rows (O(L²) time, O(1024·L)
                  memory; the whole ``L x L`` score matrix would need 1 GiB per head at
                  16k) — baseline of "x vs exact";
* ``performer``   ``kernel_attention`` with ``PositiveRandomFeatures(64, m=64)`` (numba);
* ``rfa-snis``    :func:`structattn.estimators.rfa_snis`, ``S = 64`` i.i.d. samples;
* ``lara``        :func:`structattn.estimators.lara`, ``C = 64`` landmarks (``mis="opt"``);
* ``lara-bh``     the same with ``mis="bh"``;
* ``ra``          :func:`structattn.estimators.randomized_attention`, ``S = 1`` sample per
                  query (quadratic).

Every row runs in a fresh interpreter (``_harness.run_isolated``).  Columns: median time
of the repeats after one warm-up (``time.perf_counter``), the extra peak resident memory
of one further call (``_harness.measure_peak``: RSS high-water mark reset via
``/proc/self/clear_refs``, glibc told to return freed memory first), the relative Frobenius
error against float64 exact attention on the same inputs, and "others (cores)": CPU
used by other processes while the row was timed (the machine has 2 cores; above 0.2 the
time is inflated).

Section ``flash`` (``benchmarks/_bench_flash.py``, when that file exists): FLASH
mixed-chunk attention vs quadratic GAU vs SDPA; see that module.

Nothing is asserted: numbers are printed and recorded (docs/estimators.rst).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness as H

from structattn import PositiveRandomFeatures, kernel_attention
from structattn.estimators import lara, randomized_attention, rfa_snis
from structattn.studies import synthetic_inputs

HEADS, D, BUDGET, BLOCK = 2, 64, 64, 1024
DTYPE = "float32"


def exact_blocked(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Exact softmax attention by blocks of query rows (scale d**-0.5)."""
    out = np.empty(q.shape[:-1] + v.shape[-1:], dtype=q.dtype)
    kt = np.swapaxes(k, -1, -2) * q.dtype.type(q.shape[-1] ** -0.5)
    for r0 in range(0, q.shape[-2], BLOCK):
        s = q[..., r0:r0 + BLOCK, :] @ kt
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        out[..., r0:r0 + BLOCK, :] = (s @ v) / s.sum(axis=-1, keepdims=True)
    return out


def clustered_inputs(L: int, seed: int = 0, clusters: int = 64):
    """Contiguous clusters of tokens; q and k near the same centres (see the module doc)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((HEADS, clusters, D))
    centres *= 2.5 * D ** 0.25 / np.linalg.norm(centres, axis=-1, keepdims=True)
    label = (np.arange(L) * clusters) // L
    jitter = 0.3 * D ** 0.25 / np.sqrt(D)
    q = centres[:, label] + jitter * rng.standard_normal((HEADS, L, D))
    k = centres[:, label] + jitter * rng.standard_normal((HEADS, L, D))
    v = rng.standard_normal((HEADS, L, D))
    return tuple(x[None].astype(DTYPE) for x in (q, k, v))


def make_inputs(kind: str, L: int):
    if kind == "clustered":
        return clustered_inputs(L)
    return synthetic_inputs(L, dim=D, value_dim=D, heads=HEADS, seed=0, scale=0.5,
                            dtype=DTYPE)


def _sdpa(q, k, v):
    import torch

    with torch.inference_mode():
        return torch.nn.functional.scaled_dot_product_attention(
            *(torch.from_numpy(np.ascontiguousarray(x)) for x in (q, k, v))).numpy()


def _performer_pytorch(q, k, v, _cache: dict = {}):  # noqa: B006 (per-process cache)
    """performer-pytorch ``FastAttention(d, nb_features=BUDGET)`` end to end, forward."""
    import contextlib
    import io

    import torch
    from performer_pytorch import FastAttention

    d = q.shape[-1]
    if d not in _cache:
        torch.manual_seed(0)
        with contextlib.redirect_stdout(io.StringIO()):
            _cache[d] = FastAttention(dim_heads=d, nb_features=BUDGET)
    dt = torch.float32
    with torch.inference_mode():
        return _cache[d](*(torch.from_numpy(np.ascontiguousarray(x)).to(dt)
                           for x in (q, k, v))).numpy()


def methods(d: int = D) -> dict[str, tuple[str, Callable[..., Any]]]:
    phi = PositiveRandomFeatures(d, BUDGET, seed=0)
    return {
        "exact": ("-", exact_blocked),
        "sdpa": ("-", _sdpa),
        "performer-pytorch": (f"m={BUDGET}", _performer_pytorch),
        "favor+ (structattn)": (f"m={BUDGET}", lambda q, k, v: kernel_attention(
            q, k, v, phi, backend="numba", check_finite=False)),
        "rfa-snis": (f"S={BUDGET}", lambda q, k, v: rfa_snis(
            q, k, v, num_samples=BUDGET, seed=0, check_finite=False)),
        "lara": (f"C={BUDGET}", lambda q, k, v: lara(
            q, k, v, num_landmarks=BUDGET, seed=0, check_finite=False)),
        "lara-bh": (f"C={BUDGET}", lambda q, k, v: lara(
            q, k, v, num_landmarks=BUDGET, seed=0, mis="bh", check_finite=False)),
        "ra": ("S=1", lambda q, k, v: randomized_attention(
            q, k, v, num_samples=1, seed=0, check_finite=False)),
    }


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One row in a fresh interpreter: time it, then measure one more call's peak memory.

    The output of the measured call is saved to ``spec["out"]`` (``.npy``) for the error.
    """
    q, k, v = make_inputs(spec["inputs"], spec["L"])
    fn = methods()[spec["method"]][1]
    timing = H.time_calls(lambda: fn(q, k, v), repeats=spec["repeats"],
                          budget_s=spec["budget"])
    H.strict_malloc()  # after timing: it changes allocation speed, not results
    kept: dict[str, Any] = {}

    def call() -> Any:
        kept["out"] = fn(q, k, v)
        return kept["out"]

    peak = H.measure_peak(call)
    np.save(spec["out"], kept["out"])
    return {"timing": timing, "peak_extra_bytes": peak["peak_extra_bytes"],
            "peak_method": peak["method"], "cpu_s": H.process_cpu_seconds()}


def run_estimators(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Time, memory and error of every row at every length; prints the table.

    Every (inputs, L, method) runs in its own fresh interpreter (``--worker``), so its
    peak-memory reading is not masked by memory an earlier row freed.
    """
    import tempfile
    import time

    lengths = args.lengths or ([1024, 4096] if args.quick else [1024, 4096, 16384])
    repeats = 3 if args.quick else args.repeats
    print(f"\n-- estimators: batch x heads = 1 x {HEADS}, d = d_v = {D}, {DTYPE}, "
          f"budget {BUDGET} (RA: 1 sample/query), inputs {', '.join(args.inputs)}; "
          "one fresh interpreter per row", flush=True)
    rows: list[dict[str, Any]] = []
    script = os.path.abspath(__file__)
    with tempfile.TemporaryDirectory() as tmp:
        for kind, L in ((kind, L) for kind in args.inputs for L in lengths):
            q, k, v = make_inputs(kind, L)
            ref = exact_blocked(*(x.astype(np.float64) for x in (q, k, v)))
            del q, k, v
            for name, (budget, _) in methods().items():
                out_path = os.path.join(tmp, f"{kind}_{L}_{name}.npy")
                spec = {"inputs": kind, "L": L, "method": name, "repeats": repeats,
                        "budget": args.budget, "out": out_path}
                b0, t0 = H.cpu_busy_seconds(), time.perf_counter()
                res = H.run_isolated(script, spec)
                b1, t1 = H.cpu_busy_seconds(), time.perf_counter()
                row: dict[str, Any] = {"section": "estimators", "inputs": kind, "L": L,
                                       "method": name, "budget": budget}
                if "error" in res:
                    row["error"] = res["error"]
                    rows.append(row)
                    print(f"   {kind:9s} L={L:6d} {name:10s} FAILED: {res['error'][-300:]}")
                    continue
                out = np.load(out_path).astype(np.float64)
                timing = res["timing"]
                others = (None if b0 is None or b1 is None else
                          max(0.0, (b1 - b0) - res["cpu_s"]) / (t1 - t0))
                row.update({
                    "time_s": timing["median_s"], "times_s": timing["times_s"],
                    "min_s": min(timing["times_s"]),
                    "reps": len(timing["times_s"]), "first_call_s": timing["first_call_s"],
                    "peak_extra_mib": res["peak_extra_bytes"] / H.MiB,
                    "peak_method": res["peak_method"],
                    "rel_error": float(np.linalg.norm(out - ref) / np.linalg.norm(ref)),
                    "others_cores": others,
                })
                rows.append(row)
                print(f"   {kind:9s} L={L:6d} {name:10s} {row['time_s']:.4f}s  "
                      f"err {row['rel_error']:.3e}  others {others}", flush=True)
            del ref
    ok = [r for r in rows if "error" not in r]
    exact_t = {(r["inputs"], r["L"]): r["time_s"] for r in ok if r["method"] == "exact"}
    sdpa_t = {(r["inputs"], r["L"]): r["time_s"] for r in ok if r["method"] == "sdpa"}
    for r in ok:
        base = exact_t.get((r["inputs"], r["L"]))
        r["x_vs_exact"] = None if base is None else base / r["time_s"]
        base = sdpa_t.get((r["inputs"], r["L"]))
        r["x_vs_sdpa"] = None if base is None else base / r["time_s"]
    print(H.format_table(
        ["inputs", "L", "method", "budget", "time (s)", "x vs exact", "peak extra (MiB)",
         "rel error", "reps", "min (s)", "others (cores)"],
        [[r["inputs"], r["L"], r["method"], r["budget"], r["time_s"], r["x_vs_exact"],
          r["peak_extra_mib"], f"{r['rel_error']:.3e}", r["reps"], r["min_s"],
          r["others_cores"]] for r in ok]))
    busy = [r for r in ok if (r["others_cores"] or 0) > 0.2]
    if busy:
        print(f"   {len(busy)} row(s) ran while other processes used > 0.2 cores: their times "
              "are inflated")
    return rows


def minilm_errors() -> dict[str, Any]:
    """Error of every row at the same budget on real MiniLM attention (L = 512, d = 32)."""
    from _accuracy import MINILM_L, minilm_inputs, uniform_attention

    try:
        q, k, v = minilm_inputs(MINILM_L)
    except (AssertionError, ImportError) as e:
        print(f"MiniLM errors not measured: {e}")
        return {}
    ref = exact_blocked(q, k, v)
    out: dict[str, Any] = {"L": MINILM_L, "uniform": _rel(uniform_attention(v), ref)}
    q32, k32, v32 = (x.astype(np.float32) for x in (q, k, v))
    for name, (_, fn) in methods(q.shape[-1]).items():
        if name in ("exact", "sdpa"):
            continue
        out[name] = _rel(fn(q32, k32, v32), ref)
    print("MiniLM errors (L = 512):", {k: round(v, 4) for k, v in out.items()})
    return out


def _rel(out, ref) -> float:
    out = np.asarray(out, dtype=np.float64)
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def _table_estimators(rec, rows: list[dict[str, Any]]) -> None:
    from _accuracy import MINILM_L, error_note

    errs = minilm_errors()
    rec.data["minilm_errors"] = errs
    ok = [r for r in rows if "error" not in r]
    table = [[r["inputs"], r["L"], r["method"], r["budget"], r["time_s"], r.get("x_vs_sdpa"),
              r.get("x_vs_exact"), r["peak_extra_mib"], r["rel_error"],
              "exact" if r["method"] in ("exact", "sdpa") else errs.get(r["method"]),
              r["reps"], r["others_cores"]] for r in ok]
    rec.add_table(
        "estimators", "Estimators vs exact attention at budget 64, forward, non-causal",
        ["inputs", "L", "method", "budget", "fwd time (s)", "x vs torch SDPA (fwd)",
         "x vs numpy exact (blocked)", "peak extra (MiB)", "error (these inputs)",
         f"error on MiniLM (L = {MINILM_L}, same budget)", "reps", "others (cores)"],
        table,
        [f"Batch x heads = 1 x {HEADS}, d = d_v = {D}, float32; every row in a fresh "
         "interpreter; time = median of the timed repeats after one warm-up call. "
         "torch SDPA (exact, fused) is the strongest exact baseline; performer-pytorch is "
         "its FastAttention (FAVOR+, its own random features) end to end; "
         "'favor+ (structattn)' is the library's kernel_attention with "
         "PositiveRandomFeatures. 'error (these inputs)': relative Frobenius error against "
         "float64 exact attention on the row's synthetic inputs.",
         error_note(MINILM_L) + " Uniform attention (trivial baseline): "
         + (f"{errs['uniform']:.3f}." if "uniform" in errs else "not measured.")])


def _table_flash(rec, rows: list[dict[str, Any]]) -> None:
    table = [[r["mode"], r["T"], r["label"], r.get("fwd_s"), r.get("fwdbwd_s"),
              r.get("x_vs_sdpa"), r.get("x_vs_gau"), r.get("peak_mib"), r.get("reps"),
              r.get("others_cores")] for r in rows if "fwdbwd_s" in r]
    rec.add_table(
        "flash", "FLASH mixed-chunk attention vs quadratic GAU vs GAU + SDPA",
        ["mode", "T", "row", "fwd time (s)", "fwd+bwd time (s)",
         "x vs GAU + SDPA (fwd+bwd)", "x vs quadratic GAU (fwd+bwd)",
         "peak extra, fwd+bwd (MiB)", "reps", "others (cores)"], table,
        ["Batch 1, d_model = 256, s = 128, e = 512, float32 CPU; the same gated unit with "
         "a different attention core (see benchmarks/_bench_flash.py); every row in a "
         "fresh interpreter. Ratios compare fwd+bwd with fwd+bwd."])


SECTIONS: dict[str, Callable[[argparse.Namespace], list[dict[str, Any]]]] = {
    "estimators": run_estimators,
}
_ADD_ARGUMENTS: list[Callable[[argparse.ArgumentParser], None]] = []

if os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bench_flash.py")):
    import _bench_flash

    SECTIONS["flash"] = _bench_flash.run
    _ADD_ARGUMENTS.append(_bench_flash.add_arguments)


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--worker":
        H.worker_emit(worker(json.loads(sys.argv[2])))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="L = 1024, 4096; one repeat")
    p.add_argument("--out", help="write all rows and the environment as JSON")
    p.add_argument("--sections", nargs="+", choices=tuple(SECTIONS), default=list(SECTIONS),
                   help=f"sections to run (default: all of {', '.join(SECTIONS)})")
    p.add_argument("--lengths", type=int, nargs="+", default=None,
                   help="estimators section lengths (default 1024 4096 16384)")
    p.add_argument("--inputs", nargs="+", choices=("clustered", "gaussian"),
                   default=["clustered", "gaussian"], help="estimators section input kinds")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (quick: 1)")
    p.add_argument("--budget", type=float, default=30.0,
                   help="stop repeating a row once its timed calls took this many seconds")
    p.add_argument("--record", default=None,
                   help="JSON record path (default benchmarks/results/estimators.json)")
    for add in _ADD_ARGUMENTS:
        add(p)
    args = p.parse_args(argv)
    info = H.environment_info()
    H.print_header("bench_estimators: RA / LARA / RFA-SNIS / FAVOR+ vs exact", info,
                   [f"others (cores) before start: {H.other_load(2.0)}",
                    f"sections: {', '.join(args.sections)}"])
    rec = H.Record("estimators", config={
        "quick": args.quick, "sections": args.sections, "lengths": args.lengths,
        "inputs": args.inputs, "repeats": 3 if args.quick else args.repeats,
        "budget_s": args.budget, "heads": HEADS, "d": D, "budget": BUDGET, "dtype": DTYPE})
    results: dict[str, Any] = {"environment": info}
    for name in args.sections:
        results[name] = SECTIONS[name](args)
        for r in results[name]:
            rec.add_measurement({"section": name, **r})
    if "estimators" in results:
        _table_estimators(rec, results["estimators"])
    if "flash" in results:
        _table_flash(rec, results["flash"])
    rec.write(args.record)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Relative-position masks with kernel attention: FFT vs dense quadratic, and ripple SAT/FFT.

Usage::

    python benchmarks/bench_rpe.py [--quick] [--out results.json]

Part 1 (Toeplitz): batch x heads = 1 x 4, m = d = d_v = 64 features, float32, the masked
product ``(M ⊙ φ(Q)φ(K)ᵀ)[V|1]`` of ``kernel_attention`` with a 1-D relative-position
mask ``M = exp(b)`` (``Toeplitz.from_log``):

* ``fft``      ``Toeplitz.from_log(b, method="fft").masked_matmul(A, B, V1)``: circulant
               FFT on the ``L x m·(d_v+1)`` block, O(L log L·m·d_v);
* ``dense``    the quadratic path ``(M ⊙ A Bᵀ) V1`` with the dense mask (``Dense(M)``),
               one head at a time (skipped above ``--dense-max``);
* ``floor``    an rfft + irfft of the same ``L x m·(d_v+1)`` block in the same column
               blocks, nothing else: the best an FFT route can do.

Reported: times, ``dense/fft`` (target >= 20x at L = 16384), ``fft/floor`` (target
<= 3x), the growth exponent of the FFT path between 8k and 64k (target <= 1.15) and the
crossover length where FFT beats dense.

Part 2 (ripple): 64x64 and 128x128 grids, cutoff 8, same features: ``Ripple`` by the
summed-area-table DP (numba), by the 2-D FFT, and the dense quadratic path.

Timings: one warm-up call (numba compile excluded), median of the repeats
(``time.perf_counter``), in-process.  Not asserted anywhere: printed and recorded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness as H

from structattn import PositiveRandomFeatures
from structattn._fft import irfft, next_fast_length, rfft
from structattn.masks import Dense, Ripple, Toeplitz
from structattn.masks import base as mask_base
from structattn.studies.builtin import alibi_log_coefficients

HEADS, D, M = 4, 64, 64
DTYPE = np.float32


def _features(L: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((1, HEADS, L, D), dtype=DTYPE) for _ in range(3))
    phi = PositiveRandomFeatures(D, M, seed=seed)
    A, B = phi.queries(q), phi.keys(k)
    V1 = np.concatenate([v, np.ones_like(v[..., :1])], axis=-1)
    return A, B, V1


def _dense_masked(M_dense: np.ndarray, A: np.ndarray, B: np.ndarray, V1: np.ndarray):
    out = np.empty(A.shape[:-1] + V1.shape[-1:], dtype=A.dtype)
    mask = Dense(M_dense)
    for h in range(A.shape[1]):  # one head at a time: L x L per head
        out[0, h] = mask.masked_matmul(A[0, h], B[0, h], V1[0, h], backend="numpy",
                                       check_finite=False)
    return out


def _fft_floor(B: np.ndarray, V1: np.ndarray) -> None:
    """rfft + irfft of the B ⊗ V1 block, in the column blocks the masked product uses."""
    L, m = B.shape[-2:]
    dv = V1.shape[-1]
    P = next_fast_length(2 * L - 1)
    step = max(1, mask_base._GENERIC_BLOCK_ELEMENTS // max(1, L * dv * HEADS))
    for s in range(0, m, step):
        e = min(s + step, m)
        F = (B[..., :, s:e, None] * V1[..., :, None, :]).reshape(*B.shape[:-1], -1)
        irfft(rfft(F, P, axis=-2), P, axis=-2)


def toeplitz_part(lengths: list[int], dense_max: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for L in lengths:
        A, B, V1 = _features(L)
        b = alibi_log_coefficients(L).astype(DTYPE)
        mask = Toeplitz.from_log(b, method="fft")
        reps = repeats if L <= 16384 else 1
        fft = H.time_calls(lambda mask=mask, A=A, B=B, V1=V1: mask.masked_matmul(
            A, B, V1, backend="numpy", check_finite=False), repeats=reps)
        floor = H.time_calls(lambda B=B, V1=V1: _fft_floor(B, V1), repeats=reps)
        row = {"L": L, "fft_s": fft["median_s"], "floor_s": floor["median_s"],
               "dense_s": None, "max_rel_diff": None, "fft_times_s": fft["times_s"],
               "floor_times_s": floor["times_s"]}
        if L <= dense_max:
            M_dense = Toeplitz.from_log(b, method="dense").to_dense()
            dense = H.time_calls(lambda M_dense=M_dense, A=A, B=B, V1=V1: _dense_masked(
                M_dense, A, B, V1), repeats=1 if L >= 8192 else reps)
            row["dense_s"], row["dense_times_s"] = dense["median_s"], dense["times_s"]
            ref = _dense_masked(M_dense.astype(np.float64), *(x.astype(np.float64)
                                                               for x in (A, B, V1)))
            got = mask.masked_matmul(A, B, V1, backend="numpy", check_finite=False)
            row["max_rel_diff"] = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
            del M_dense
        rows.append(row)
        print(f"   L={L:6d}  fft {row['fft_s']:.3f}s  floor {row['floor_s']:.3f}s  dense "
              f"{row['dense_s'] if row['dense_s'] is None else round(row['dense_s'], 3)}",
              flush=True)
    return rows


def ripple_sat_bytes(L: int, cutoff: int, heads: int = HEADS, m: int = M, dv: int = D) -> int:
    """Bytes the ripple SAT kernel touches (a traffic model, not a cache simulation).

    Per head, with ``F = m (d_v + 1)`` columns and a float64 table: ``A, B, [V|1]`` read
    and the output written once (float32), the table written by the row pass and read
    and written by the column pass (``3 x 8 L F``), and ``4`` box corners of ``F``
    float64 per radius and position read by the queries (``4 R x 8 L F``, ``R`` = the
    cutoff; border positions stop earlier, not subtracted).  Corner rows reused from
    cache are counted: the achieved "GB/s" may then exceed the stream bandwidth.
    """
    F = m * (dv + 1)
    io = 4 * L * (2 * m + 2 * (dv + 1))
    return heads * (io + 8 * L * F * (3 + 4 * cutoff))


def ripple_part(sides: list[int], repeats: int, cutoff: int = 8) -> list[dict[str, Any]]:
    rows = []
    for n in sides:
        L = n * n
        A, B, V1 = _features(L, seed=1)
        logits = np.zeros(cutoff)
        sat = Ripple((n, n), stick_breaking_logits=logits, cutoff=cutoff, method="sat")
        fftm = Ripple((n, n), stick_breaking_logits=logits, cutoff=cutoff, method="fft")
        row: dict[str, Any] = {"grid": f"{n}x{n}", "L": L}
        for name, mask, be in (("sat", sat, "numba"), ("fft", fftm, "numpy")):
            t = H.time_calls(lambda mask=mask, be=be, A=A, B=B, V1=V1: mask.masked_matmul(
                A, B, V1, backend=be, check_finite=False), repeats=repeats)
            row[f"{name}_s"], row[f"{name}_times_s"] = t["median_s"], t["times_s"]
        M_dense = sat.to_dense(like=np.empty(0, dtype=DTYPE))
        row["dense_s"] = H.time_calls(lambda M_dense=M_dense, A=A, B=B, V1=V1: _dense_masked(
            M_dense, A, B, V1), repeats=1)["median_s"]
        a = sat.masked_matmul(A, B, V1, backend="numba", check_finite=False)
        f = fftm.masked_matmul(A, B, V1, backend="numpy", check_finite=False)
        row["sat_vs_fft"] = float(np.linalg.norm(a - f) / np.linalg.norm(f))
        row["sat_bytes"] = ripple_sat_bytes(L, cutoff)
        row["sat_gbs"] = row["sat_bytes"] / row["sat_s"] / 1e9
        rows.append(row)
        del M_dense
    return rows


def calibrate(repeats: int = 5) -> None:
    """Dense-Toeplitz vs FFT products (``Toeplitz.matmat``): measured winner vs model."""
    from structattn.masks.toeplitz import FFT_COST_FACTOR

    rng = np.random.default_rng(0)
    table = []
    for F in (64, 1040, 4160):
        for L in (16, 32, 64, 128, 256, 512, 1024):
            X = rng.standard_normal((HEADS, L, F)).astype(DTYPE)
            c = rng.uniform(0, 1, 2 * L - 1).astype(DTYPE)
            t = {}
            for method in ("dense", "fft"):
                mask = Toeplitz(c, method=method)
                t[method] = H.time_calls(lambda mask=mask, X=X: mask.matmat(
                    X, backend="numpy", check_finite=False), repeats=repeats)["median_s"]
            costs = Toeplitz(c)._costs(F * HEADS)
            implied = FFT_COST_FACTOR * (t["fft"] / t["dense"]) * costs["dense"] / costs["fft"]
            table.append([F, L, t["dense"], t["fft"], min(t, key=t.get),
                          min(costs, key=costs.get), implied])
    print(H.format_table(["F", "L", "dense (s)", "fft (s)", "faster", "model picks",
                          "implied factor"], table))
    print(f"   FFT_COST_FACTOR in use: {FFT_COST_FACTOR}")


def crossover(rows: list[dict[str, Any]]) -> int | None:
    """Smallest measured L from which the FFT path beats the dense one at every larger L."""
    timed = [r for r in rows if r["dense_s"] is not None]
    best = None
    for r in reversed(timed):
        if r["fft_s"] < r["dense_s"]:
            best = r["L"]
        else:
            break
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="L up to 4096, 64x64 ripple only")
    p.add_argument("--out", help="write all measurements as JSON to this path")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dense-max", type=int, default=16384,
                   help="largest L for the dense quadratic baseline")
    p.add_argument("--calibrate", action="store_true",
                   help="only measure the dense/FFT crossover of Toeplitz products")
    p.add_argument("--record", default=None,
                   help="JSON record path (default benchmarks/results/rpe.json)")
    args = p.parse_args(argv)
    if args.calibrate:
        calibrate()
        return 0

    if args.quick:
        lengths, sides, repeats = [256, 1024, 4096], [64], 1
    else:
        lengths = [256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
        sides, repeats = [64, 128], args.repeats
    rec = H.Record("rpe", config={"quick": args.quick, "lengths": lengths, "sides": sides,
                                  "repeats": repeats, "dense_max": args.dense_max,
                                  "heads": HEADS, "d": D, "m": M, "dtype": "float32"})
    info = H.environment_info()
    H.print_header("bench_rpe: Toeplitz / ripple masked kernel attention", info,
                   [f"batch x heads = 1 x {HEADS}, m = d = d_v = {D}, float32, "
                    f"F = m·(d_v+1) = {M * (D + 1)} columns"])

    print("\n-- 1-D relative-position mask (Toeplitz.from_log), masked product", flush=True)
    trows = toeplitz_part(lengths, min(args.dense_max, max(lengths)), repeats)
    table = []
    for r in trows:
        ratio = None if r["dense_s"] is None else r["dense_s"] / r["fft_s"]
        table.append([r["L"], r["fft_s"], r["floor_s"], r["fft_s"] / r["floor_s"],
                      r["dense_s"], ratio, r["max_rel_diff"]])
    print(H.format_table(["L", "fft (s)", "floor (s)", "fft/floor", "dense (s)",
                          "dense/fft", "rel diff vs f64"], table))
    by_L = {r["L"]: r for r in trows}
    summary: dict[str, Any] = {"crossover_L": crossover(trows)}
    print(f"\n   crossover: FFT beats dense from L = {summary['crossover_L']} on")
    timed = [r for r in trows if r["dense_s"] is not None]
    if summary["crossover_L"] is None and timed and timed[-1]["L"] < max(by_L):
        # the dense path is O(L^2): extrapolate it from the longest measured length
        last = timed[-1]
        for r in trows:
            est = last["dense_s"] * (r["L"] / last["L"]) ** 2
            if r["L"] > last["L"] and r["fft_s"] < est:
                summary["crossover_L_extrapolated"] = r["L"]
                print(f"   extrapolated (dense ~ L^2 from L={last['L']}): FFT wins from about "
                      f"L = {r['L']} (dense est. {est:.1f}s vs fft {r['fft_s']:.1f}s)")
                break
    if 16384 in by_L and by_L[16384]["dense_s"]:
        ratio = by_L[16384]["dense_s"] / by_L[16384]["fft_s"]
        summary["dense_over_fft_16k"] = ratio
        print(f"   L=16384: dense/fft = {ratio:.1f}x (target >= 20x: "
              f"{'met' if ratio >= 20 else 'not met'})")
    worst_floor = max(r["fft_s"] / r["floor_s"] for r in trows if r["L"] >= 4096) \
        if any(r["L"] >= 4096 for r in trows) else None
    if worst_floor is not None:
        summary["fft_over_floor_max"] = worst_floor
        print(f"   fft/floor at L >= 4096: at most {worst_floor:.2f}x (target <= 3x: "
              f"{'met' if worst_floor <= 3 else 'not met'})")
    if 8192 in by_L and 65536 in by_L:
        expo = math.log(by_L[65536]["fft_s"] / by_L[8192]["fft_s"]) / math.log(8)
        summary["growth_exponent_8k_64k"] = expo
        print(f"   growth exponent 8k -> 64k: {expo:.3f} (target <= 1.15: "
              f"{'met' if expo <= 1.15 else 'not met'})")

    print("\n-- ripple (cutoff 8): SAT (numba) vs 2-D FFT vs dense", flush=True)
    rrows = ripple_part(sides, repeats)
    roof = H.machine_roofline(quick=args.quick)
    H.record_roofline(rec, roof)
    for r in rrows:
        r["sat_stream_frac"] = r["sat_gbs"] / roof["stream_gbs"]
    print(H.format_table(
        ["grid", "L", "SAT (s)", "FFT (s)", "dense (s)", "dense/SAT", "FFT/SAT", "SAT vs FFT",
         "SAT MiB touched", "SAT GB/s", "of stream"],
        [[r["grid"], r["L"], r["sat_s"], r["fft_s"], r["dense_s"], r["dense_s"] / r["sat_s"],
          r["fft_s"] / r["sat_s"], r["sat_vs_fft"], r["sat_bytes"] / 2**20, r["sat_gbs"],
          r["sat_stream_frac"]] for r in rrows]))
    print(f"   SAT bytes: ripple_sat_bytes (inputs/output once, 3 table passes, 4 corners x "
          f"cutoff per position, float64 table); stream triad {roof['stream_gbs']:.1f} GB/s "
          "measured in the same run")

    for part, rows in (("toeplitz", trows), ("ripple", rrows)):
        for r in rows:
            rec.add_measurement({"part": part, **r})
    rec.data["summary"] = summary
    rec.add_table(
        "toeplitz", "1-D relative-position (Toeplitz) masked product: FFT vs dense",
        ["L", "FFT (s)", "FFT floor (s)", "FFT / floor", "dense (s)", "x vs dense",
         "rel diff vs float64"], table,
        [f"Batch x heads = 1 x {HEADS}, m = d = d_v = {D}, float32, F = m (d_v + 1) columns; "
         "median of the repeats after one warm-up call, in-process; floor = the FFTs "
         "alone. Dense: the L x L masked product (BLAS)."])
    rec.add_table(
        "ripple", "Ripple mask (cutoff 8): summed-area table vs 2-D FFT vs dense",
        ["grid", "L", "SAT (s)", "FFT (s)", "dense (s)", "x vs dense (SAT)", "x vs FFT (SAT)",
         "SAT MiB touched", "SAT GB/s", "SAT of stream triad"],
        [[r["grid"], r["L"], r["sat_s"], r["fft_s"], r["dense_s"], r["dense_s"] / r["sat_s"],
          r["fft_s"] / r["sat_s"], r["sat_bytes"] / 2**20, r["sat_gbs"],
          r["sat_stream_frac"]] for r in rrows],
        ["Median of the repeats after one warm-up call, in-process. SAT bytes touched: per "
         "head, A, B, [V|1] and the output once (float32), three passes over the float64 "
         "L x F table (F = m (d_v + 1)) and 4 box corners of F float64 per radius and "
         "position (radii = cutoff); corner rows reused from cache are counted, so "
         "'of stream triad' (GB/s over the triad bandwidth measured in the same run) can "
         "exceed 1."])
    rec.write(args.record)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"environment": info, "toeplitz": trows, "ripple": rrows,
                       "summary": summary}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

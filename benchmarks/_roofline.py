"""A roofline measured in the benchmark's own run: what this machine can do, right now.

Every hot path of a benchmark is reported against the bound

    ``t_bound = max(flops / peak_flops, bytes / stream_bandwidth)``

where both ceilings are *measured in the same process* by :func:`machine_roofline`
(and cached for the life of that process: measured once, then reused):

* **GEMM GFLOP/s**, float32 and float64 (``2·M·N·K`` flops per product):

  - ``"large"``: the best of numpy's BLAS and torch on a square ``n x n @ n x n``
    (``n = 2048``; ``1024`` in quick mode); ``"large_numpy"``/``"large_torch"`` each;
  - ``"tall"``: ``(8·16384, 64) @ (64, 64)``, the feature maps' projection of all heads'
    rows at once (one tall-skinny BLAS call; its short inner dimension keeps it well
    below the square product's rate);
  - ``"batched"``: the small batched shape of the chunked causal scan and of MRA's
    blocks, ``(B, C, 64) @ (B, 64, 64)`` with ``C = 128`` and ``B = 8·L/C`` for
    ``L = 16384`` (``L = 4096`` in quick mode) — numpy ``matmul`` on stacked arrays;
  - ``"batched_cc"``: ``(B, C, C) @ (B, C, 64)``, the intra-chunk score-times-values
    product, same ``B`` and ``C``;
  - ``"batched_torch"``/``"batched_cc_torch"``: the same two on torch (``torch.bmm``).

* **FFT GFLOP/s** (``"fft"``): complex-to-complex transforms of length ``N = 2**16``,
  batched, by ``scipy.fft`` (and ``torch.fft``, best of both), counted with the usual
  ``5·N·log2(N)`` flops per complex transform of length ``N`` (a real transform of
  length ``N`` is then ``2.5·N·log2(N)``).  Float32 means complex64.

* **Memory bandwidth** (``stream_gbs``): the STREAM triad ``a = b + s·c`` on three
  float64 arrays of 256 MiB each (64 MiB in quick mode; both far larger than the last
  level cache), counted as ``3 x 8`` bytes per element (write-allocate traffic not
  counted, as in STREAM).  It runs as one fused ``torch.add(b, c, alpha=s, out=a)``
  when torch is installed, else as numba's parallel loop, else as two numpy passes
  (then counted as the ``5 x 8`` bytes those move).

Each number is the median of the timed repeats after a 0.2 s pause (other libraries'
spinning threads go idle) and one warm-up call, under the process's current thread
settings (recorded with it).  Quick mode takes about 6 s, full mode about 15 s.

Use::

    import _harness as H

    roof = H.machine_roofline(quick=args.quick)       # measured once per process
    H.record_roofline(rec, roof)                      # into the record: config + a table
    t_bound = H.roofline_bound(flops, nbytes, roof, "float32", gemm_kind="batched")
    frac = H.roofline_fraction(flops, nbytes, seconds, roof, "float32", "batched")
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "GEMM_KINDS",
    "machine_roofline",
    "record_roofline",
    "roofline_bound",
    "roofline_fraction",
    "roofline_rows",
]

#: Keys of ``roof["gflops"][dtype]``.
GEMM_KINDS = ("large", "large_numpy", "large_torch", "tall", "batched", "batched_cc",
              "batched_torch", "batched_cc_torch", "fft")

_CACHE: dict[bool, dict[str, Any]] = {}


#: Pause before each measurement: the previous library's worker threads (OpenBLAS spins
#: ~0.1 s after a call, GNU OpenMP a while too) must go idle, or they steal the cores
#: from the next one (measured: a 2x-3x swing of either GEMM on 2 cores without it).
_SETTLE_S = 0.2


def _median_time(fn: Callable[[], Any], repeats: int, budget_s: float) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after a pause and a warm-up."""
    time.sleep(_SETTLE_S)
    fn()
    times: list[float] = []
    t_start = time.perf_counter()
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 3 and time.perf_counter() - t_start > budget_s:
            break
    return statistics.median(times)


def _torch() -> Any:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a bench extra
        return None
    return torch


def _gemm(dtype: str, quick: bool, reps: int) -> dict[str, float | None]:
    torch = _torch()
    rng = np.random.default_rng(0)
    out: dict[str, float | None] = {}
    n = 1024 if quick else 2048
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    c = np.empty_like(a)
    flops = 2.0 * n**3
    out["large_numpy"] = flops / _median_time(lambda: np.matmul(a, b, out=c), reps, 2.0) / 1e9
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        tc = torch.empty_like(ta)
        out["large_torch"] = flops / _median_time(lambda: torch.mm(ta, tb, out=tc), reps,
                                                  2.0) / 1e9
    else:
        out["large_torch"] = None
    out["large"] = max(v for k, v in out.items() if v is not None)

    C, m = 128, 64
    rows = 8 * (4096 if quick else 16384)
    # tall: the feature maps' projection, all heads' rows at once against a d x m matrix
    xt = rng.standard_normal((rows, m)).astype(dtype)
    wt = rng.standard_normal((m, m)).astype(dtype)
    yt = np.empty((rows, m), dtype=dtype)
    out["tall"] = 2.0 * rows * m * m / _median_time(lambda: np.dot(xt, wt, out=yt), reps,
                                                    1.0) / 1e9
    nb = rows // C
    x = rng.standard_normal((nb, C, m)).astype(dtype)
    w = rng.standard_normal((nb, m, m)).astype(dtype)
    s = rng.standard_normal((nb, C, C)).astype(dtype)
    y = np.empty((nb, C, m), dtype=dtype)
    f_small = 2.0 * nb * C * m * m
    f_cc = 2.0 * nb * C * C * m
    out["batched"] = f_small / _median_time(lambda: np.matmul(x, w, out=y), reps, 1.0) / 1e9
    out["batched_cc"] = f_cc / _median_time(lambda: np.matmul(s, x, out=y), reps, 1.0) / 1e9
    if torch is not None:
        tx, tw, ts = (torch.from_numpy(z) for z in (x, w, s))
        ty = torch.from_numpy(y)
        out["batched_torch"] = f_small / _median_time(lambda: torch.bmm(tx, tw, out=ty), reps,
                                                      1.0) / 1e9
        out["batched_cc_torch"] = f_cc / _median_time(lambda: torch.bmm(ts, tx, out=ty),
                                                      reps, 1.0) / 1e9
    else:
        out["batched_torch"] = out["batched_cc_torch"] = None
    return out


def _fft(dtype: str, quick: bool, reps: int) -> float:
    import scipy.fft

    torch = _torch()
    n = 1 << 16
    batch = 16 if quick else 64
    cdtype = np.complex64 if dtype == "float32" else np.complex128
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((batch, n)) + 1j * rng.standard_normal((batch, n))).astype(cdtype)
    flops = batch * 5.0 * n * math.log2(n)
    try:
        import os

        workers = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        workers = 1
    best = flops / _median_time(lambda: scipy.fft.fft(x, axis=-1, workers=workers), reps,
                                1.0) / 1e9
    if torch is not None:
        tx = torch.from_numpy(x)
        best = max(best, flops / _median_time(lambda: torch.fft.fft(tx, dim=-1), reps, 1.0)
                   / 1e9)
    return best


def _stream(quick: bool, reps: int) -> tuple[float, str]:
    """Triad bandwidth in GB/s (1e9 bytes/s) and the way it was run."""
    n = (64 if quick else 256) * (1 << 20) // 8
    s = 3.0
    torch = _torch()
    if torch is not None:
        a, b, c = (torch.empty(n, dtype=torch.float64) for _ in range(3))
        b.fill_(1.0)
        c.fill_(2.0)
        a.fill_(0.0)
        t = _median_time(lambda: torch.add(b, c, alpha=s, out=a), reps, 2.0)
        return 3 * 8 * n / t / 1e9, "torch.add(b, c, alpha=s, out=a)"
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a core dependency
        numba = None
    a, b, c = np.zeros(n), np.ones(n), np.full(n, 2.0)
    if numba is not None:
        @numba.njit(parallel=True, cache=False)
        def triad(a, b, c, s):  # pragma: no cover - compiled
            for i in numba.prange(a.shape[0]):
                a[i] = b[i] + s * c[i]

        t = _median_time(lambda: triad(a, b, c, s), reps, 2.0)
        return 3 * 8 * n / t / 1e9, "numba prange loop"

    def two_pass() -> None:  # pragma: no cover - fallback
        np.multiply(c, s, out=a)
        np.add(a, b, out=a)

    t = _median_time(two_pass, reps, 2.0)
    return 5 * 8 * n / t / 1e9, "numpy, two passes (5 x 8 bytes per element)"


def machine_roofline(quick: bool = False, *, refresh: bool = False) -> dict[str, Any]:
    """Measure this machine's ceilings now (once per process and mode; then cached).

    Parameters
    ----------
    quick : bool
        Smaller problems and fewer repeats (a few seconds instead of ~15 s).
    refresh : bool
        Measure again even if this process already did.

    Returns
    -------
    dict
        ``{"gflops": {"float32": {kind: GFLOP/s}, "float64": {...}}, "stream_gbs": GB/s,
        "stream_how": str, "threads": {...}, "quick": bool, "measure_s": float,
        "conventions": {...}}``; the kinds are :data:`GEMM_KINDS` (a kind whose library
        is missing is None).  JSON-serializable: store it in the benchmark record.
    """
    quick = bool(quick)
    if quick in _CACHE and not refresh:
        return _CACHE[quick]
    t0 = time.perf_counter()
    reps = 3 if quick else 7
    gflops: dict[str, dict[str, float | None]] = {}
    for dtype in ("float32", "float64"):
        g = _gemm(dtype, quick, reps)
        g["fft"] = _fft(dtype, quick, reps)
        gflops[dtype] = g
    bw, how = _stream(quick, reps)
    torch = _torch()
    threads: dict[str, Any] = {"torch": torch.get_num_threads() if torch is not None else None}
    try:
        import numba

        threads["numba"] = numba.get_num_threads()
    except ImportError:  # pragma: no cover
        threads["numba"] = None
    roof = {
        "gflops": gflops,
        "stream_gbs": bw,
        "stream_how": how,
        "threads": threads,
        "quick": quick,
        "measure_s": time.perf_counter() - t0,
        "conventions": {
            "gemm": "2*M*N*K flops per product; median of repeats after a warm-up",
            "large": f"square {1024 if quick else 2048}^2, best of numpy BLAS and torch",
            "tall": f"(8*{4096 if quick else 16384}, 64) @ (64, 64), numpy (feature maps)",
            "batched": f"(8*{4096 if quick else 16384}/128, 128, 64) @ (., 64, 64), numpy",
            "batched_cc": f"(8*{4096 if quick else 16384}/128, 128, 128) @ (., 128, 64), numpy",
            "fft": "complex FFT, N = 2**16, 5*N*log2(N) flops, best of scipy.fft and torch",
            "stream": f"triad a = b + s*c, 3 x {64 if quick else 256} MiB float64, "
                      "24 bytes per element",
        },
    }
    _CACHE[quick] = roof
    return roof


def _dtype_name(dtype: Any) -> str:
    name = str(getattr(dtype, "name", dtype)).replace("torch.", "")
    if name in ("float", "single"):
        return "float32"
    if name in ("double",):
        return "float64"
    if name not in ("float32", "float64"):
        raise ValueError(f"roofline dtype must be float32 or float64, got {dtype!r}")
    return name


def roofline_bound(flops: float, bytes: float, roof: dict[str, Any], dtype: Any,
                   gemm_kind: str = "large") -> float:
    """Lower bound on the time of a computation: ``max(flops/peak, bytes/bandwidth)``.

    Parameters
    ----------
    flops : float
        Counted floating-point operations (a multiply-add is 2).
    bytes : float
        Counted bytes that must cross the memory bus (inputs read once, outputs written).
    roof : dict
        From :func:`machine_roofline`.
    dtype : str or dtype
        ``"float32"`` / ``"float64"`` (numpy or torch dtypes accepted).
    gemm_kind : str
        Which compute ceiling applies, one of :data:`GEMM_KINDS`.

    Returns
    -------
    float
        Seconds.
    """
    if gemm_kind not in GEMM_KINDS:
        raise ValueError(f"gemm_kind must be one of {GEMM_KINDS}, got {gemm_kind!r}")
    peak = roof["gflops"][_dtype_name(dtype)][gemm_kind]
    if peak is None:
        peak = roof["gflops"][_dtype_name(dtype)]["large"]
    return max(float(flops) / (peak * 1e9), float(bytes) / (roof["stream_gbs"] * 1e9))


def roofline_fraction(flops: float, bytes: float, seconds: float, roof: dict[str, Any],
                      dtype: Any, gemm_kind: str = "large") -> float:
    """Fraction of the roofline reached: ``roofline_bound(...) / seconds`` (1 = at the roof)."""
    return roofline_bound(flops, bytes, roof, dtype, gemm_kind) / float(seconds)


def roofline_rows(roof: dict[str, Any]) -> tuple[list[str], list[list[Any]], list[str]]:
    """Columns, rows and notes of a table of the measured ceilings (for ``add_table``)."""
    cols = ["ceiling", "float32", "float64", "unit"]
    g32, g64 = roof["gflops"]["float32"], roof["gflops"]["float64"]
    rows: list[list[Any]] = [[k, g32.get(k), g64.get(k), "GFLOP/s"] for k in GEMM_KINDS]
    rows.append(["stream triad", roof["stream_gbs"], roof["stream_gbs"], "GB/s"])
    notes = [f"{k}: {v}" for k, v in roof["conventions"].items()]
    notes.append(f"stream triad run as {roof['stream_how']}; threads {roof['threads']}; "
                 f"measured in {roof['measure_s']:.1f} s of the same run")
    return cols, rows, notes


def record_roofline(rec: Any, roof: dict[str, Any], key: str = "roofline") -> None:
    """Store ``roof`` in a :class:`Record`: ``config["roofline"]`` and a table ``key``."""
    rec.data["config"]["roofline"] = roof
    cols, rows, notes = roofline_rows(roof)
    rec.add_table(key, "Measured roofline of this run (same process)", cols, rows, notes)

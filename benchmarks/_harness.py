"""Shared helpers of the benchmark scripts: timing, peak memory, isolation, tables.

Plain Python, no pytest.  Every benchmark configuration runs in a fresh process, forked
from a zygote that has only imported the libraries (:class:`ForkServer`), or started as
a new interpreter (:func:`run_isolated`), so that its timing and peak-memory reading are
not polluted by another configuration, by numba's compiler or by an earlier allocation
high-water mark.

Peak memory
-----------
:func:`measure_peak` resets the kernel's resident-set high-water mark of this process
(``echo 5 > /proc/self/clear_refs``, Linux >= 4.0), so that it equals the current RSS,
runs the call, and reads the high-water mark again: the difference is the extra
resident memory the call needed at its peak (temporaries *and* its outputs), on top of
the inputs that already existed.  The mark is read as ``VmHWM`` from
``/proc/self/status``.  ``ru_maxrss`` is the same counter *maxed with* a per-process
value that cannot be reset and that Linux seeds at ``exec`` with the peak RSS of the
pre-exec image, i.e. of the forked parent: in a worker started by a benchmark driver
that has imported torch, ``ru_maxrss`` never drops below the driver's few hundred MiB
and the difference reads 0.  Where ``/proc`` is unavailable it falls back to the
``ru_maxrss`` difference (which can only under-report) and says so.

Before that call :func:`strict_malloc` makes glibc return freed memory to the OS
(fixed mmap threshold, trim): otherwise a buffer freed by an earlier call could be
reused without raising the RSS and the peak would be under-reported.

Recorded runs
-------------
Every benchmark writes one JSON record under ``benchmarks/results/`` with
:class:`Record` (defined in ``_records.py``, re-exported here: ``H.Record``)::

    rec = H.Record("causal", config={...})      # commit, versions, cores, threads, load before
    rec.add_measurement({...})                  # every raw timing, with its repeats
    rec.add_table(key, title, columns, rows, notes=[...])   # a table the docs show
    rec.write()                                 # load after, under_load, results/causal.json

``benchmarks/make_tables.py`` turns the tables of all records into
``docs/_generated/<name>__<key>.rst`` (included by the docs pages); see ``_records.py``.

Roofline
--------
``H.machine_roofline(quick)`` measures this machine's GEMM / FFT GFLOP/s and stream
bandwidth in the same process (once, then cached), ``H.roofline_bound(flops, bytes, roof,
dtype, gemm_kind)`` is ``max(flops / peak, bytes / bandwidth)`` in seconds,
``H.roofline_fraction(...)`` that bound over a measured time, ``H.record_roofline(rec,
roof)`` stores it in a record (config and a table); see ``_roofline.py``.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "RESULTS_DIR",
    "ForkServer",
    "MiB",
    "Record",
    "cpu_busy_seconds",
    "environment_info",
    "format_table",
    "git_commit",
    "load_state",
    "machine_roofline",
    "measure_peak",
    "nbytes",
    "other_load",
    "print_header",
    "process_cpu_seconds",
    "record_roofline",
    "roofline_bound",
    "roofline_fraction",
    "run_isolated",
    "strict_malloc",
    "time_calls",
    "zygote_serve",
]

MiB = float(1 << 20)
_RESULT_TAG = "BENCH-RESULT-JSON: "


# ------------------------------------------------------------------------ timing
def time_calls(
    fn: Callable[[], Any],
    *,
    repeats: int,
    warmup: bool = True,
    budget_s: float | None = None,
    min_repeats: int = 1,
) -> dict[str, Any]:
    """Time ``fn()`` with ``time.perf_counter``: one warm-up call, then ``repeats`` calls.

    The warm-up call is timed too and reported as ``first_call_s`` (for numba this is the
    compile time, or the cache load).  With ``budget_s`` the timed repeats stop early once
    their cumulative time exceeds it (after at least ``min_repeats``).

    Returns a dict with ``first_call_s`` (None without warm-up), ``times_s`` and
    ``median_s``.
    """
    first = None
    if warmup:
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
    times: list[float] = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if budget_s is not None and len(times) >= min_repeats and sum(times) > budget_s:
            break
    return {"first_call_s": first, "times_s": times, "median_s": statistics.median(times)}


# ------------------------------------------------------------------- other load
def cpu_busy_seconds() -> float | None:
    """CPU seconds all processes of the machine have used since boot (``/proc/stat``:
    user + nice + system + irq + softirq, summed over CPUs), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds() -> float:
    """CPU seconds (user + system, all threads) this process has used."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def other_load(seconds: float = 2.0) -> float | None:
    """Cores' worth of CPU used by *other* processes over the next ``seconds``."""
    b0, c0, t0 = cpu_busy_seconds(), process_cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    b1, c1, t1 = cpu_busy_seconds(), process_cpu_seconds(), time.perf_counter()
    if b0 is None or b1 is None:
        return None
    return max(0.0, (b1 - b0) - (c1 - c0)) / (t1 - t0)


# ------------------------------------------------------------------------ memory
_clear_refs_ok: bool | None = None


def _reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark; True when the kernel allowed it."""
    global _clear_refs_ok
    if _clear_refs_ok is False:
        return False
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _clear_refs_ok = True
    except OSError:
        _clear_refs_ok = False
    return _clear_refs_ok


def _maxrss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) * (1 if sys.platform == "darwin" else 1024)


def _vm_hwm_bytes() -> int | None:
    """``VmHWM`` (peak RSS of this process's address space) in bytes, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def strict_malloc() -> bool:
    """Make glibc give freed blocks >= 64 KiB back to the OS (so RSS tracks live memory).

    Fixes ``M_MMAP_THRESHOLD`` (disabling glibc's dynamic threshold, which otherwise
    grows to 32 MiB after the first free and keeps large buffers in the heap) and trims
    the heap now.  Call it after timing and before :func:`measure_peak`; it changes
    allocation speed, not results.  Returns False where glibc is not found.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
        libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
        libc.malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def measure_peak(fn: Callable[[], Any]) -> dict[str, Any]:
    """Extra peak RSS of one call of ``fn`` (bytes), and the call's time.

    The result of ``fn`` is kept alive until the reading is taken (outputs count).
    """
    import gc

    gc.collect()
    exact = _reset_peak_rss() and _vm_hwm_bytes() is not None
    peak = _vm_hwm_bytes if exact else _maxrss_bytes
    before = peak()
    t0 = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - t0
    after = peak()
    del result
    return {
        "peak_extra_bytes": max(0, after - before),
        "rss_before_bytes": before,
        "time_s": elapsed,
        "method": "clear_refs + VmHWM" if exact else "ru_maxrss (no reset: may under-report)",
    }


def nbytes(*arrays: Any) -> int:
    """Total bytes of numpy arrays / torch tensors (None entries ignored)."""
    total = 0
    for a in arrays:
        if a is None:
            continue
        if hasattr(a, "nbytes"):
            total += int(a.nbytes)
        else:  # torch < 2.x
            total += int(a.numel() * a.element_size())
    return total


# -------------------------------------------------------------------- isolation
def worker_emit(result: dict[str, Any]) -> None:
    """Print a worker's result as the tagged last line the parent parses."""
    sys.stdout.flush()
    print(_RESULT_TAG + json.dumps(result), flush=True)


def run_isolated(
    script: str,
    spec: dict[str, Any],
    *,
    env: dict[str, str] | None = None,
    timeout_s: float = 1800.0,
) -> dict[str, Any]:
    """Run ``python script --worker SPEC_JSON`` in a fresh interpreter; return its result.

    On failure returns ``{"error": ...}`` with the tail of the worker's output.
    """
    cmd = [sys.executable, script, "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT_TAG):
            return json.loads(line[len(_RESULT_TAG):])
    tail = (proc.stdout + proc.stderr)[-2000:]
    return {"error": f"worker exited with {proc.returncode}: {tail}"}


def zygote_serve(worker: Callable[[dict[str, Any]], dict[str, Any]],
                 preload: Callable[[], None]) -> None:
    """Fork server loop (runs in the zygote process started by :class:`ForkServer`).

    Imports the heavy modules once (``preload``: imports only, no computation, so no
    BLAS/OpenMP/numba thread pool has run yet), then for every JSON spec read from stdin
    forks a child that runs ``worker(spec)`` and sends its result back through a pipe;
    the zygote prints it as one tagged line.  Each configuration thus runs in its own
    fresh process (own address space, own thread pools, own RSS high-water mark)
    without paying the ~1.5 s of importing torch again.
    """
    import traceback

    preload()
    print(_RESULT_TAG + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        spec = json.loads(line)
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            os.close(rfd)
            os.dup2(2, 1)  # keep stray prints off the protocol stream
            try:
                payload = json.dumps(worker(spec))
            except BaseException:
                payload = json.dumps({"error": traceback.format_exc()[-2000:]})
            data = payload.encode()
            while data:
                data = data[os.write(wfd, data):]
            os.close(wfd)
            os._exit(0)
        os.close(wfd)
        chunks = []
        while True:
            chunk = os.read(rfd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(rfd)
        _, status = os.waitpid(pid, 0)
        text = b"".join(chunks).decode()
        if not text:
            text = json.dumps({"error": f"child died (wait status {status})"})
        print(_RESULT_TAG + text, flush=True)


class ForkServer:
    """Parent side of :func:`zygote_serve`: ``run(spec)`` -> the child's result dict.

    Started as ``python script --zygote`` with ``env``; the zygote's stderr goes to a
    temporary file whose tail is reported on errors.
    """

    def __init__(self, script: str, env: dict[str, str] | None = None):
        import tempfile

        self._script, self._env = script, env
        self._err = tempfile.TemporaryFile(mode="w+")
        self._proc: subprocess.Popen | None = None

    def start(self) -> subprocess.Popen:
        """Start the zygote (if not running) and wait until it has imported everything,
        so that its import time does not overlap a measured configuration."""
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, self._script, "--zygote"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=self._err, text=True, env=self._env,
                start_new_session=True,  # its own process group: the zygote and its child
            )
            self._proc.stdout.readline()  # the "ready" line (or "" if it died)
        return self._proc

    def run(self, spec: dict[str, Any], timeout_s: float = 1800.0) -> dict[str, Any]:
        import select

        proc = self.start()
        if proc.poll() is not None:
            self._err.seek(0)
            return {"error": f"zygote died at start: {self._err.read()[-2000:]}"}
        proc.stdin.write(json.dumps(spec) + "\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        line = proc.stdout.readline() if ready else ""
        if line.startswith(_RESULT_TAG):
            return json.loads(line[len(_RESULT_TAG):])
        # timed out or the zygote died: end its process group (the zygote and the child
        # it forked) and start a new zygote on the next call
        self._kill()
        self._err.seek(0)
        tail = self._err.read()[-2000:]
        why = f"timed out after {timeout_s:.0f} s" if not ready else "zygote died"
        return {"error": f"{why}: {tail}"}

    def _kill(self) -> None:
        import signal

        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._proc.wait()
        self._proc = None

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._kill()
        self._proc = None


# ------------------------------------------------------------------ environment
def _openblas_info() -> dict[str, Any]:
    """Core type and threads of the OpenBLAS that numpy loaded (via its C API)."""
    import numpy as np  # noqa: F401  (loads numpy's BLAS)

    info: dict[str, Any] = {}
    try:
        libs = sorted(
            {ln.split()[-1] for ln in open("/proc/self/maps") if "openblas" in ln.lower()}
        )
    except OSError:
        return info
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas_", "64_"), ("scipy_openblas_", ""),
                               ("openblas_", "64_"), ("openblas_", "")):
            try:
                core = getattr(lib, f"{prefix}get_corename{suffix}")
                config = getattr(lib, f"{prefix}get_config{suffix}")
                threads = getattr(lib, f"{prefix}get_num_threads{suffix}")
            except AttributeError:
                continue
            core.restype = config.restype = ctypes.c_char_p
            threads.restype = ctypes.c_int
            info = {
                "library": os.path.basename(path),
                "corename": core().decode(),
                "config": config().decode().strip(),
                "num_threads": threads(),
            }
            return info
    return info


def environment_info() -> dict[str, Any]:
    """Versions, thread counts and the environment variables that change timings."""
    import numpy as np

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "openblas": _openblas_info(),
        "env": {
            k: os.environ.get(k)
            for k in (
                "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "NUMBA_NUM_THREADS",
                "MKL_NUM_THREADS",
            )
        },
    }
    try:
        import numba

        info["numba"] = numba.__version__
        info["numba_threads"] = numba.get_num_threads()
    except ImportError:
        info["numba"] = None
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    try:
        import importlib.metadata as md

        info["performer_pytorch"] = md.version("performer-pytorch")
    except Exception:
        info["performer_pytorch"] = None
    return info


def print_header(title: str, info: dict[str, Any], extra: Sequence[str] = ()) -> None:
    """Print the benchmark header: machine, versions, threads, BLAS core, env vars."""
    ob = info.get("openblas") or {}
    print(f"== {title}")
    print(f"   machine : {info['cpu']} ({info['cpu_count']} CPUs), {info['platform']}")
    print(
        f"   versions: python {info['python']}, numpy {info['numpy']}, numba "
        f"{info.get('numba')}, torch {info.get('torch')}, performer-pytorch "
        f"{info.get('performer_pytorch')}"
    )
    print(
        f"   threads : numba.get_num_threads()={info.get('numba_threads')}, "
        f"torch.get_num_threads()={info.get('torch_threads')}, "
        f"OpenBLAS threads={ob.get('num_threads')}"
    )
    print(f"   numpy BLAS: {ob.get('config', 'unknown')} (core in use: {ob.get('corename')})")
    env = ", ".join(f"{k}={v if v is not None else '<unset>'}" for k, v in info["env"].items())
    print(f"   env     : {env}")
    for line in extra:
        print(f"   {line}")


# ----------------------------------------------------------------------- tables
def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain-text table, right-aligned numbers, left-aligned text."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
        for i, h in enumerate(headers)
    ]
    numeric = [
        all(_is_number(row[i]) for row in rows if row[i] not in (None, "")) for i in range(
            len(headers))
    ]

    def line(vals: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(vals, widths, numeric, strict=True)
        ).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) or (
        isinstance(v, str) and v.replace(".", "", 1).replace("x", "").strip().isdigit()
    )


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    return str(v)


# Record-writing API (its own module; imported last: it uses the helpers above)
from _records import RESULTS_DIR, Record, _cpu_model, git_commit, load_state  # noqa: E402

# Measured roofline (its own module): peak GEMM/FFT GFLOP/s and stream bandwidth of this run
from _roofline import (  # noqa: E402
    machine_roofline,
    record_roofline,
    roofline_bound,
    roofline_fraction,
)

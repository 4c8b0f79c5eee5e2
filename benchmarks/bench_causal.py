"""Causal (and non-causal) kernel attention: structattn vs dense, SDPA and performer-pytorch.

Usage::

    python benchmarks/bench_causal.py [--quick] [--out results.json]

Problem: batch x heads = 1 x 8, L in {1024, 4096, 16384}, d = d_v = 64, m = 64 random
features (``PositiveRandomFeatures(64, 64, seed=0)``), float32, inputs standard normal.

Methods (one table per mode, causal and non-causal):

* ``dense numpy softmax``     exact softmax attention, quadratic, numpy float32, one head
                              at a time (L x L scores, mask, exp, normalize): the baseline;
* ``sa numba masked_matmul``  ``Causal(L).masked_matmul(A, B, [V|1], backend="numba")``
                              (non-causal: ``Full(L)``) on the features ``A = φ(Q)``,
                              ``B = φ(K)``; the ones column gives the normalizer; causal:
                              the chunked-GEMM scan (chunks of ``C`` from the cost model);
* ``sa numba row recurrence`` (causal only) the same product by the former kernel, one
                              rank-one update per row (``method="recurrence"``);
* ``sa numpy masked_matmul``  the same product on ``backend="numpy"``: the array-API
                              chunked scan, numpy ``matmul`` on stacked chunks;
* ``sa numba kernel_attn``    ``kernel_attention(q, k, v, φ, causal=..., backend="numba")``;
* ``sa torch masked_matmul``  the same product on torch tensors (``backend="torch"``,
                              chunked scan), forward, and forward+backward;
* ``sa torch kernel_attn``    ``kernel_attention`` on torch tensors, fwd and fwd+bwd;
* ``torch SDPA``              ``scaled_dot_product_attention(q, k, v, is_causal=...)``,
                              exact softmax, fwd and fwd+bwd;
* ``performer-pytorch``       ``causal_linear_attention_noncuda(A, B, V)`` (non-causal:
                              ``linear_attention``) on the *same* features ``A``, ``B``:
                              the second baseline (kernel level).

Every (mode, L, method) runs in a fresh subprocess: warm-up call (reported as "first
call"), median of the timed repeats, then one more call whose extra peak RSS is measured
(see ``_harness.py``).  Ratios use baselines measured in the same run.

Roofline: the parent measures this machine's ceilings once, before the workers run
(``H.machine_roofline``: float32 GEMM GFLOP/s, stream-triad GB/s), and every row gets its
counted flops and bytes, and its fraction of the bound ``max(flops / GEMM peak, bytes /
bandwidth)`` (:func:`work`, which states how each method is counted).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness as H

BATCH, HEADS, D, M = 1, 8, 64, 64
SEED = 0
PERFORMER_EPS = 1e-6  # eps of causal_linear_attention_noncuda: D = q·(cumsum(k) + eps)
F32_TOL = 1e-4  # agreement threshold of float32 outputs (max|Δ| / max|ref|)
OTHER_LOAD_WARN = 0.2  # cores used by other processes during a configuration: flagged

# key -> (label, needs torch, forward+backward)
METHODS: dict[str, tuple[str, bool, bool]] = {
    "dense_numpy": ("dense numpy softmax", False, False),
    "sa_numba_kernel": ("sa numba masked_matmul", False, False),
    "sa_numba_recurrence": ("sa numba row recurrence", False, False),
    "sa_numpy_kernel": ("sa numpy masked_matmul", False, False),
    "sa_numba_e2e": ("sa numba kernel_attn", False, False),
    "sa_torch_kernel_fwd": ("sa torch masked_matmul fwd", True, False),
    "sa_torch_kernel_fwdbwd": ("sa torch masked_matmul fwd+bwd", True, True),
    "sa_torch_e2e_fwd": ("sa torch kernel_attn fwd", True, False),
    "sa_torch_e2e_fwdbwd": ("sa torch kernel_attn fwd+bwd", True, True),
    "sdpa_fwd": ("torch SDPA fwd", True, False),
    "sdpa_fwdbwd": ("torch SDPA fwd+bwd", True, True),
    "performer": ("performer-pytorch kernel fwd", True, False),
    "performer_fwdbwd": ("performer-pytorch kernel fwd+bwd", True, True),
    "performer_e2e_fwd": ("performer-pytorch FastAttention fwd", True, False),
    "performer_e2e_fwdbwd": ("performer-pytorch FastAttention fwd+bwd", True, True),
}
# level and pass of every method: the tables compare like with like
LEVEL = {"dense_numpy": "e2e", "sa_numba_kernel": "kernel", "sa_numba_e2e": "e2e",
         "sa_numba_recurrence": "kernel", "sa_numpy_kernel": "kernel",
         "sa_torch_kernel_fwd": "kernel", "sa_torch_kernel_fwdbwd": "kernel",
         "sa_torch_e2e_fwd": "e2e", "sa_torch_e2e_fwdbwd": "e2e", "sdpa_fwd": "e2e",
         "sdpa_fwdbwd": "e2e", "performer": "kernel", "performer_fwdbwd": "kernel",
         "performer_e2e_fwd": "e2e", "performer_e2e_fwdbwd": "e2e"}
NUMBA_METHODS = ("sa_numba_kernel", "sa_numba_e2e", "sa_numba_recurrence")
CAUSAL_ONLY = ("sa_numba_recurrence",)
# slow baselines that --quick runs once (one call timed and memory-measured
# at once, no warm-up at that size): keeps the --quick run within minutes
QUICK_SINGLE_SHOT = ("dense_numpy", "performer", "performer_fwdbwd", "performer_e2e_fwd",
                     "performer_e2e_fwdbwd")


# =========================================================================== worker
def dense_softmax_numpy(q, k, v, causal: bool, block: int = 512):
    """Exact softmax attention in numpy float32, one (batch, head) slice at a time.

    Per head: ``S = Q Kᵀ/√d`` (L x L float32), masked entries set to -inf (causal),
    ``S -= rowmax``, ``exp`` in place, ``out = (S V) / rowsum(S)``.  Peak extra memory
    is one L x L float32 matrix (1 GiB at L = 16384) plus the output.
    """
    import numpy as np

    *batch, L, d = q.shape
    dv = v.shape[-1]
    qf, kf, vf = (x.reshape(-1, x.shape[-2], x.shape[-1]) for x in (q, k, v))
    scale = np.float32(1.0 / math.sqrt(d))
    out = np.empty((qf.shape[0], L, dv), dtype=q.dtype)
    upper = np.triu(np.ones((block, block), dtype=bool), 1)
    for h in range(qf.shape[0]):
        S = (qf[h] * scale) @ kf[h].T
        if causal:
            for r0 in range(0, L, block):
                r1 = min(r0 + block, L)
                S[r0:r1, r1:] = -np.inf
                S[r0:r1, r0:r1][upper[: r1 - r0, : r1 - r0]] = -np.inf
        S -= S.max(axis=1, keepdims=True)
        np.exp(S, out=S)
        den = S.sum(axis=1, keepdims=True)
        out[h] = (S @ vf[h]) / den
        del S
    return out.reshape(*batch, L, dv)


def performer_fast_attention(causal: bool, dim_heads: int = D, seed: int = SEED):
    """performer-pytorch's end-to-end FAVOR+ layer: ``FastAttention(dim_heads, nb_features=M,
    causal=...)`` (softmax kernel, its own orthogonal random features drawn with
    ``torch.manual_seed(seed)``); called as ``attn(q, k, v)`` on ``(b, h, L, d)``."""
    import contextlib
    import io

    import torch
    from performer_pytorch import FastAttention

    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):  # "unable to import cuda code" notice
        return FastAttention(dim_heads=dim_heads, nb_features=M, causal=causal)


class _Case:
    """One method on one problem: ``call()`` runs it, ``reset()`` drops its results."""

    def __init__(self, call, reset=None, io_bytes: int = 0, io_note: str = ""):
        self.call = call
        self.reset = reset or (lambda: None)
        self.io_bytes = io_bytes
        self.io_note = io_note


def _make_case(method: str, causal: bool, q, k, v) -> tuple[_Case, Any]:
    """Set up ``method`` on numpy inputs ``q, k, v``; returns the case and a
    function ``outputs()`` giving named float32 arrays for the agreement checks."""
    import numpy as np

    from structattn import PositiveRandomFeatures, kernel_attention
    from structattn.masks import Causal, Full

    L = q.shape[-2]
    fm = PositiveRandomFeatures(D, M, seed=SEED)
    mask = Causal(L) if causal else Full(L)
    state: dict[str, Any] = {}

    def features():
        A = fm.queries(q)
        B = fm.keys(k, causal=causal)
        V1 = np.concatenate([v, np.ones_like(v[..., :1])], axis=-1)
        return A, B, V1

    if method == "dense_numpy":
        def call():
            state["out"] = dense_softmax_numpy(q, k, v, causal)
            return state["out"]

        case = _Case(call, state.clear, H.nbytes(q, k, v, q), "q,k,v,out")
        return case, lambda: {"attn": state["out"]}

    if method == "sa_numba_kernel":
        A, B, V1 = features()

        def call():
            state["out"] = mask.masked_matmul(A, B, V1, backend="numba", check_finite=False)
            return state["out"]

        def outputs():
            out = state["out"]
            num, den = out[..., :-1], out[..., -1:]
            res = {"attn": num / den}
            if causal:  # performer's normalizer: q·(cumsum k + eps)
                res["attn_eps"] = num / (den + PERFORMER_EPS * A.sum(-1, keepdims=True))
            return res

        case = _Case(call, state.clear, H.nbytes(A, B, V1, V1), "A,B,[V|1],out")
        return case, outputs

    if method == "sa_numba_recurrence":
        from structattn.backends.numba.causal import causal_masked_matmul_recurrence

        A, B, V1 = features()

        def call():
            state["out"] = causal_masked_matmul_recurrence(A, B, V1)
            return state["out"]

        def outputs():
            out = state["out"]
            return {"attn": out[..., :-1] / out[..., -1:]}

        return _Case(call, state.clear, H.nbytes(A, B, V1, V1), "A,B,[V|1],out"), outputs

    if method == "sa_numpy_kernel":
        A, B, V1 = features()

        def call():
            state["out"] = mask.masked_matmul(A, B, V1, backend="numpy", check_finite=False)
            return state["out"]

        def outputs():
            out = state["out"]
            return {"attn": out[..., :-1] / out[..., -1:]}

        return _Case(call, state.clear, H.nbytes(A, B, V1, V1), "A,B,[V|1],out"), outputs

    if method == "sa_numba_e2e":
        def call():
            state["out"] = kernel_attention(q, k, v, fm, causal=causal, backend="numba",
                                            check_finite=False)
            return state["out"]

        case = _Case(call, state.clear, H.nbytes(q, k, v, v), "q,k,v,out")
        return case, lambda: {"attn": state["out"]}

    import torch
    import torch.nn.functional as F

    torch.manual_seed(SEED)
    fwdbwd = METHODS[method][2]

    def leaves(*arrays):
        ts = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
        if fwdbwd:
            ts = [t.requires_grad_() for t in ts]
        return ts

    def runner(forward, inputs, out_shape):
        G = torch.randn(out_shape) if fwdbwd else None

        def call():
            for t in inputs:
                t.grad = None
            out = forward(*inputs)
            if fwdbwd:
                out.backward(G)
                state["out"] = out.detach()
                return out, [t.grad for t in inputs]
            state["out"] = out
            return out

        def reset():
            state.clear()
            for t in inputs:
                t.grad = None

        grads = H.nbytes(*inputs) if fwdbwd else 0
        return call, reset, H.nbytes(*inputs, G) + grads

    if method.startswith("sa_torch_kernel"):
        A, B, V1 = features()
        inputs = leaves(A, B, V1)

        def fwd(a, b, v1):
            return mask.masked_matmul(a, b, v1, backend="torch", check_finite=False)

        call, reset, io = runner(fwd, inputs, V1.shape)

        def outputs():
            out = state["out"].numpy()
            return {"attn": out[..., :-1] / out[..., -1:]}

        note = "A,B,[V|1],out" + (",G,dA,dB,d[V|1]" if fwdbwd else "")
        return _Case(call, reset, io + H.nbytes(V1), note), outputs

    if method.startswith("sa_torch_e2e"):
        inputs = leaves(q, k, v)

        def fwd(qt, kt, vt):
            return kernel_attention(qt, kt, vt, fm, causal=causal, backend="torch",
                                    check_finite=False)

        call, reset, io = runner(fwd, inputs, v.shape)
        note = "q,k,v,out" + (",G,dq,dk,dv" if fwdbwd else "")
        return (_Case(call, reset, io + H.nbytes(v), note),
                lambda: {"attn": state["out"].numpy()})

    if method.startswith("sdpa"):
        inputs = leaves(q, k, v)

        def fwd(qt, kt, vt):
            return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)

        call, reset, io = runner(fwd, inputs, v.shape)
        note = "q,k,v,out" + (",G,dq,dk,dv" if fwdbwd else "")
        return (_Case(call, reset, io + H.nbytes(v), note),
                lambda: {"attn": state["out"].numpy()})

    if method in ("performer", "performer_fwdbwd"):
        from performer_pytorch.performer_pytorch import (
            causal_linear_attention_noncuda,
            linear_attention,
        )

        A, B, _ = features()
        inputs = leaves(A, B, v)
        fn = causal_linear_attention_noncuda if causal else linear_attention
        call, reset, io = runner(fn, inputs, v.shape)
        return (_Case(call, reset, io + H.nbytes(v), "A,B,V,out"),
                lambda: {"attn": state["out"].numpy()})

    if method.startswith("performer_e2e"):
        attn = performer_fast_attention(causal)
        inputs = leaves(q, k, v)
        call, reset, io = runner(attn, inputs, v.shape)
        note = "q,k,v,out" + (",G,dq,dk,dv" if fwdbwd else "")
        return (_Case(call, reset, io + H.nbytes(v), note),
                lambda: {"attn": state["out"].numpy()})

    raise ValueError(f"unknown method {method!r}")


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration (in its own process) and return its measurements."""
    import numpy as np

    L, causal, method = spec["L"], spec["mode"] == "causal", spec["method"]
    rng = np.random.default_rng(SEED)
    q, k, v = (rng.standard_normal((BATCH, HEADS, L, D), dtype=np.float32) for _ in range(3))
    if METHODS[method][1]:
        import torch
    if method in NUMBA_METHODS:
        import numba
    case, outputs = _make_case(method, causal, q, k, v)
    res: dict[str, Any] = {**spec, "io_bytes": case.io_bytes, "io_note": case.io_note}

    if spec.get("single_shot"):
        # Slow baseline: one call, timed and memory-measured at once (its big buffers are
        # mmap'd whatever the malloc settings).  Warm up BLAS / torch threads on a small
        # problem.
        dense_softmax_numpy(q[..., :256, :], k[..., :256, :], v[..., :256, :], causal)
        if METHODS[method][1]:
            small, _ = _make_case(method, causal, q[..., :256, :], k[..., :256, :],
                                  v[..., :256, :])
            small.call()
            small.reset()
        H.strict_malloc()
        mem = H.measure_peak(case.call)
        res.update(first_call_s=None, times_s=[mem["time_s"]], median_s=mem["time_s"])
    else:
        warm = method != "dense_numpy"
        if not warm:  # warm BLAS threads on a small problem; the big call is plain BLAS
            t0 = time.perf_counter()
            dense_softmax_numpy(q[..., :256, :], k[..., :256, :], v[..., :256, :], causal)
            first = time.perf_counter() - t0
        res.update(H.time_calls(case.call, repeats=spec["repeats"], warmup=warm,
                                budget_s=spec.get("budget_s"), min_repeats=1))
        if not warm:
            res["first_call_s"] = first
            res["first_call_note"] = "warm-up at L=256"
        case.reset()
        H.strict_malloc()
        mem = H.measure_peak(case.call)
    res.update(peak_extra_bytes=mem["peak_extra_bytes"], mem_method=mem["method"],
               mem_call_s=mem["time_s"])
    if spec.get("save_dir"):
        for name, arr in outputs().items():
            path = os.path.join(spec["save_dir"], f"{spec['mode']}_{L}_{method}_{name}.npy")
            np.save(path, np.asarray(arr, dtype=np.float32))
    if method in NUMBA_METHODS:
        import numba

        res["numba_threads"] = numba.get_num_threads()
    if METHODS[method][1]:
        import torch

        res["torch_threads"] = torch.get_num_threads()
    res["cpu_s"] = H.process_cpu_seconds()  # this process's CPU (a forked child starts at 0)
    return res


# =========================================================================== parent
def _performer_available() -> tuple[bool, str]:
    try:
        from performer_pytorch.performer_pytorch import (  # noqa: F401
            causal_linear_attention_noncuda,
            linear_attention,
        )
    except Exception as e:
        return False, f"{type(e).__name__}: {e}"
    return True, ""


def _preload() -> None:
    """Imports of the zygote (no computation: no thread pool has started when it forks)."""
    import numba  # noqa: F401
    import numpy  # noqa: F401
    import torch
    import torch.nn.functional  # noqa: F401

    import structattn
    import structattn.backends.numba.causal
    import structattn.backends.torch.causal  # noqa: F401

    try:
        import performer_pytorch.performer_pytorch  # noqa: F401
    except Exception:
        pass


def _load_line(load: float | None) -> str:
    if load is None:
        return "other processes' CPU load: unknown (no /proc/stat)"
    line = f"other processes' CPU load before the run: {load:.2f} cores (2 s sample)"
    if load > OTHER_LOAD_WARN:
        line += "  <-- WARNING: the machine is busy; timings will be inflated and erratic"
    return line


def _child_env(args, numba_cache: str) -> dict[str, str]:
    env = dict(os.environ)
    env["NUMBA_CACHE_DIR"] = numba_cache
    if args.omp_wait_policy != "inherit":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    return env


def _compile_time(script: str, args, root: str) -> tuple[dict[str, Any], str]:
    """numba cold compile: first call of ``Causal(1024).masked_matmul(..., backend="numba")``
    in a fresh process with an empty NUMBA_CACHE_DIR (the kernel is compiled and written
    to that cache).  Returns the measurement and the warmed cache directory, which every
    benchmark worker then uses (their first call is a cache load).
    """
    cache = tempfile.mkdtemp(prefix="numba_cache_", dir=root)
    spec = {"mode": "causal", "L": 1024, "method": "sa_numba_kernel", "repeats": 1}
    r = H.run_isolated(script, spec, env=_child_env(args, cache))
    return {"cold_compile_s": r.get("first_call_s"), "error": r.get("error")}, cache


def _rel_diff(x, ref) -> float:
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.max(np.abs(x - ref)) / max(np.max(np.abs(ref)), 1e-300))


def _checks(save_dir: str, mode: str, L: int) -> list[dict[str, Any]]:
    """Agreement of outputs saved by the workers (max|Δ| / max|ref|)."""
    import numpy as np

    def load(method, name="attn"):
        p = os.path.join(save_dir, f"{mode}_{L}_{method}_{name}.npy")
        return np.load(p) if os.path.exists(p) else None

    pairs = [
        ("performer vs sa numba masked_matmul (same features)", "performer", "attn",
         "sa_numba_kernel", "attn_eps" if mode == "causal" else "attn"),
        ("sa torch masked_matmul vs sa numba masked_matmul", "sa_torch_kernel_fwd", "attn",
         "sa_numba_kernel", "attn"),
        ("sa numba row recurrence vs sa numba masked_matmul (chunked)",
         "sa_numba_recurrence", "attn", "sa_numba_kernel", "attn"),
        ("sa numpy masked_matmul vs sa numba masked_matmul", "sa_numpy_kernel", "attn",
         "sa_numba_kernel", "attn"),
        ("sa torch kernel_attn vs sa numba kernel_attn", "sa_torch_e2e_fwd", "attn",
         "sa_numba_e2e", "attn"),
        ("torch SDPA vs dense numpy softmax", "sdpa_fwd", "attn", "dense_numpy", "attn"),
    ]
    out = []
    for label, ma, na, mb, nb in pairs:
        a, b = load(ma, na), load(mb, nb)
        if a is None or b is None:
            continue
        d = _rel_diff(a, b)
        out.append({"mode": mode, "L": L, "check": label, "max_rel_diff": d,
                    "ok": bool(d <= F32_TOL)})
    return out


def _ratio(base, t):
    if base is None or t is None or t <= 0:
        return None
    return base / t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="L in {1024, 4096}, 1 repeat, no L=16384 dense baseline")
    p.add_argument("--out", help="write all measurements as JSON to this path")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats per configuration (default 9; 3 with --quick)")
    p.add_argument("--budget", type=float, default=None,
                   help="stop repeating once a configuration's timed calls exceed this many "
                        "seconds (default 20, --quick 5; at least one timed call always runs)")
    p.add_argument("--lengths", type=int, nargs="+", default=None,
                   help="sequence lengths (default 1024 4096 16384; quick: 1024 4096)")
    p.add_argument("--modes", nargs="+", default=["causal", "noncausal"],
                   choices=["causal", "noncausal"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--omp-wait-policy", default="inherit",
                   choices=["inherit", "passive", "active"],
                   help="OMP_WAIT_POLICY of the worker processes (default: inherit this "
                        "shell's, normally unset; see benchmarks/README.md)")
    p.add_argument("--spawn", action="store_true",
                   help="start every configuration as a new interpreter instead of forking "
                        "it from a zygote that has imported the libraries (slower: ~1.5 s "
                        "of imports per configuration; same isolation otherwise)")
    p.add_argument("--record", default=None,
                   help="write the JSON record here (default benchmarks/results/causal.json)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--zygote", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        H.worker_emit(worker(json.loads(args.worker)))
        return 0
    if args.zygote:
        H.zygote_serve(worker, _preload)
        return 0

    if args.budget is None:
        args.budget = 5.0 if args.quick else 20.0
    script = os.path.abspath(__file__)
    lengths = args.lengths or ([1024, 4096] if args.quick else [1024, 4096, 16384])
    repeats = args.repeats or (3 if args.quick else 9)
    methods = list(args.methods)
    perf_ok, perf_err = _performer_available()
    if not perf_ok and "performer" in methods:
        methods.remove("performer")

    rec = H.Record("causal", config={
        "quick": args.quick, "lengths": lengths, "repeats": repeats, "budget_s": args.budget,
        "modes": args.modes, "methods": methods, "batch": BATCH, "heads": HEADS, "d": D,
        "m": M, "seed": SEED, "dtype": "float32", "spawn": args.spawn,
        "omp_wait_policy": args.omp_wait_policy})
    t_start = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="bench_causal_")
    save_dir = os.path.join(tmp.name, "outputs")
    cache_dir = os.path.join(tmp.name, "numba_cache")
    os.makedirs(save_dir)
    os.makedirs(cache_dir)
    env = _child_env(args, cache_dir)

    # header: what the worker processes see (threads after their env is applied)
    info = H.environment_info()
    info["other_load_before"] = H.other_load(2.0)
    info["worker_env"] = {k: env.get(k) for k in ("OMP_WAIT_POLICY", "NUMBA_CACHE_DIR")}
    H.print_header(
        "bench_causal: kernel attention, batch x heads = 1 x 8, d = d_v = m = 64, float32",
        info,
        extra=[
            f"worker processes: OMP_WAIT_POLICY={env.get('OMP_WAIT_POLICY', '<unset>')}, "
            "NUMBA_CACHE_DIR=<temp dir, compiled once>, one fresh process per "
            "configuration, " + ("each a new interpreter (--spawn)" if args.spawn else
                                 "forked from a zygote that only imported the libraries"),
            f"lengths {lengths}, timed repeats <= {repeats} (median; stop after "
            f"{args.budget:g} s), quick={args.quick}",
            _load_line(info["other_load_before"]),
        ]
        + ([] if perf_ok else [f"performer-pytorch not importable ({perf_err}): "
                               "its column and rows are skipped"]),
    )
    sys.stdout.flush()

    # the machine's ceilings, measured now, in this run (before any worker starts)
    roof = H.machine_roofline(quick=args.quick)
    H.record_roofline(rec, roof)
    g32 = roof["gflops"]["float32"]
    print(f"roofline (measured in {roof['measure_s']:.1f} s): float32 GEMM {g32['large']:.0f} "
          f"GFLOP/s (large), {g32['batched']:.0f} (batched 128x64 @ 64x64), "
          f"{g32['batched_cc']:.0f} (batched 128x128 @ 128x64); FFT {g32['fft']:.0f} "
          f"GFLOP/s; stream triad {roof['stream_gbs']:.1f} GB/s", flush=True)

    compile_info = None
    if any(m in methods for m in NUMBA_METHODS):
        compile_info, cache_dir = _compile_time(script, args, tmp.name)
        env = _child_env(args, cache_dir)
        if compile_info["error"]:
            print(f"numba cold compile run failed: {compile_info['error'][-300:]}")
        else:
            print(f"numba first call (compile): {compile_info['cold_compile_s']:.2f} s "
                  "(Causal(1024).masked_matmul, float32, fresh process, empty "
                  "NUMBA_CACHE_DIR)", flush=True)

    server = None if args.spawn else H.ForkServer(script, env)
    if server is not None:
        server.start()

    def run(spec):
        if server is None:
            return H.run_isolated(script, spec, env=env)
        return server.run(spec)

    results: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    for mode in args.modes:
        for L in lengths:
            for method in methods:
                if method == "dense_numpy" and args.quick and L >= 16384:
                    continue
                if method in CAUSAL_ONLY and mode != "causal":
                    continue
                spec = {"mode": mode, "L": L, "method": method, "repeats": repeats,
                        "budget_s": args.budget, "save_dir": save_dir}
                if method == "dense_numpy" and L >= 16384:
                    spec["single_shot"] = True  # tens of seconds: run once
                if args.quick and method in QUICK_SINGLE_SHOT:
                    spec["single_shot"] = True  # seconds per call under --quick: run once
                b0, t0 = H.cpu_busy_seconds(), time.perf_counter()
                r = run(spec)
                b1, wall = H.cpu_busy_seconds(), time.perf_counter() - t0
                r.update(mode=mode, L=L, method=method, label=METHODS[method][0],
                         wall_s=wall)
                if b0 is not None and b1 is not None and "cpu_s" in r:
                    # CPU used meanwhile by processes other than this configuration's
                    r["other_cpu_cores"] = max(0.0, (b1 - b0) - r["cpu_s"]) / wall
                results.append(r)
                status = (f"{r['median_s']:.4g} s x{len(r['times_s'])}" if "error" not in r
                          else "ERROR " + r["error"][-300:])
                if r.get("other_cpu_cores", 0) > OTHER_LOAD_WARN:
                    status += f"   (other processes used {r['other_cpu_cores']:.2f} cores)"
                print(f"   [{time.perf_counter() - t_start:6.0f} s] {mode:<9} L={L:<6} "
                      f"{METHODS[method][0]:<32} {status}", flush=True)
            checks += _checks(save_dir, mode, L)
            for name in os.listdir(save_dir):  # free disk as we go
                os.remove(os.path.join(save_dir, name))

    if server is not None:
        server.close()
    for r in results:
        if "error" not in r:
            r.update(_roofline_entry(r, roof))
    _report(results, checks, args, lengths, perf_ok, compile_info)
    errors = minilm_errors(args.modes, perf_ok)
    for r in results:
        rec.add_measurement(r)
    rec.data["checks"], rec.data["compile"], rec.data["minilm_errors"] = (
        checks, compile_info, errors)
    _record_tables(rec, results, args, lengths, errors)
    rec.write(args.record)
    if args.out:
        payload = {"environment": info, "args": vars(args), "lengths": lengths,
                   "repeats": repeats, "compile": compile_info, "results": results,
                   "checks": checks, "targets": _targets(results),
                   "total_wall_s": time.perf_counter() - t_start}
        with open(args.out, "w") as f:
            json.dump(payload, f, indent=1)
        print(f"\nwrote {args.out}")
    print(f"total wall time {time.perf_counter() - t_start:.0f} s")
    tmp.cleanup()
    return 0


def minilm_errors(modes, perf_ok: bool) -> dict[str, dict[str, float]]:
    """Output error of the FAVOR+ approximations (m = 64) on real MiniLM attention, L = 512:
    structattn's ``kernel_attention`` with ``PositiveRandomFeatures(32, 64, seed=0)`` and
    performer-pytorch's ``FastAttention(32, nb_features=64)``; and the uniform baseline."""
    import numpy as np
    import torch
    from _accuracy import MINILM_L, exact_attention, minilm_inputs, rel_error, uniform_attention

    from structattn import PositiveRandomFeatures, kernel_attention

    try:
        q, k, v = minilm_inputs(MINILM_L)
    except (AssertionError, ImportError) as e:
        print(f"MiniLM errors not measured: {e}")
        return {}
    out: dict[str, dict[str, float]] = {}
    for mode in modes:
        causal = mode == "causal"
        ref = exact_attention(q, k, v, causal)
        fm = PositiveRandomFeatures(q.shape[-1], M, seed=SEED)
        e = {"uniform": rel_error(uniform_attention(v, causal), ref),
             "sa": rel_error(kernel_attention(q, k, v, fm, causal=causal), ref)}
        if perf_ok:
            attn = performer_fast_attention(causal, dim_heads=q.shape[-1])
            with torch.no_grad():
                o = attn(*(torch.from_numpy(x.astype(np.float32)) for x in (q, k, v)))
            e["performer"] = rel_error(o, ref)
        out[mode] = e
    return out


def chunk_length() -> int:
    """The chunk ``C`` the scan uses here (cost model; m = 64, d_v + 1 = 65, float32)."""
    from structattn.backends.scan import choose_chunk_size

    return choose_chunk_size(M, D + 1, 4)


def work(method: str, mode: str, L: int) -> tuple[float, str]:
    """Counted flops of one call of ``method`` and how they were counted.

    ``N = batch x heads``, ``d = d_v = 64``, ``m = 64``, ``d_v + 1 = 65`` where the
    normalizer rides along as a ones column; a multiply-add is 2 flops, an ``exp`` 1.

    * features: ``2·N·L·d·m + N·L·m`` per feature map (projection, exp), two maps;
    * chunked causal scan: ``2·N·L·C·m + 2·N·L·C·(d_v+1)`` (intra-chunk score block and
      masked product, the masked-out half included: it is computed) ``+ 4·N·L·m·(d_v+1)``
      (state contribution and read-out);
    * row recurrence, performer's kernels, non-causal ``A (Bᵀ V)``: ``4·N·L·m·(d_v+1)``;
    * normalization (e2e): ``N·L·d_v`` divisions;
    * exact softmax: ``2·N·L²·(d + d_v) + N·L²`` (dense numpy computes the full square
      even when causal); SDPA causal: half of that (it skips masked blocks);
    * forward+backward: the torch scan x4 (forward and three backward scans), features
      x3, performer x3, SDPA x3.5 (2 GEMMs forward, 5 backward).
    """
    N, d, dv, m, dv1 = BATCH * HEADS, D, D, M, D + 1
    causal = mode == "causal"
    C = min(chunk_length(), L)
    feats = 2 * (2.0 * N * L * d * m + N * L * m)
    scan = (2.0 * N * L * C * (m + dv1) + 4.0 * N * L * m * dv1) if causal else \
        4.0 * N * L * m * dv1
    linear = 4.0 * N * L * m * dv1
    softmax = 2.0 * N * L * L * (d + dv) + N * L * L
    fb = METHODS[method][2]
    if method in ("sa_numba_kernel", "sa_numpy_kernel", "sa_torch_kernel_fwd"):
        return scan, "scan"
    if method == "sa_torch_kernel_fwdbwd":
        return 4 * scan, "4 x scan"
    if method == "sa_numba_recurrence":
        return linear, "4·N·L·m·(d_v+1)"
    if method in ("performer", "performer_fwdbwd"):
        return (3 if fb else 1) * linear, ("3 x " if fb else "") + "4·N·L·m·(d_v+1)"
    if method in ("sa_numba_e2e", "sa_torch_e2e_fwd"):
        return feats + scan + N * L * d, "features + scan + divide"
    if method == "sa_torch_e2e_fwdbwd":
        return 3 * feats + 4 * scan + N * L * d, "3 x features + 4 x scan + divide"
    if method.startswith("performer_e2e"):
        k = 3 if fb else 1
        return k * (feats + linear + N * L * d), ("3 x " if fb else "") + \
            "(features + linear + divide)"
    if method == "dense_numpy":
        return softmax, "2·N·L²·(d+d_v) + N·L² (full square)"
    if method.startswith("sdpa"):
        f = softmax / 2 if causal else softmax
        return (3.5 if fb else 1) * f, ("3.5 x " if fb else "") + "softmax" + \
            (" / 2 (causal)" if causal else "")
    raise ValueError(f"unknown method {method!r}")


def _roofline_entry(r: dict[str, Any], roof: dict[str, Any]) -> dict[str, Any]:
    """Counted flops, bytes (the call's compulsory inputs + outputs), bound and fraction."""
    flops, how = work(r["method"], r["mode"], r["L"])
    nbytes = float(r["io_bytes"])
    bound = H.roofline_bound(flops, nbytes, roof, "float32", gemm_kind="large")
    return {"flops": flops, "flops_how": how, "bytes": nbytes, "roofline_bound_s": bound,
            "roofline_fraction": H.roofline_fraction(flops, nbytes, r["median_s"], roof,
                                                     "float32", gemm_kind="large"),
            "gflops_achieved": flops / r["median_s"] / 1e9}


def _error_of(method: str, errors: dict[str, float]) -> Any:
    if method in ("dense_numpy",) or method.startswith("sdpa"):
        return "exact"
    if method.startswith("performer"):
        return errors.get("performer")
    return errors.get("sa")


def _record_tables(rec, results, args, lengths, errors) -> None:
    """Four tables per mode: kernel / end to end x fwd / fwd+bwd, each with its baselines."""
    from _accuracy import MINILM_L, error_note

    groups = [
        ("kernel_fwd", "kernel", False, "performer", None,
         "kernel level (features given), forward"),
        ("kernel_fwdbwd", "kernel", True, "performer_fwdbwd", None,
         "kernel level (features given), forward + backward"),
        ("e2e_fwd", "e2e", False, "performer_e2e_fwd", "sdpa_fwd",
         "end to end (q, k, v in, attention out), forward"),
        ("e2e_fwdbwd", "e2e", True, "performer_e2e_fwdbwd", "sdpa_fwdbwd",
         "end to end (q, k, v in, attention out), forward + backward"),
    ]
    for mode in args.modes:
        err = errors.get(mode, {})
        title_mode = "Causal" if mode == "causal" else "Non-causal"
        for key, level, fb, perf_key, sdpa_key, what in groups:
            cols = ["L", "method", ("fwd+bwd" if fb else "fwd") + " time (s)",
                    "x vs performer-pytorch (same level, same pass)"]
            if sdpa_key:
                cols.append("x vs torch SDPA (same pass)")
            cols += ["GFLOP (counted)", "MB (in + out)", "GFLOP/s", "roofline bound (s)",
                     "fraction of roofline", "peak extra (MiB)", "reps", "others (cores)",
                     f"error on MiniLM (L = {MINILM_L})"]
            rows = []
            for L in lengths:
                perf = _get(results, mode, L, perf_key)
                sdpa = _get(results, mode, L, sdpa_key) if sdpa_key else None
                for r in results:
                    m = r["method"]
                    if (r["mode"] != mode or r["L"] != L or LEVEL[m] != level
                            or METHODS[m][2] != fb or "error" in r):
                        continue
                    t = r["median_s"]
                    label = r["label"] + (" (single call)" if r.get("single_shot") else "")
                    row = [L, label, t, _ratio(perf["median_s"] if perf else None, t)]
                    if sdpa_key:
                        row.append(_ratio(sdpa["median_s"] if sdpa else None, t))
                    row += [r.get("flops", 0.0) / 1e9, r.get("bytes", 0.0) / 1e6,
                            r.get("gflops_achieved"), r.get("roofline_bound_s"),
                            r.get("roofline_fraction"),
                            r["peak_extra_bytes"] / H.MiB, len(r["times_s"]),
                            r.get("other_cpu_cores"), _error_of(m, err)]
                    rows.append(row)
            notes = [
                "Batch x heads = 1 x 8, d = d_v = 64, m = 64 random features, float32, "
                "standard-normal inputs; time = median of the timed repeats after one "
                "warm-up call, each configuration in a fresh process; ratios = baseline "
                "time / this time in the same run (> 1: faster than the baseline); peak "
                "extra = extra resident memory at the peak of one call; others = cores "
                "other processes used while the row ran (the machine has "
                f"{os.cpu_count()}). '(single call)': one call, timed and memory-measured "
                "at once after a warm-up at L = 256 (slow baselines under --quick).",
                "Roofline: GFLOP counted as in bench_causal.work (features 2·L·d·m + L·m "
                "per map; chunked scan 2·L·C·(m + d_v + 1) + 4·L·m·(d_v + 1) with C = "
                f"{chunk_length()}; recurrence and performer 4·L·m·(d_v + 1); softmax "
                "2·L²·(d + d_v) + L², SDPA causal half; fwd+bwd: scan x4, features x3, "
                "performer x3, SDPA x3.5), MB = the call's inputs + outputs; bound = "
                "max(GFLOP / float32 GEMM peak, MB / stream bandwidth), both measured in "
                "this run (table 'roofline'); fraction = bound / time (1 = at the roof).",
                error_note(MINILM_L) + f" Uniform attention (trivial baseline): "
                f"{err.get('uniform', float('nan')):.3f}.",
            ]
            rec.add_table(f"{mode}_{key}", f"{title_mode} attention, {what}", cols, rows,
                          notes)


def _get(results, mode, L, method):
    for r in results:
        if r["mode"] == mode and r["L"] == L and r["method"] == method and "error" not in r:
            return r
    return None


def _report(results, checks, args, lengths, perf_ok, compile_info) -> None:
    print("\n=== first call (warm-up) vs warm median, numba paths (s)")
    if compile_info and not compile_info.get("error"):
        print(f"   first call (compile), empty cache, L=1024: "
              f"{compile_info['cold_compile_s']:.2f}")
    for r in results:
        if r["method"] in NUMBA_METHODS and r["mode"] == "causal" and "error" not in r:
            fc = r.get("first_call_s")
            print(f"   {r['label']:<24} L={r['L']:<6} first call (cache load + run): "
                  f"{'-' if fc is None else f'{fc:.3f}'}   warm median: {r['median_s']:.4f}")
    headers = ["L", "method", "time (s)", "x vs dense numpy", "x vs performer",
               "peak extra (MiB)", "in+out (MiB)", "peak/(in+out)", "reps", "min (s)",
               "others (cores)"]
    for mode in args.modes:
        rows = []
        for L in lengths:
            base = _get(results, mode, L, "dense_numpy")
            perf = _get(results, mode, L, "performer")
            for r in results:
                if r["mode"] != mode or r["L"] != L:
                    continue
                if "error" in r:
                    rows.append([L, r["label"], "error"] + [None] * 8)
                    continue
                t = r["median_s"]
                rows.append([
                    L, r["label"], t,
                    _ratio(base["median_s"] if base else None, t),
                    _ratio(perf["median_s"] if perf else None, t),
                    r["peak_extra_bytes"] / H.MiB, r["io_bytes"] / H.MiB,
                    r["peak_extra_bytes"] / r["io_bytes"], len(r["times_s"]),
                    min(r["times_s"]), r.get("other_cpu_cores"),
                ])
        title = "causal" if mode == "causal" else "non-causal"
        print(f"\n=== {title}: time = median of reps, ratios = baseline median / method "
              "median (same run), peak extra RSS of one call; min (s) = fastest rep (a "
              "median far above it means stalled calls)")
        print(H.format_table(headers, rows))
        if not perf_ok:
            print("   (performer-pytorch not importable: 'x vs performer' skipped)")

    g = _roof_print(results, args, lengths)
    if g:
        print(g)

    if checks:
        print("\n=== output agreement (float32, max|Δ| / max|ref|, tolerance "
              f"{F32_TOL:g})")
        for c in checks:
            print(f"   {c['mode']:<9} L={c['L']:<6} {c['check']:<55} "
                  f"{c['max_rel_diff']:.2e}  {'OK' if c['ok'] else 'MISMATCH'}")
        print("   (performer's causal normalizer is q·(cumsum(k) + 1e-6); the structattn side "
              "of that check uses the same eps)")

    busy = [r for r in results if r.get("other_cpu_cores", 0) > OTHER_LOAD_WARN]
    print(f"\nothers (cores): CPU used by other processes while a row ran, in cores "
          f"(machine has {os.cpu_count()}); {len(busy)} of {len(results)} rows above "
          f"{OTHER_LOAD_WARN}" + (
              ": their times are inflated (spinning OpenMP/BLAS threads suffer most); "
              "rerun them on a quiet machine." if busy else "."))
    mem_methods = {r.get("mem_method") for r in results if "error" not in r}
    print(f"\nmemory method: {', '.join(sorted(m for m in mem_methods if m))}")

    print("\n=== issue targets (L = 16384, causal)")
    for line in _targets(results)["lines"]:
        print("   " + line)


def _roof_print(results, args, lengths) -> str:
    headers = ["L", "method", "GFLOP", "MB", "time (s)", "GFLOP/s", "bound (s)",
               "fraction of roofline", "counted as"]
    rows = []
    for mode in args.modes:
        for L in lengths:
            for r in results:
                if r["mode"] == mode and r["L"] == L and "roofline_fraction" in r:
                    rows.append([L, f"{mode[:6]} {r['label']}", r["flops"] / 1e9,
                                 r["bytes"] / 1e6, r["median_s"], r["gflops_achieved"],
                                 r["roofline_bound_s"], r["roofline_fraction"],
                                 r["flops_how"]])
    if not rows:
        return ""
    return ("\n=== roofline: counted flops and bytes, bound = max(flops / GEMM peak, bytes / "
            "stream bandwidth) measured in this run, fraction = bound / time\n"
            + H.format_table(headers, rows))


def _targets(results) -> dict[str, Any]:
    L = 16384
    lines: list[str] = []
    out: dict[str, Any] = {"lines": lines}

    def verdict(ok):
        return "target met" if ok else "target NOT met"

    dense = _get(results, "causal", L, "dense_numpy")
    perf = _get(results, "causal", L, "performer")
    for key in NUMBA_METHODS:
        r = _get(results, "causal", L, key)
        if r is None:
            continue
        name = METHODS[key][0]
        if dense:
            x = dense["median_s"] / r["median_s"]
            out[f"{key}_vs_dense"] = x
            lines.append(f"{name} >= 10x faster than dense numpy causal: {x:.1f}x -> "
                         f"{verdict(x >= 10)}")
        else:
            lines.append(f"{name} vs dense numpy: not measured (no L=16384 dense run)")
        if perf:
            x = perf["median_s"] / r["median_s"]
            out[f"{key}_vs_performer"] = x
            lines.append(f"{name} >= 2x faster than performer-pytorch causal: {x:.1f}x -> "
                         f"{verdict(x >= 2)}")
    for key in ("sa_torch_kernel_fwd", "sa_torch_kernel_fwdbwd", "sa_torch_e2e_fwd",
                "sa_torch_e2e_fwdbwd"):
        r = _get(results, "causal", L, key)
        if r is None:
            continue
        x = r["peak_extra_bytes"] / r["io_bytes"]
        out[f"{key}_peak_over_io"] = x
        # the issue states the memory target for the kernel (masked_matmul on A, B, V);
        # end to end, the features A, B and [V|1] are extra intermediates: shown only
        kernel_level = "kernel" in key
        tail = (verdict(x <= 2) if kernel_level else
                f"informational ({'within' if x <= 2 else 'above'} 2x; target is stated "
                "at the kernel level)")
        lines.append(
            f"{METHODS[key][0]} peak extra {r['peak_extra_bytes'] / H.MiB:.0f} MiB <= 2 x "
            f"in+out ({r['io_note']}) = {2 * r['io_bytes'] / H.MiB:.0f} MiB: {x:.3f}x -> "
            f"{tail}")
    rec_ = _get(results, "causal", L, "sa_numba_recurrence")
    chk = _get(results, "causal", L, "sa_numba_kernel")
    if rec_ and chk:
        x = rec_["median_s"] / chk["median_s"]
        out["chunked_vs_recurrence"] = x
        lines.append(f"sa numba chunked masked_matmul >= 3x the row recurrence's throughput: "
                     f"{x:.2f}x -> {verdict(x >= 3)}")
    for key in ("sa_numba_kernel", "sa_numba_e2e"):
        r = _get(results, "causal", L, key)
        if r and "roofline_fraction" in r:
            f = r["roofline_fraction"]
            out[f"{key}_roofline_fraction"] = f
            lines.append(f"{METHODS[key][0]} within 3x of its roofline bound: fraction "
                         f"{f:.2f} (bound {r['roofline_bound_s']:.4f} s) -> "
                         f"{verdict(f >= 1 / 3)}")
    if not lines:
        lines.append("no L = 16384 causal measurements in this run")
    return out


if __name__ == "__main__":
    sys.exit(main())

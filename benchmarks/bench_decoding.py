"""Recurrent decoding and training steps on torch (issue 14).

Usage::

    python benchmarks/bench_decoding.py [--quick] [--threads N]

Part 1 — time per generated token at positions 1k, 16k and 64k (batch 1, 8 heads,
d = d_v = 64, float32):

* ``LinearAttentionCache.step`` (causal kernel attention, ``PositiveRandomFeatures(64,
  64)``): a fixed ``m x (d_v + 1)`` state per head, filled by ``prefill`` on the prompt;
* ``SDPA + KV cache``: ``scaled_dot_product_attention`` of the new query against the
  keys/values of every previous position (preallocated caches, sliced to the position),
  the standard decoding loop of softmax attention.

The ratio ``step(64k) / step(1k)`` is the flatness of the recurrent cost (target
<= 1.2); memory is the bytes each method keeps between tokens: the state (exact,
``LinearAttentionCache.state_nbytes``) vs the K and V caches (``2·t·heads·d`` floats).

Part 2 — one training step (forward + backward) of a ``KernelAttention`` layer
(d_model = 512, 8 heads of d = 64, causal, m = 64) against the same projections around
``scaled_dot_product_attention(is_causal=True)``, L = 4096, batch 1, float32 and bfloat16
(bfloat16: parameters and activations cast with ``.to(torch.bfloat16)``), as ratios.

Timings are per-call medians (CPU time of this process and wall clock) after warm-up
calls, in this process, with ``--threads`` torch threads (default 1: on a shared,
loaded machine OpenMP hand-offs dominate small kernels).  A JSON record is written
under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness as H

HEADS, D, M, SEED = 8, 64, 64, 0
POSITIONS = (1024, 16384, 65536)


def _timed(fn, repeats: int, warmup: int = 3) -> dict:
    """Per-call wall-clock and CPU times (medians) after ``warmup`` untimed calls.

    CPU time (``time.process_time`` around each call, single-threaded run) excludes the
    time the process waits while other processes hold the cores: on a loaded machine it
    is the stable measure of the work done; the wall-clock median is recorded with it.
    """
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return {"median_s": statistics.median(walls), "times_s": walls,
            "cpu_s": statistics.median(cpus), "cpu_times_s": cpus}


def _decode_times(torch, sa, position: int, steps: int, repeats: int) -> dict:
    from structattn.decoding import LinearAttentionCache

    g = torch.Generator().manual_seed(SEED)
    n_new = steps + 3  # warm-up + timed tokens of each method
    # new tokens are small separate tensors, as a model's projections would produce them
    new = [torch.randn(3, 1, HEADS, 1, D, generator=g).unbind(0) for _ in range(2 * n_new)]
    phi = sa.PositiveRandomFeatures(D, M, seed=SEED)
    cache = LinearAttentionCache(phi)
    with torch.no_grad():
        prompt = torch.randn(3, 1, HEADS, position, D, generator=g)
        cache.prefill(*prompt.unbind(0))
        del prompt  # the recurrent state is all that decoding keeps
        t = [0]

        def step():
            cache.step(*new[t[0]])
            t[0] += 1

        lin = _timed(step, repeats)
        state_bytes = cache.state_nbytes
        # SDPA over the growing KV cache (preallocated, written and sliced per token)
        K = torch.randn(1, HEADS, position + n_new, D, generator=g)
        V = torch.randn(1, HEADS, position + n_new, D, generator=g)
        s = [position]

        def sdpa_step():
            i = s[0]
            q_t, k_t, v_t = new[n_new + i - position]
            K[..., i:i + 1, :] = k_t
            V[..., i:i + 1, :] = v_t
            torch.nn.functional.scaled_dot_product_attention(
                q_t, K[..., : i + 1, :], V[..., : i + 1, :])
            s[0] += 1

        kv = _timed(sdpa_step, repeats)
    kv_bytes = 2 * (position + 1) * HEADS * D * 4
    return {"position": position, "step_s": lin["median_s"], "step_times_s": lin["times_s"],
            "step_cpu_s": lin["cpu_s"], "sdpa_cpu_s": kv["cpu_s"],
            "sdpa_s": kv["median_s"], "sdpa_times_s": kv["times_s"],
            "state_bytes": state_bytes, "kv_cache_bytes": kv_bytes}


class _SDPALayer:
    """The KernelAttention layer's projections around torch SDPA (causal)."""

    def __init__(self, layer):
        self.heads = layer.heads

    def __call__(self, x):
        import torch

        q, k, v = self.heads.project(x)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.heads.merge(y)


def _train_step_times(torch, sa, L: int, dtype, repeats: int) -> dict:
    from structattn.layers import KernelAttention

    torch.manual_seed(SEED)
    layer = KernelAttention(HEADS * D, HEADS, sa.PositiveRandomFeatures(D, M, seed=SEED),
                            causal=True).to(dtype)
    sdpa = _SDPALayer(layer)
    x = torch.randn(1, L, HEADS * D, dtype=dtype, requires_grad=True)

    def step(fn):
        def run():
            layer.zero_grad(set_to_none=True)
            x.grad = None
            fn(x).float().square().mean().backward()
        return run

    ka = _timed(step(layer), repeats, warmup=1)
    sd = _timed(step(sdpa), repeats, warmup=1)
    return {"L": L, "dtype": str(dtype).replace("torch.", ""), "kernel_layer_s": ka["median_s"],
            "kernel_layer_cpu_s": ka["cpu_s"], "sdpa_layer_cpu_s": sd["cpu_s"],
            "kernel_layer_times_s": ka["times_s"], "sdpa_layer_s": sd["median_s"],
            "sdpa_layer_times_s": sd["times_s"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="positions 256/1k/4k, L=1024, fewer repeats (smoke run)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    import structattn as sa

    positions = (256, 1024, 4096) if args.quick else POSITIONS
    L_train = 1024 if args.quick else 4096
    steps = 8 if args.quick else 100
    train_repeats = 2 if args.quick else 3
    config = {"heads": HEADS, "d": D, "m": M, "positions": list(positions),
              "train_L": L_train, "threads": args.threads, "quick": args.quick,
              "steps": steps, "train_repeats": train_repeats}
    rec = H.Record("decoding", config)
    # after Record: it queries numba.get_num_threads(), which starts numba's threading
    # layer and resets the OpenMP thread count torch uses (measured: a decoding step
    # went from ~0.5 ms to ~12 ms of CPU time when torch ran after it unpinned)
    torch.set_num_threads(args.threads)
    print(f"== decoding and training steps (torch {torch.__version__}, "
          f"{args.threads} thread(s), load before: {rec.data['load_before']})")

    rows = []
    decode = [_decode_times(torch, sa, p, steps, steps) for p in positions]
    base = decode[0]
    for r in decode:
        rec.add_measurement({"kind": "decode", **r})
        rows.append([r["position"], r["step_cpu_s"] * 1e6, r["step_cpu_s"] / base["step_cpu_s"],
                     r["sdpa_cpu_s"] * 1e6, r["sdpa_cpu_s"] / base["sdpa_cpu_s"],
                     r["sdpa_cpu_s"] / r["step_cpu_s"], r["step_s"] * 1e6, r["sdpa_s"] * 1e6,
                     r["state_bytes"] / 2**10, r["kv_cache_bytes"] / 2**20])
    cols = ["position", "step CPU µs", "vs first", "SDPA+KV CPU µs", "vs first",
            "SDPA / step", "step wall µs", "SDPA wall µs", "state KiB", "KV cache MiB"]
    print(H.format_table(cols, rows))
    rec.add_table("decode", "Time per generated token and memory kept between tokens "
                  f"(batch 1, {HEADS} heads, d = d_v = {D}, m = {M}, float32)", cols, rows,
                  notes=["CPU µs: process CPU time per token (one torch thread; excludes "
                         "time preempted by other processes); wall µs: median wall clock.",
                         "'vs first' is relative to the first position: flat for the "
                         "recurrent state, growing with the position for the KV cache."])

    trows = []
    for dtype in (torch.float32, torch.bfloat16):
        r = _train_step_times(torch, sa, L_train, dtype, train_repeats)
        rec.add_measurement({"kind": "train", **r})
        trows.append([r["dtype"], L_train, r["kernel_layer_cpu_s"] * 1e3,
                      r["sdpa_layer_cpu_s"] * 1e3,
                      r["kernel_layer_cpu_s"] / r["sdpa_layer_cpu_s"],
                      r["kernel_layer_s"] / r["sdpa_layer_s"]])
    tcols = ["dtype", "L", "KernelAttention CPU ms", "SDPA layer CPU ms", "ratio (CPU)",
             "ratio (wall)"]
    print(H.format_table(tcols, trows))
    rec.add_table("train", "Training step (forward + backward), causal, d_model 512, "
                  f"{HEADS} heads", tcols, trows,
                  notes=["ratio = KernelAttention / SDPA layer (same projections)."])
    rec.write()


if __name__ == "__main__":
    main()

"""Engines that turn study tasks into records: serial, or on dask.distributed.

A task's record is computed in two steps:

* :func:`measure_errors` — one call of the operator on the task's input, compared with
  float64 exact softmax attention (and with uniform attention, the baseline).  Pure
  function of the task: it runs wherever the engine sends it and gives the same numbers.
* :func:`measure_time` — warm-up plus ``repeats`` timed calls of the operator and of
  exact attention on the first batch element of the input, always in the calling
  process, one at a time; under the dask engine only after every error task is done,
  so nothing else runs while timing.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..attention import attention_matrix, softmax_attention
from ..backends import resolve_backend
from .baselines import UniformAttention
from .metrics import attention_entropy, max_abs_error, relative_error, row_kl, to_numpy
from .sweep import InputSpec, Task, calibration, load_inputs

__all__ = ["ENGINES", "RECORD_KEYS", "measure_errors", "measure_time", "run_tasks"]

#: Engines of :func:`run_tasks`.
ENGINES = ("serial", "dask")

#: Keys of every record, in column order.
RECORD_KEYS = (
    "key", "operator", "description", "budget_name", "budget_value", "length", "causal",
    "seed", "dtype", "backend", "inputs", "layer", "calibration", "temperature", "entropy",
    "heads", "rel_error", "head_error", "uniform_error", "max_abs_error", "row_kl",
    "time_s", "time_spread_s", "exact_time_s", "repeats", "time_heads", "engine", "notes",
)


def head_errors(approx: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Relative Frobenius error of every ``(L, d_v)`` slice: shape ``approx.shape[:-2]``."""
    num = np.linalg.norm(approx - exact, axis=(-2, -1))
    den = np.linalg.norm(exact, axis=(-2, -1))
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num > 0, np.inf, 0.0))


def _on_backend(arrays: Iterable[np.ndarray], backend: str) -> list[Any]:
    if backend != "torch":
        return list(arrays)
    import torch

    return [torch.from_numpy(np.array(a)) for a in arrays]


def _caught(fn: Callable[[], Any]) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    return out, list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))


@functools.lru_cache(maxsize=4)
def _context(spec: InputSpec, causal: bool, matrix_max_length: int) -> dict[str, Any]:
    """Float64 reference of one input: exact output, map, entropy, uniform baseline."""
    ref = [a.astype(np.float64) for a in load_inputs(spec)]
    exact = softmax_attention(*ref, causal=causal, backend="numpy")
    P = (attention_matrix(ref[0], ref[1], causal=causal, backend="numpy")
         if spec.length <= matrix_max_length else None)
    uniform = UniformAttention(causal=causal, backend="numpy")(*ref)
    return {
        "ref": ref, "exact": exact, "P": P,
        "entropy": attention_entropy(ref[0], ref[1], causal=causal),
        "uniform_error": float(np.mean(head_errors(uniform, exact))),
        "calibration": calibration(spec)[1] if spec.kind == "calibrated" else None,
    }


def _base_record(task: Task) -> dict[str, Any]:
    s = task.spec
    return {
        "key": task.key, "operator": task.entry.name, "description": task.entry.description,
        "budget_name": task.budget_name, "budget_value": task.budget_value,
        "length": s.length, "causal": task.causal, "seed": s.seed, "dtype": s.dtype,
        "inputs": s.kind, "layer": str(s.layer) if s.kind in ("minilm", "captured") else None,
        "temperature": s.temperature, "time_s": None, "time_spread_s": None,
        "exact_time_s": None, "repeats": None, "time_heads": None,
    }


def measure_errors(task: Task, engine: str = "serial") -> dict[str, Any]:
    """The record of ``task`` with its errors (timing fields None); never raises for
    the operator: a failure is recorded in ``notes`` with None metrics.

    Errors are against float64 exact softmax attention (an operator with a structured
    mask exposes ``reference``: softmax with that mask, and uniform uses the same mask):
    ``rel_error`` (Frobenius over the whole output), ``head_error`` (mean over the
    batch x head slices of each slice's relative error — the study's headline number),
    ``uniform_error`` (``head_error`` of uniform attention on the same input),
    ``max_abs_error``, ``row_kl`` (maps, up to ``matrix_max_length``).
    """
    ctx = _context(task.spec, task.causal, task.matrix_max_length)
    ref, exact, P_exact = ctx["ref"], ctx["exact"], ctx["P"]
    run = _on_backend(load_inputs(task.spec), task.backend)
    record = _base_record(task)
    record.update(backend=resolve_backend(task.backend, *run), entropy=ctx["entropy"],
                  calibration=ctx["calibration"], heads=int(np.prod(exact.shape[:-2])),
                  engine=engine, uniform_error=ctx["uniform_error"])
    budget = {} if task.budget_name is None else {task.budget_name: task.budget_value}
    try:
        op = task.entry.build(dim=int(ref[0].shape[-1]), seed=task.spec.seed,
                              causal=task.causal, backend=task.backend,
                              length=task.spec.length, **budget)
        reference = getattr(op, "reference", None)
        if reference is not None and getattr(op, "mask", None) is not None:
            reference = dataclasses.replace(reference, backend="numpy")
            exact = reference(*ref)
            P_exact = reference.matrix(ref[0], ref[1]) if P_exact is not None else None
            uniform = UniformAttention(mask=reference.mask, causal=task.causal,
                                       backend="numpy")(*ref)
            record["uniform_error"] = float(np.mean(head_errors(uniform, exact)))
        out, notes = _caught(lambda: op(*run))
        kl = None
        if P_exact is not None:
            P, more = _caught(lambda: op.matrix(run[0], run[1]))
            notes += [m for m in more if m not in notes]
            kl = row_kl(P_exact, P)
        out = to_numpy(out)
        record.update(
            rel_error=relative_error(out, exact),
            head_error=float(np.mean(head_errors(out, exact))),
            max_abs_error=max_abs_error(out, exact), row_kl=kl, notes="; ".join(notes),
        )
    except Exception as exc:  # a failing operator must not stop the sweep
        record.update(rel_error=None, head_error=None, max_abs_error=None, row_kl=None,
                      notes=f"error: {type(exc).__name__}: {exc}")
    return {key: _plain(record.get(key)) for key in RECORD_KEYS}


def _plain(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    return x


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Warm-up call, then ``repeats`` timed calls: ``(median, max - min)`` seconds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times), max(times) - min(times)


@functools.lru_cache(maxsize=16)
def _exact_time(spec: InputSpec, causal: bool, backend: str, repeats: int
                ) -> tuple[float, float]:
    run = _on_backend([a[:1] for a in load_inputs(spec)], backend)
    return _timed(lambda: softmax_attention(*run, causal=causal, backend=backend), repeats)


def measure_time(task: Task) -> dict[str, Any]:
    """Timing fields of ``task``: warm-up + ``repeats`` calls on the input's first batch
    element (``time_heads`` heads), median ``time_s`` and spread ``max - min``, and exact
    attention timed the same way (``exact_time_s``).  Run serially, in this process."""
    run = _on_backend([a[:1] for a in load_inputs(task.spec)], task.backend)
    budget = {} if task.budget_name is None else {task.budget_name: task.budget_value}
    exact = _exact_time(task.spec, task.causal, task.backend, task.repeats)
    fields: dict[str, Any] = {
        "repeats": task.repeats, "time_heads": int(np.prod(run[0].shape[:-2])),
        "exact_time_s": exact[0],
    }
    if task.entry.name == "exact":  # the reference row: the same measurement
        fields["time_s"], fields["time_spread_s"] = exact
        return fields
    try:
        op = task.entry.build(dim=int(run[0].shape[-1]), seed=task.spec.seed,
                              causal=task.causal, backend=task.backend,
                              length=task.spec.length, **budget)
        fields["time_s"], fields["time_spread_s"] = _timed(lambda: op(*run), task.repeats)
    except Exception:  # the error pass records the failure
        fields.update(time_s=None, time_spread_s=None)
    return fields


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="task", leave=False)


def run_tasks(
    task_list: list[Task],
    *,
    engine: str = "serial",
    workers: int | None = None,
    client: Any = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Run tasks and return their records in task order.

    Parameters
    ----------
    task_list : list of Task
    engine : {"serial", "dask"}
        ``"dask"``: errors on dask.distributed workers — ``client`` if given (an existing
        cluster), else a LocalCluster of ``workers`` processes (default: the CPU count)
        with one thread each, closed at the end; timings afterwards in this process.
    workers : int, optional
    client : distributed.Client, optional
    on_record : callable, optional
        Called with each finished record (in completion order) — the record file's
        ``append``.
    progress : bool
        tqdm bar.

    Returns
    -------
    list of dict
        Keys :data:`RECORD_KEYS`.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "serial" and (workers is not None or client is not None):
        raise ValueError("workers and client apply to engine='dask' only")
    emit = on_record or (lambda record: None)
    results: dict[int, dict[str, Any]] = {}
    if engine == "serial":
        with _progress(len(task_list), progress, "study") as bar:
            for i, task in enumerate(task_list):
                record = measure_errors(task)
                if task.timed and record["head_error"] is not None:
                    record.update(measure_time(task))
                results[i] = record
                emit(record)
                bar.update()
        return [results[i] for i in range(len(task_list))]
    return _run_dask(task_list, workers, client, emit, progress)


def _run_dask(task_list, workers, client, emit, progress) -> list[dict[str, Any]]:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise ImportError(
            "engine='dask' needs dask.distributed: pip install 'structattn[distributed]'"
        ) from exc
    own = client is None
    cluster = None
    if own:
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                    or workers < 1):
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, host="127.0.0.1")
        client = Client(cluster)
    results: dict[int, dict[str, Any]] = {}
    pending: list[int] = []
    futures = []
    try:
        futures = client.map(measure_errors, task_list, engine="dask", pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        with _progress(len(task_list), progress, "errors (dask)") as bar:
            for fut in as_completed(futures):
                i = index[fut.key]
                record = fut.result()
                results[i] = record
                if task_list[i].timed and record["head_error"] is not None:
                    pending.append(i)  # timed below, once the cluster is idle
                else:
                    emit(record)
                bar.update()
        with _progress(len(pending), progress, "timing (serial)") as bar:
            for i in sorted(pending):
                results[i].update(measure_time(task_list[i]))
                results[i]["engine"] = "dask (timing serial, in the client)"
                emit(results[i])
                bar.update()
    finally:
        if futures:
            client.cancel(futures)
        if own:
            client.close()
            cluster.close()
    return [results[i] for i in range(len(task_list))]

"""``run_study``: a thin wrapper over the study pipeline.

``Sweep`` (what to run) → ``tasks(sweep)`` (independent units) → an engine
(:func:`~structattn.studies.engine.run_tasks`, serial or dask) → records (returned, and
appended to a :class:`~structattn.studies.records.Records` file as each finishes) →
:func:`~structattn.studies.report.write_report`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import Any

from .engine import ENGINES, RECORD_KEYS, run_tasks
from .records import Records, machine_state
from .registry import StudyEntry
from .sweep import INPUTS, Sweep, load_inputs, tasks

__all__ = ["INPUTS", "RECORD_KEYS", "REPEATS", "load_inputs", "run_study", "study_metadata"]

#: Timed calls after the warm-up call, shared by :func:`run_study`, :class:`Sweep` and the
#: CLI; a speedup is shown only for times measured with at least this many repeats.
REPEATS = 3


def study_metadata(sweep: Sweep, *, engine: str = "serial", workers: int | None = None,
                   scheduler: str | None = None) -> dict[str, Any]:
    """The settings of ``sweep`` and the machine state (cores, threads, load)."""
    settings = dataclasses.asdict(sweep)
    settings["operators"] = [e.name for e in sweep.entries()]
    return {"sweep": settings, "engine": engine, "workers": workers, "scheduler": scheduler,
            "timing": "serial: warm-up + repeats calls on the first batch element, "
                      "in the calling process", "start": machine_state()}


def run_study(
    operators: Iterable[str | StudyEntry] | str | None = None,
    *,
    lengths: Iterable[int] = (256, 1024, 2048),
    dim: int = 64,
    value_dim: int = 64,
    heads: int = 2,
    batch: int = 1,
    causal: bool | Iterable[bool] = (False, True),
    seeds: Iterable[int] = (0,),
    scale: float = 0.5,
    temperatures: float | Iterable[float] = (1.0,),
    inputs: str = "synthetic",
    minilm_layer: int | str = 0,
    dtype: str = "float64",
    backend: str = "auto",
    matrix_max_length: int = 1024,
    repeats: int = REPEATS,
    timing: bool | str = True,
    sweep: Sweep | None = None,
    engine: str = "serial",
    workers: int | None = None,
    client: Any = None,
    out: Any = None,
    resume: bool = False,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Sweep registered approximations against exact softmax attention.

    Either pass ``sweep`` (a :class:`~structattn.studies.Sweep`; ``Sweep()`` is the
    default ``structattn study``: real MiniLM attention up to 512 tokens, calibrated
    synthetic beyond) or the keyword settings below, which build one (their defaults
    are a small synthetic sweep, kept for existing callers).  Every operator is built at
    every budget value with ``factory(dim=d, seed=seed, causal=causal, **{budget:
    value})``, called once on each input for its errors against float64
    :func:`~structattn.attention.softmax_attention`, and — for the first seed and
    temperature — timed serially (warm-up + ``repeats`` calls).

    Parameters
    ----------
    operators : iterable of str or StudyEntry, or str, optional
        Registry names; None: the default set (every registered operator, baselines
        included, except those registered with ``default=False``); ``"all"``: every one.
    lengths, dim, value_dim, heads, batch, causal, seeds, scale, temperatures, inputs,
    minilm_layer, dtype, backend, matrix_max_length, repeats, timing
        The :class:`~structattn.studies.Sweep` fields (``inputs`` one of
        ``"synthetic"``, ``"calibrated"``, ``"minilm"``, ``"auto"``).
    sweep : Sweep, optional
        Use these settings instead of the keywords above.
    engine : {"serial", "dask"}
        ``"dask"``: errors on dask.distributed (``client``, or a LocalCluster of
        ``workers`` processes); timings still serial, in this process.
    workers : int, optional
    client : distributed.Client, optional
    out : str or path-like, optional
        ``.jsonl`` or ``.csv`` file; checked writable before any work; each record is
        appended as it finishes; metadata (machine, cores, threads, load) in
        ``<out>.meta.json``.
    resume : bool, default False
        Keep the records already in ``out`` and run only the missing tasks.
    progress : bool, default False
        tqdm progress bar.

    Returns
    -------
    list of dict
        One record per task (operator x budget x length x seed x temperature x causal
        flag; with ``resume`` the earlier records first), with the keys of
        :data:`RECORD_KEYS` — among them ``head_error`` (mean over batch x head slices of
        the relative output error), ``uniform_error`` (the same for uniform attention on
        the same input), ``rel_error``, ``max_abs_error``, ``row_kl``, ``entropy`` (mean
        row entropy of the exact map, nats), ``time_s`` (median), ``time_spread_s``
        (max - min), ``exact_time_s``, ``repeats`` (None for untimed tasks) and ``notes``
        (warnings, or the error an operator raised: a failing operator gets None metrics
        instead of stopping the sweep).

    Raises
    ------
    ImportError
        MiniLM inputs without the ``studies`` extra (before any work).
    ValueError
        Bad settings, or an ``out`` path that cannot be written (before any work).

    Notes
    -----
    Cost is dominated by the exact attention, ``O(batch·heads·L²·(d + d_v))`` per input,
    one call per task, and ``repeats + 1`` calls per timed task.
    """
    if sweep is None:
        sweep = Sweep(
            operators=None if operators is None else (
                (operators,) if isinstance(operators, (str, StudyEntry)) else tuple(operators)),
            lengths=tuple(lengths) if not isinstance(lengths, int) else (lengths,),
            inputs=inputs, minilm_layer=minilm_layer,
            causal=causal if isinstance(causal, bool) else tuple(causal),
            seeds=tuple(seeds) if not isinstance(seeds, int) else (seeds,),
            temperatures=temperatures if isinstance(temperatures, (int, float))
            else tuple(temperatures),
            dim=dim, value_dim=value_dim, heads=heads, batch=batch, scale=scale, dtype=dtype,
            backend=backend, matrix_max_length=matrix_max_length, repeats=repeats,
            timing=timing,
        )
    elif not isinstance(sweep, Sweep):
        raise TypeError(f"sweep must be a Sweep, got {type(sweep).__name__}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    sweep.check_inputs()
    records_file = None if out is None else Records(out, resume=resume)
    task_list = tasks(sweep)
    earlier: list[dict[str, Any]] = []
    if records_file is not None:
        earlier = list(records_file.existing)
        task_list = [t for t in task_list if t.key not in records_file.done]
    meta = study_metadata(sweep, engine=engine, workers=workers,
                          scheduler=getattr(getattr(client, "scheduler", None), "address", None))
    start = time.perf_counter()
    if records_file is not None:
        records_file.write_metadata({**meta, "status": "running"})
    status = "interrupted"
    try:
        results = run_tasks(task_list, engine=engine, workers=workers, client=client,
                            on_record=None if records_file is None else records_file.append,
                            progress=progress)
        status = "complete"
    finally:
        if records_file is not None:
            records_file.write_metadata({
                **meta, "status": status, "elapsed_s": round(time.perf_counter() - start, 2),
                "end": machine_state(), "resumed_records": len(earlier),
            })
    return earlier + results

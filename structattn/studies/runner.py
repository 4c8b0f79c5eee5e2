"""The sweep runner: registered approximations against exact softmax attention."""

from __future__ import annotations

import dataclasses
import statistics
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..attention import attention_matrix, softmax_attention
from ..backends import BACKENDS, resolve_backend
from .inputs import synthetic_inputs
from .metrics import max_abs_error, relative_error, row_kl, to_numpy
from .registry import StudyEntry, get, registry

__all__ = ["RECORD_KEYS", "run_study"]

#: Keys of every record returned by :func:`run_study`, in column order.
RECORD_KEYS = (
    "operator",
    "description",
    "budget_name",
    "budget_value",
    "length",
    "causal",
    "seed",
    "dtype",
    "backend",
    "rel_error",
    "max_abs_error",
    "row_kl",
    "time_s",
    "exact_time_s",
    "notes",
)


# ------------------------------------------------------------------ argument checks
def _entries(operators: Any) -> list[StudyEntry]:
    if operators is None:
        return list(registry().values())
    if isinstance(operators, (str, StudyEntry)):
        operators = [operators]
    entries = [op if isinstance(op, StudyEntry) else get(op) for op in operators]
    if not entries:
        raise ValueError("operators is empty; pass None for every registered operator")
    return entries


def _ints(values: Any, name: str, minimum: int) -> tuple[int, ...]:
    if isinstance(values, (int, np.integer)) and not isinstance(values, bool):
        values = (values,)
    out = tuple(values)
    if not out or any(
        isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < minimum for x in out
    ):
        raise ValueError(f"{name} must be a non-empty sequence of integers >= {minimum}, "
                         f"got {values!r}")
    return tuple(int(x) for x in out)


def _bools(values: Any) -> tuple[bool, ...]:
    if isinstance(values, (bool, np.bool_)):
        values = (values,)
    out = tuple(values)
    if not out or not all(isinstance(x, (bool, np.bool_)) for x in out):
        raise ValueError(f"causal must be a bool or a non-empty sequence of bools, got {values!r}")
    return tuple(bool(x) for x in out)


# ------------------------------------------------------------------------ timing
def _timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float, list[str]]:
    """Warm-up call (its result is returned), then the median of ``repeats`` timed calls.

    Warnings raised by the calls are caught and returned as unique messages.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    messages = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    return out, statistics.median(times), messages


def _quiet(fn: Callable[[], Any]) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    return out, [f"{w.category.__name__}: {w.message}" for w in caught]


# ------------------------------------------------------------------------ runner
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
    dtype: str = "float64",
    backend: str = "auto",
    matrix_max_length: int = 1024,
    repeats: int = 3,
) -> list[dict[str, Any]]:
    """Sweep registered approximations against exact softmax attention.

    For every length, seed and causal flag, inputs come from
    :func:`~structattn.studies.synthetic_inputs` (``q, k ~ scale·N(0, I)``,
    ``v ~ N(0, I)``, shape ``(batch, heads, L, d)``); every operator is built at every
    budget value with ``factory(dim=d, seed=seed, causal=causal, **{budget: value})``
    and compared with :func:`~structattn.attention.softmax_attention` computed in
    float64 numpy.

    Parameters
    ----------
    operators : iterable of str or StudyEntry, or str, optional
        Registry names (default: every registered operator).
    lengths : iterable of int, default (256, 1024, 2048)
        Sequence lengths ``L``.
    dim, value_dim, heads, batch : int
        Input sizes (``d``, ``d_v``) and leading dimensions.
    causal : bool or iterable of bool, default (False, True)
        Attention modes; operators registered with ``causal=False`` skip causal mode.
    seeds : iterable of int, default (0,)
        One input draw and one operator draw per seed.  The operator's random features
        use ``seed`` directly; the inputs use an independent stream of the same seed.
    scale : float, default 0.5
        Standard deviation of queries and keys.
    dtype : {"float64", "float32"}
        dtype in which the approximations run (the reference is always float64).
    backend : {"auto", "numpy", "numba", "torch"}
        ``"torch"`` runs on CPU torch tensors, the others on numpy arrays; passed to
        factories that accept ``backend=`` and to the timed exact attention.
    matrix_max_length : int, default 1024
        ``row_kl`` needs both dense ``L x L`` matrices; it is computed only for
        ``L <= matrix_max_length`` and is None above.
    repeats : int, default 3
        Timed calls after one untimed warm-up call; ``time_s`` is their median
        (``time.perf_counter``).

    Returns
    -------
    list of dict
        One record per (operator, budget value, length, causal, seed), with the keys of
        :data:`RECORD_KEYS`: ``operator``, ``description``, ``budget_name`` and
        ``budget_value`` (None without budget), ``length``, ``causal``, ``seed``,
        ``dtype``, ``backend`` (resolved), ``rel_error`` (Frobenius, output),
        ``max_abs_error`` (output), ``row_kl`` (matrices, or None), ``time_s``,
        ``exact_time_s`` (exact attention in the same dtype and backend, timed once per
        length, causal flag and seed), ``notes`` (warnings or the error an operator
        raised; "" when none — a failing operator gets None metrics instead of stopping
        the sweep).  Values are plain Python scalars.

    Notes
    -----
    Cost is dominated by the exact attention, ``O(batch·heads·L²·(d + d_v))`` time and
    ``O(L²)`` memory per (batch, head), and by ``repeats + 1`` calls per operator.
    """
    entries = _entries(operators)
    lengths = _ints(lengths, "lengths", 1)
    seeds = _ints(seeds, "seeds", 0)
    modes = _bools(causal)
    repeats = _ints(repeats, "repeats", 1)[0]
    matrix_max_length = _ints(matrix_max_length, "matrix_max_length", 0)[0]
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")

    records: list[dict[str, Any]] = []
    for length in lengths:
        for seed in seeds:
            qkv = synthetic_inputs(
                length, dim=dim, value_dim=value_dim, heads=heads, batch=batch,
                seed=seed, scale=scale, dtype=dtype,
            )
            ref = [a.astype(np.float64) for a in qkv]
            run = _on_backend(qkv, backend)
            resolved = resolve_backend(backend, *run)
            for mode in modes:
                exact, exact_time, _ = _timed(
                    lambda run=run, mode=mode: softmax_attention(
                        *run, causal=mode, backend=backend
                    ),
                    repeats,
                )
                if dtype != "float64" or backend == "torch":  # the reference is float64 numpy
                    exact = softmax_attention(*ref, causal=mode, backend="numpy")
                P_exact = (
                    attention_matrix(ref[0], ref[1], causal=mode, backend="numpy")
                    if length <= matrix_max_length
                    else None
                )
                common = {
                    "length": length, "causal": mode, "seed": seed, "dtype": dtype,
                    "backend": resolved, "exact_time_s": exact_time,
                }
                for entry in entries:
                    if mode and not entry.causal:
                        continue
                    for budget_name, budget_value in entry.budget_points():
                        record = {
                            "operator": entry.name, "description": entry.description,
                            "budget_name": budget_name, "budget_value": budget_value,
                            **common,
                        }
                        record.update(_measure(
                            entry, budget_name, budget_value, run, exact, P_exact,
                            dim=dim, seed=seed, causal=mode, backend=backend, repeats=repeats,
                            ref=ref, length=length, matrix_max_length=matrix_max_length,
                        ))
                        records.append({key: record[key] for key in RECORD_KEYS})
    return records


def _on_backend(arrays: tuple[np.ndarray, ...], backend: str) -> list[Any]:
    if backend != "torch":
        return list(arrays)
    import torch

    return [torch.from_numpy(a) for a in arrays]


def _measure(
    entry: StudyEntry,
    budget_name: str | None,
    budget_value: Any,
    run: list[Any],
    exact: np.ndarray,
    P_exact: np.ndarray | None,
    *,
    dim: int,
    seed: int,
    causal: bool,
    backend: str,
    repeats: int,
    ref: list[np.ndarray],
    length: int,
    matrix_max_length: int,
) -> dict[str, Any]:
    """Errors and timing of one operator configuration (never raises for the operator).

    An operator with a structured mask exposes ``reference`` (exact softmax attention
    with the same mask); its errors are measured against that, not plain softmax.
    """
    budget = {} if budget_name is None else {budget_name: budget_value}
    try:
        op = entry.build(dim=dim, seed=seed, causal=causal, backend=backend, length=length,
                         **budget)
        reference = getattr(op, "reference", None)
        if reference is not None and getattr(op, "mask", None) is not None:
            # the reference runs on the float64 numpy copies, whatever the study backend
            reference = dataclasses.replace(reference, backend="numpy")
            exact = reference(*ref)
            P_exact = (reference.matrix(ref[0], ref[1])
                       if length <= matrix_max_length else None)
        out, elapsed, notes = _timed(lambda: op(*run), repeats)
        kl = None
        if P_exact is not None:
            P, more = _quiet(lambda: op.matrix(run[0], run[1]))
            notes += [m for m in more if m not in notes]
            kl = row_kl(P_exact, P)
        out = to_numpy(out)
    except Exception as exc:  # a failing operator must not stop the sweep
        return {
            "rel_error": None, "max_abs_error": None, "row_kl": None, "time_s": None,
            "notes": f"error: {type(exc).__name__}: {exc}",
        }
    return {
        "rel_error": relative_error(out, exact),
        "max_abs_error": max_abs_error(out, exact),
        "row_kl": kl,
        "time_s": float(elapsed),
        "notes": "; ".join(notes),
    }

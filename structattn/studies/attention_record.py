"""Captured attention: :class:`AttentionCall`, :class:`AttentionRecord` and their file format.

An :class:`AttentionRecord` is what :func:`~structattn.studies.capture.capture` returns: the
queries, keys and values of every attention call of one forward pass of a torch model, as
numpy arrays shaped ``(batch, heads, L, d)``, with the call's mask, causal flag and scale.

File format (``AttentionRecord.save`` / :func:`load_record`)
------------------------------------------------------------
One uncompressed ``.npz`` archive, readable with ``numpy.load(path)`` (no pickles):

``header``
    0-d unicode array holding JSON: ``{"format": "structattn.AttentionRecord",
    "version": 1, "model": str, "calls": [...], "dropped": [...], "meta": {...}}``; each
    entry of ``calls`` has ``index`` (call order in the forward pass), ``name`` (the
    innermost module running when the call was made), ``source`` (``"sdpa"`` or
    ``"multi_head_attention_forward"``), ``q_shape``, ``k_shape``, ``v_shape``, ``dtype``,
    ``causal``, ``scale``, ``mask_shape`` (None without a mask) and ``heads`` (the head
    indices kept, None for all).
``q{i}``, ``k{i}``, ``v{i}``, ``mask{i}``
    The arrays of the ``i``-th stored call (``mask{i}`` only when it has one).

A plain ``.npz`` without ``header`` is read as a single call: arrays ``q``, ``k``, ``v``
shaped ``(..., L, d)`` (the leading dimensions are flattened into ``(batch, heads)``:
``(L, d)`` is one head, ``(H, L, d)`` is ``H`` heads, ``(B, H, L, d)`` as is, more leading
dimensions are merged into the batch), optional ``mask`` (boolean, True = attend,
broadcastable to ``(..., L_q, L_k)``), ``causal`` (0-d bool) and ``scale`` (0-d float;
default ``d**-0.5``).

Masks follow the library's convention: boolean, **True = the query attends to the key**
(the opposite of ``nn.MultiheadAttention``'s ``key_padding_mask`` / boolean ``attn_mask``,
where True means *masked*); :func:`~structattn.studies.capture.capture` converts them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

__all__ = ["FORMAT", "AttentionCall", "AttentionRecord", "AttentionRecordError", "load_record"]

#: The ``format`` field of a saved record's header.
FORMAT = "structattn.AttentionRecord"
_VERSION = 1


class AttentionRecordError(ValueError):
    """A record file or array that cannot be read as captured attention."""


@dataclasses.dataclass(frozen=True)
class AttentionCall:
    """One captured attention call.

    Attributes
    ----------
    q : numpy.ndarray, shape (batch, heads, L_q, d)
    k : numpy.ndarray, shape (batch, heads, L_k, d)
        Grouped-query keys are repeated to the query heads (as SDPA's ``enable_gqa``).
    v : numpy.ndarray, shape (batch, heads, L_k, d_v)
    mask : numpy.ndarray of bool, shape (batch, 1 or heads, L_q, L_k), or None
        True = attend.  None when every query attends to every key (or to every earlier
        key with ``causal``); a mask equal to the causal mask is stored as ``causal=True``.
    causal : bool
        Top-left aligned causal attention (SDPA's ``is_causal``).
    scale : float
        Factor on ``q kᵀ`` before the softmax (SDPA's default ``d**-0.5`` resolved).
    name : str
        Module that made the call (``"(model)"`` for the top-level module).
    index : int
        Position in the call order of the forward pass.
    source : str
        ``"sdpa"`` or ``"multi_head_attention_forward"`` (q, k, v projected by hand from
        the module's weights, as ``nn.MultiheadAttention`` does).
    heads : tuple of int or None
        The model's head indices kept (None: all).
    """

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    mask: np.ndarray | None = None
    causal: bool = False
    scale: float | None = None
    name: str = ""
    index: int = 0
    source: str = "sdpa"
    heads: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        label = f"call {self.index} ({self.name or 'unnamed'})"
        arrays = {}
        for key in ("q", "k", "v"):
            a = np.asarray(getattr(self, key))
            if a.ndim != 4:
                raise AttentionRecordError(
                    f"{label}: {key} must have shape (batch, heads, L, d), got {a.shape}")
            if not np.issubdtype(a.dtype, np.floating):
                raise AttentionRecordError(f"{label}: {key} must be floating, got {a.dtype}")
            if not np.all(np.isfinite(a)):
                raise AttentionRecordError(f"{label}: {key} holds NaN or infinite values")
            arrays[key] = a
        q, k, v = arrays["q"], arrays["k"], arrays["v"]
        if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
            raise AttentionRecordError(
                f"{label}: inconsistent shapes q {q.shape}, k {k.shape}, v {v.shape}; expected "
                "(B, H, L_q, d), (B, H, L_k, d), (B, H, L_k, d_v)")
        mask = self.mask
        if mask is not None:
            mask = np.asarray(mask)
            if mask.dtype != np.bool_:
                raise AttentionRecordError(f"{label}: mask must be boolean (True = attend), "
                                           f"got {mask.dtype}")
            want = (q.shape[0], q.shape[2], k.shape[2])
            if mask.ndim != 4 or (mask.shape[0], mask.shape[2], mask.shape[3]) != want or (
                    mask.shape[1] not in (1, q.shape[1])):
                raise AttentionRecordError(
                    f"{label}: mask must have shape ({want[0]}, 1 or {q.shape[1]}, {want[1]}, "
                    f"{want[2]}), got {mask.shape}")
        scale = q.shape[-1] ** -0.5 if self.scale is None else float(self.scale)
        if not (np.isfinite(scale) and scale > 0):
            raise AttentionRecordError(f"{label}: scale must be positive and finite, got {scale}")
        set_ = object.__setattr__
        set_(self, "q", q)
        set_(self, "k", k)
        set_(self, "v", v)
        set_(self, "mask", mask)
        set_(self, "scale", scale)
        set_(self, "causal", bool(self.causal))
        if self.heads is not None:
            set_(self, "heads", tuple(int(h) for h in self.heads))

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        return sum(a.nbytes for a in (self.q, self.k, self.v, self.mask) if a is not None)

    def header(self) -> dict[str, Any]:
        """The call's JSON header entry (shapes, dtype, flags; no arrays)."""
        return {
            "index": self.index, "name": self.name, "source": self.source,
            "q_shape": list(self.q.shape), "k_shape": list(self.k.shape),
            "v_shape": list(self.v.shape), "dtype": str(self.q.dtype), "causal": self.causal,
            "scale": self.scale, "mask_shape": None if self.mask is None else list(
                self.mask.shape), "heads": None if self.heads is None else list(self.heads),
        }


@dataclasses.dataclass
class AttentionRecord(Sequence):
    """The attention calls of one forward pass: a sequence of :class:`AttentionCall`.

    Attributes
    ----------
    calls : list of AttentionCall
        In call order.
    model : str
        The model's name (its class name unless given).
    dropped : list of dict
        Calls not stored (``index``, ``name``, ``reason``): unselected layers are not
        listed; calls over the byte cap and calls with an additive bias that is not a
        mask are.
    meta : dict
        Free-form JSON-able metadata (torch version, inputs' shapes).
    """

    calls: list[AttentionCall]
    model: str = ""
    dropped: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @overload
    def __getitem__(self, i: int) -> AttentionCall: ...
    @overload
    def __getitem__(self, i: slice) -> list[AttentionCall]: ...

    def __getitem__(self, i):
        return self.calls[i]

    def __len__(self) -> int:
        return len(self.calls)

    def __iter__(self) -> Iterator[AttentionCall]:
        return iter(self.calls)

    @property
    def nbytes(self) -> int:
        """Bytes held by every call's arrays."""
        return sum(c.nbytes for c in self.calls)

    def summary(self) -> str:
        """One line per call: index, module name, shapes, mask, causal flag, scale."""
        lines = [f"{self.model or 'model'}: {len(self)} attention calls, "
                 f"{self.nbytes / 2**20:.2f} MiB"]
        for c in self.calls:
            mask = "-" if c.mask is None else f"mask {tuple(c.mask.shape)} " \
                f"({c.mask.mean():.0%} attend)"
            lines.append(f"  [{c.index}] {c.name:32s} q{tuple(c.q.shape)} v{tuple(c.v.shape)} "
                         f"causal={c.causal} scale={c.scale:.4g} {mask} ({c.source})")
        if self.dropped:
            lines.append(f"  {len(self.dropped)} call(s) not stored: "
                         + "; ".join(f"[{d['index']}] {d['reason']}" for d in self.dropped))
        return "\n".join(lines)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the record as one ``.npz`` (format in the module docstring); returns the path.

        ``O(total bytes)``; uncompressed, so loading is a plain read.
        """
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"path must end with .npz, got {str(path)!r}")
        header = {"format": FORMAT, "version": _VERSION, "model": self.model,
                  "calls": [c.header() for c in self.calls], "dropped": self.dropped,
                  "meta": self.meta}
        arrays: dict[str, np.ndarray] = {"header": np.array(json.dumps(header))}
        for i, c in enumerate(self.calls):
            arrays.update({f"q{i}": c.q, f"k{i}": c.k, f"v{i}": c.v})
            if c.mask is not None:
                arrays[f"mask{i}"] = c.mask
        with open(path, "wb") as f:
            np.savez(f, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> AttentionRecord:
        """Read a saved record, or a plain ``.npz`` of ``q``, ``k``, ``v`` (see
        :func:`load_record`)."""
        return load_record(path)


def _array(data: Any, key: str, path: Path) -> np.ndarray:
    if key not in data.files:
        raise AttentionRecordError(
            f"{str(path)!r} has no array {key!r} (arrays: {', '.join(data.files) or 'none'})")
    return data[key]


def _four_d(a: np.ndarray, key: str, path: Path) -> np.ndarray:
    if a.ndim < 2:
        raise AttentionRecordError(
            f"{str(path)!r}: array {key!r} must have shape (..., L, d), got {a.shape}")
    if a.ndim == 2:
        return a[None, None]
    if a.ndim == 3:
        return a[None]
    return a.reshape(-1, *a.shape[-3:])


def _plain(data: Any, path: Path) -> AttentionRecord:
    q, k, v = (_array(data, key, path) for key in ("q", "k", "v"))
    for key, a in (("q", q), ("k", k), ("v", v)):
        if a.ndim < 2:
            raise AttentionRecordError(
                f"{str(path)!r}: array {key!r} must have shape (..., L, d), got {a.shape}")
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        raise AttentionRecordError(
            f"{str(path)!r}: q, k, v must share their leading dimensions, got {q.shape}, "
            f"{k.shape}, {v.shape}")
    lead = q.shape[:-2]
    mask = None
    if "mask" in data.files:
        m = data["mask"]
        if m.dtype != np.bool_:
            if not np.isin(m, (0, 1)).all():
                raise AttentionRecordError(
                    f"{str(path)!r}: mask must be boolean (True = attend) or 0/1, got values "
                    f"outside 0/1 ({m.dtype})")
            m = m.astype(bool)
        try:
            m = np.broadcast_to(m, (*lead, q.shape[-2], k.shape[-2]))
        except ValueError:
            raise AttentionRecordError(
                f"{str(path)!r}: mask of shape {m.shape} does not broadcast to "
                f"{(*lead, q.shape[-2], k.shape[-2])}") from None
        mask = np.ascontiguousarray(_four_d(m, "mask", path))
    causal = bool(data["causal"]) if "causal" in data.files else False
    scale = float(data["scale"]) if "scale" in data.files else None
    try:
        call = AttentionCall(_four_d(q, "q", path), _four_d(k, "k", path),
                             _four_d(v, "v", path), mask=mask, causal=causal, scale=scale,
                             name=path.stem, index=0, source="npz")
    except AttentionRecordError as exc:
        raise AttentionRecordError(f"{str(path)!r}: {exc}") from None
    return AttentionRecord([call], model=path.stem)


def load_record(path: str | os.PathLike) -> AttentionRecord:
    """Read an :class:`AttentionRecord` file, or a plain ``.npz`` of ``q``, ``k``, ``v``.

    Parameters
    ----------
    path : str or path-like
        ``.npz`` written by :meth:`AttentionRecord.save`, or one with arrays ``q``, ``k``,
        ``v`` (``(..., L, d)``) and optional ``mask``, ``causal``, ``scale`` (module
        docstring).

    Returns
    -------
    AttentionRecord

    Raises
    ------
    AttentionRecordError
        A missing file or array, a wrong rank, inconsistent shapes, NaN or infinite
        values, a non-boolean mask, an unknown header format; the message names the
        file and the array.
    """
    path = Path(path)
    if not path.is_file():
        raise AttentionRecordError(f"attention record {str(path)!r} does not exist")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise AttentionRecordError(f"{str(path)!r} is not a readable .npz file: {exc}") from None
    with data:
        if "header" not in data.files:
            return _plain(data, path)
        try:
            header = json.loads(str(data["header"]))
        except ValueError as exc:
            raise AttentionRecordError(f"{str(path)!r}: header is not JSON ({exc})") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise AttentionRecordError(
                f"{str(path)!r}: header format must be {FORMAT!r}, got "
                f"{header.get('format') if isinstance(header, dict) else header!r}")
        calls = []
        for i, entry in enumerate(header.get("calls", [])):
            q, k, v = (_array(data, f"{key}{i}", path) for key in ("q", "k", "v"))
            mask = _array(data, f"mask{i}", path) if entry.get("mask_shape") else None
            try:
                calls.append(AttentionCall(
                    q, k, v, mask=mask, causal=entry.get("causal", False),
                    scale=entry.get("scale"), name=entry.get("name", ""),
                    index=int(entry.get("index", i)), source=entry.get("source", "sdpa"),
                    heads=entry.get("heads")))
            except AttentionRecordError as exc:
                raise AttentionRecordError(f"{str(path)!r}: {exc}") from None
        return AttentionRecord(calls, model=header.get("model", ""),
                               dropped=list(header.get("dropped", [])),
                               meta=dict(header.get("meta", {})))

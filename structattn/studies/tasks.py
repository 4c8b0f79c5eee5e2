"""Task-level studies: registered experiments that train or evaluate whole models.

The operator study (:func:`structattn.studies.run_study`) measures how close each
approximation is to exact attention.  A *task study* answers a question one level up —
"does distilling attention heads help a student ViT on real digits?", "does a dual
encoder match cross-attention scores?" — by training small models on real data that
ships in packages (scikit-learn's digits, the MiniLM weights).  Each one is registered
by name and run from the command line::

    structattn task --list
    structattn task ssta-digits --seeds 0,1,2 --out results/ssta

or from Python with :func:`run_task`.  A task writes its records (JSON Lines), a
Markdown summary and its figures into ``out_dir``.

Writing a task
--------------
A module under :mod:`structattn.studies` (listed in :data:`TASK_MODULES` so that it is
imported lazily, only when tasks are listed or run) registers a function::

    from structattn.studies.tasks import TaskResult, register_task

    @register_task("my-task", description="one line", default_seeds=(0, 1, 2))
    def _my_task(*, seeds, quick, out_dir, progress):
        ...
        return TaskResult(records=rows, summary=markdown_table, figures=[path])

``quick=True`` asks for a reduced run (fewer steps or samples) that finishes in
seconds; tests use it.  ``progress`` says whether a progress bar may be shown.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "TASK_MODULES",
    "TaskResult",
    "TaskStudy",
    "get_task",
    "register_task",
    "run_task",
    "task_registry",
]

#: Modules imported (lazily) to populate the task registry.  A module that cannot be
#: imported because an optional dependency is missing is skipped by
#: :func:`task_registry`; running one of its tasks then reports the ImportError.
TASK_MODULES: tuple[str, ...] = (
    "structattn.studies.object_binding",
    "structattn.studies.de_capacity",
    "structattn.studies.de_distill",
    "structattn.studies.ssta",
    "structattn.studies.attention_patterns",
    "structattn.studies.vit_digits",
    "structattn.studies.inversion_digits",
    "structattn.studies.pbt_attention",
    "structattn.studies.pbt_digits",
)


@dataclasses.dataclass
class TaskResult:
    """What a task study returns.

    Attributes
    ----------
    records : list of dict
        One flat dict per measured quantity (JSON-serializable values).
    summary : str
        A Markdown table (or a few), printed by the CLI and written to ``summary.md``.
    figures : list of pathlib.Path
        Figure files written under ``out_dir``.
    metadata : dict
        Anything else worth keeping (configuration, data provenance, timings).
    """

    records: list[dict[str, Any]]
    summary: str
    figures: list[Path] = dataclasses.field(default_factory=list)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TaskStudy:
    """One registered task study (see the module docstring)."""

    name: str
    run: Callable[..., TaskResult]
    description: str
    default_seeds: tuple[int, ...] = (0,)


_TASKS: dict[str, TaskStudy] = {}
_LOADED = False


def register_task(
    name: str, *, description: str, default_seeds: Sequence[int] = (0,)
) -> Callable[[Callable[..., TaskResult]], Callable[..., TaskResult]]:
    """Decorator registering ``func(*, seeds, quick, out_dir, progress) -> TaskResult``."""
    if not isinstance(name, str) or not name or any(c in name for c in ", \t\n"):
        raise ValueError(f"name must be a non-empty string without commas or whitespace, "
                         f"got {name!r}")
    if not isinstance(description, str) or not description.strip():
        raise ValueError(f"description of task {name!r} must be a non-empty string")
    seeds = tuple(int(s) for s in default_seeds)
    if not seeds or any(s < 0 for s in seeds):
        raise ValueError(f"default_seeds must be non-negative integers, got {default_seeds!r}")

    def decorate(func: Callable[..., TaskResult]) -> Callable[..., TaskResult]:
        if name in _TASKS and _TASKS[name].run is not func:
            raise ValueError(f"a task named {name!r} is already registered")
        _TASKS[name] = TaskStudy(name, func, description.strip(), seeds)
        return func

    return decorate


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for module in TASK_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            missing = getattr(exc, "name", None) or ""
            if missing == "structattn" or missing.startswith("structattn."):
                raise  # a bug in the package, not a missing optional dependency
            continue  # an optional dependency (torch, scikit-learn, the MiniLM package)


def task_registry() -> dict[str, TaskStudy]:
    """Every registered task study, by name (imports :data:`TASK_MODULES` once)."""
    _load()
    return dict(sorted(_TASKS.items()))


def get_task(name: str) -> TaskStudy:
    """The task study registered as ``name``; a clear ValueError lists the others."""
    tasks = task_registry()
    if name not in tasks:
        known = ", ".join(tasks) or "(none)"
        raise ValueError(f"unknown task {name!r}; registered tasks: {known}")
    return tasks[name]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def run_task(
    name: str,
    *,
    seeds: Sequence[int] | None = None,
    quick: bool = False,
    out_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> TaskResult:
    """Run a registered task study and write its records, summary and figures.

    Parameters
    ----------
    name : str
        A name from :func:`task_registry`.
    seeds : sequence of int, optional
        Seeds (one run each); default: the task's ``default_seeds``.
    quick : bool
        A reduced run for tests and smoke checks.
    out_dir : path, optional
        Where ``records.jsonl``, ``summary.md``, ``metadata.json`` and the figures go
        (created if missing; default ``structattn-task-<name>`` in the working directory).
    progress : bool
        Allow a progress bar.

    Returns
    -------
    TaskResult
    """
    task = get_task(name)
    seeds = task.default_seeds if seeds is None else tuple(int(s) for s in seeds)
    if not seeds or any(s < 0 for s in seeds):
        raise ValueError(f"seeds must be non-negative integers, got {seeds!r}")
    out = Path(out_dir) if out_dir is not None else Path(f"structattn-task-{name}")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise PermissionError(f"out_dir {str(out)!r} is not writable")
    start = time.perf_counter()
    result = task.run(seeds=seeds, quick=bool(quick), out_dir=out, progress=bool(progress))
    elapsed = time.perf_counter() - start
    result.metadata = {
        "task": name,
        "seeds": list(seeds),
        "quick": bool(quick),
        "elapsed_s": elapsed,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        **result.metadata,
    }
    with open(out / "records.jsonl", "w", encoding="utf-8") as fh:
        for record in result.records:
            fh.write(json.dumps(_jsonable(record)) + "\n")
    (out / "summary.md").write_text(result.summary.rstrip() + "\n", encoding="utf-8")
    (out / "metadata.json").write_text(
        json.dumps(_jsonable(result.metadata), indent=2) + "\n", encoding="utf-8"
    )
    return result

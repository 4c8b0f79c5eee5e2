"""Numerical accuracy studies: operator registry, error metrics, sweep runner, tables.

Importing this package registers the built-in approximations
(:mod:`structattn.studies.builtin`).

Examples
--------
>>> from structattn.studies import format_table, run_study
>>> records = run_study(["performer"], lengths=(16,), dim=8, repeats=1)
>>> sorted({r["budget_value"] for r in records})
[32, 128, 512]
"""

from . import (
    baselines,  # noqa: F401  (registers uniform and exact, the baselines of every table)
    builtin,  # noqa: F401  (registers the built-in operators)
    eigen,  # noqa: F401  (registers the eigenfunction low-rank baseline)
    estimators,  # noqa: F401  (registers RFA-SNIS, RA, LARA, cosFormer)
    graph_kernels,  # noqa: F401  (registers kernel attention with graph-kernel masks)
    graphs,  # noqa: F401  (registers sparse-graph attention)
    hybrid,  # noqa: F401  (registers hybrid-mra, hybrid-window, hybrid-lsh)
    mra,  # noqa: F401  (registers MRA-2 and MRA-2-s)
    solvers,  # noqa: F401  (registers the optimization-based attention maps)
)
from .attention_record import AttentionCall, AttentionRecord, load_record
from .baselines import UniformAttention
from .capture import capture  # the function (the API: structattn.studies.capture)
from .engine import RECORD_KEYS, run_tasks
from .inputs import calibrated_scale, synthetic_inputs
from .metrics import max_abs_error, relative_error, row_kl
from .recommend import recommend
from .records import Records, load_records
from .registry import StudyEntry, get, register, registry
from .report import format_table, summary_table, write_records, write_report
from .runner import REPEATS, run_study
from .summary import summarize
from .sweep import InputSpec, Sweep, Task
from .sweep import tasks as sweep_tasks  # `structattn.studies.tasks` is the task-study module

__all__ = [
    "RECORD_KEYS",
    "REPEATS",
    "AttentionCall",
    "AttentionRecord",
    "InputSpec",
    "Records",
    "StudyEntry",
    "Sweep",
    "Task",
    "UniformAttention",
    "calibrated_scale",
    "capture",
    "format_table",
    "get",
    "load_record",
    "load_records",
    "max_abs_error",
    "recommend",
    "register",
    "registry",
    "relative_error",
    "row_kl",
    "run_study",
    "run_tasks",
    "summarize",
    "summary_table",
    "sweep_tasks",
    "synthetic_inputs",
    "write_records",
    "write_report",
]

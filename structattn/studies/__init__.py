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
    builtin,  # noqa: F401  (registers the built-in operators)
    eigen,  # noqa: F401  (registers the eigenfunction low-rank baseline)
    estimators,  # noqa: F401  (registers RFA-SNIS, RA, LARA, cosFormer)
    graph_kernels,  # noqa: F401  (registers kernel attention with graph-kernel masks)
    graphs,  # noqa: F401  (registers sparse-graph attention)
    mra,  # noqa: F401  (registers MRA-2 and MRA-2-s)
    solvers,  # noqa: F401  (registers the optimization-based attention maps)
)
from .inputs import synthetic_inputs
from .metrics import max_abs_error, relative_error, row_kl
from .registry import StudyEntry, get, register, registry
from .report import format_table, write_records
from .runner import run_study

__all__ = [
    "StudyEntry",
    "format_table",
    "get",
    "max_abs_error",
    "register",
    "registry",
    "relative_error",
    "row_kl",
    "run_study",
    "synthetic_inputs",
    "write_records",
]

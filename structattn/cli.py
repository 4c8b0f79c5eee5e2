"""The ``structattn`` command line: ``info``, ``study``, ``report``, ``task`` and ``bench``.

``structattn info``
    Versions of structattn and its dependencies, detected backends, numba threads and
    cache state.
``structattn study``
    Accuracy sweep of the registered approximations against exact softmax attention
    (:func:`structattn.studies.run_study`): summary table on the terminal, records
    appended to a file as they finish (``--resume``), a Markdown/HTML report with
    figures; ``--workers``/``--scheduler`` run it on dask.distributed.
``structattn report``
    Rebuilds a study's report from its records file.
``structattn recommend``
    Pareto-optimal approximations and budgets for captured attention
    (:func:`structattn.studies.recommend.recommend`), under ``--max-error`` or
    ``--max-cost``.
``structattn task``
    Runs a registered task-level study (:mod:`structattn.studies.tasks`): small models
    trained on real data, written as records, a Markdown summary and figures.
``structattn bench``
    Runs the ``benchmarks/bench_*.py`` scripts of a source checkout.

Also available as ``python -m structattn``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["find_benchmarks", "main"]

# (label, module, distribution) of the dependencies `info` reports
_PACKAGES = (
    ("numpy", "numpy", "numpy"),
    ("scipy", "scipy", "scipy"),
    ("numba", "numba", "numba"),
    ("torch", "torch", "torch"),
    ("pywavelets", "pywt", "PyWavelets"),
    ("networkx", "networkx", "networkx"),
    ("array-api-compat", "array_api_compat", "array-api-compat"),
)


# ------------------------------------------------------------------------- info
def _import(module: str) -> tuple[Any | None, str]:
    """``(module or None, version text)``; never raises."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None, "not installed"
    except Exception as exc:  # a broken installation must not crash `info`
        return None, f"import failed ({type(exc).__name__}: {exc})"
    return mod, str(getattr(mod, "__version__", "unknown version"))


def _numba_details(numba: Any) -> list[str]:
    lines = []
    try:
        lines.append(f"  threads: {numba.get_num_threads()}")
    except Exception as exc:
        lines.append(f"  threads: unavailable ({exc})")
    cache_dir = getattr(numba.config, "CACHE_DIR", "") or ""
    if cache_dir:
        lines.append(f"  cache dir: {cache_dir} (NUMBA_CACHE_DIR)")
    else:
        lines.append(
            "  cache dir: default (__pycache__ next to each module; a user-wide cache "
            f"if that is read-only: {_numba_user_cache()})"
        )
    package_dir = Path(__file__).resolve().parent
    index_files = sorted(package_dir.rglob("__pycache__/*.nbi"))
    if index_files:
        lines.append(f"  package cache: {len(index_files)} compiled kernel index file(s) (*.nbi)")
    else:
        lines.append("  package cache: empty (kernels compile on first use)")
    return lines


def _numba_user_cache() -> str:
    try:
        from numba.misc.appdirs import AppDirs

        return AppDirs(appname="numba", appauthor=False).user_cache_dir
    except Exception:
        return "unknown"


def _torch_details(torch: Any) -> list[str]:
    try:
        cuda = torch.cuda.is_available()
    except Exception as exc:
        return [f"  CUDA: unavailable ({exc})"]
    if not cuda:
        return ["  CUDA: not available"]
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return [f"  CUDA: available, {torch.version.cuda} ({names})"]


def _info(args: argparse.Namespace) -> int:
    from . import __version__
    from .backends import numba_available, torch_available

    print(f"structattn: {__version__} ({Path(__file__).resolve().parent})")
    print(f"python: {platform.python_version()} ({sys.executable})")
    print(f"platform: {platform.platform()}")
    for label, module, _ in _PACKAGES:
        mod, version = _import(module)
        print(f"{label}: {version}")
        if mod is not None and label == "numba":
            print("\n".join(_numba_details(mod)))
        if mod is not None and label == "torch":
            print("\n".join(_torch_details(mod)))
    backends = ["numpy"]
    backends += ["numba"] if numba_available() else []
    backends += ["torch"] if torch_available() else []
    print(f"backends: {', '.join(backends)} (auto: torch for tensors, "
          f"{'numba' if numba_available() else 'numpy'} for numpy arrays)")
    return 0


# ------------------------------------------------------------------------ study
def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in _split(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _float_list(text: str) -> tuple[float, ...]:
    """Positive floats, comma-separated (``--temperatures 0.5,1,2`` or ``0.5 1 2``)."""
    try:
        values = tuple(float(t) for t in _split(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not values or not all(v > 0 and v != float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"expected positive finite numbers, got {text!r}")
    return values


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


# ------------------------------------------------------------------------- task
def _task(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .studies.tasks import get_task, run_task, task_registry

    if args.list or args.name is None:
        tasks = task_registry()
        if not tasks:
            print("no task studies registered")
        for name, task in tasks.items():
            seeds = ",".join(str(s) for s in task.default_seeds)
            print(f"{name:24s} {task.description} (default seeds {seeds})")
        if args.name is None and not args.list:
            parser.error("give a task name, or --list")
        return 0
    try:
        get_task(args.name)
    except ValueError as exc:
        parser.error(str(exc))
    if args.seeds is not None and any(s < 0 for s in args.seeds):
        parser.error(f"--seeds must be non-negative, got {args.seeds}")
    out = Path(args.out) if args.out else Path(f"structattn-task-{args.name}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"--out {str(out)!r} cannot be created: {exc}")
    if not os.access(out, os.W_OK):
        parser.error(f"--out {str(out)!r} is not writable")
    start = time.perf_counter()
    try:
        result = run_task(args.name, seeds=args.seeds, quick=args.quick, out_dir=out,
                          progress=not args.quiet and sys.stderr.isatty())
    except ImportError as exc:
        print(f"structattn task: {exc}", file=sys.stderr)
        return 2
    print(result.summary)
    print(f"\n{args.name}: {len(result.records)} records in "
          f"{time.perf_counter() - start:.1f} s; written to {out}/ "
          f"(records.jsonl, summary.md, metadata.json"
          + "".join(f", {Path(f).name}" for f in result.figures) + ")")
    return 0


# -------------------------------------------------------------------- recommend
def _recommend(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .studies.recommend import recommend_command

    if args.max_error is not None and args.max_error < 0:
        parser.error(f"--max-error must be >= 0, got {args.max_error}")
    if args.max_cost is not None and args.max_cost < 0:
        parser.error(f"--max-cost must be >= 0, got {args.max_cost}")
    return recommend_command(args, parser)


# ------------------------------------------------------------------------ bench
def _search_roots() -> list[Path]:
    """Where ``bench`` looks: the cwd and the package directory's parent."""
    roots = [Path.cwd().resolve(), Path(__file__).resolve().parent.parent]
    return list(dict.fromkeys(roots))


def find_benchmarks(starts: Iterable[Path]) -> Path | None:
    """The first ``benchmarks/`` directory holding ``bench_*.py`` scripts.

    Each start directory and then its parents are searched, in order.

    Returns
    -------
    pathlib.Path or None
    """
    for start in starts:
        for directory in (start, *start.parents):
            candidate = directory / "benchmarks"
            if candidate.is_dir() and any(candidate.glob("bench_*.py")):
                return candidate
    return None


def _run_streaming(cmd: Sequence[str], cwd: Path, write: Callable[[str], Any]) -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            write(line)
    return proc.returncode


def _bench(args: argparse.Namespace) -> int:
    starts = [Path(args.dir)] if args.dir else _search_roots()
    bench_dir = find_benchmarks(starts)
    if bench_dir is None:
        where = ", ".join(str(s) for s in starts)
        print(
            f"structattn bench: no benchmarks/ directory with bench_*.py scripts found "
            f"(searched {where} and their parents). The benchmarks ship with the source "
            "tree, not with the installed package: run this from a git checkout of "
            "structattn.",
            file=sys.stderr,
        )
        return 2
    scripts = sorted(bench_dir.glob("bench_*.py"))
    failed = []

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    for script in scripts:
        cmd = [sys.executable, str(script), *(["--quick"] if args.quick else [])]
        print(f"==> {script.name}{' --quick' if args.quick else ''}", flush=True)
        start = time.perf_counter()
        code = _run_streaming(cmd, bench_dir.parent, write)
        status = "ok" if code == 0 else f"FAILED (exit code {code})"
        print(f"<== {script.name}: {status} in {time.perf_counter() - start:.1f} s", flush=True)
        if code != 0:
            failed.append(script.name)
    print(f"\n{len(scripts) - len(failed)}/{len(scripts)} benchmark scripts succeeded"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


# ------------------------------------------------------------------------ parser
def _parser() -> tuple[argparse.ArgumentParser, ...]:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="structattn", description="Attention as a structured linear operator."
    )
    parser.add_argument("--version", action="version", version=f"structattn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("info", help="versions, backends, numba threads and cache")

    from .studies.command import add_study_parsers

    study, report = add_study_parsers(sub)

    task = sub.add_parser(
        "task",
        help="run a task-level study (models trained on real data)",
        description="Run a registered task-level study; --list shows them.",
    )
    task.add_argument("name", nargs="?", help="registered task name")
    task.add_argument("--list", action="store_true", help="list the registered tasks")
    task.add_argument("--seeds", type=_int_list, default=None, metavar="S,S",
                      help="seeds (default: the task's own)")
    task.add_argument("--quick", action="store_true", help="reduced run (smoke test)")
    task.add_argument("--out", metavar="DIR", help="output directory "
                      "(default structattn-task-NAME)")
    task.add_argument("--quiet", action="store_true", help="no progress bar")

    from .studies.captured_inputs import inputs_argument

    recommend = sub.add_parser(
        "recommend",
        help="Pareto-optimal approximations for captured attention, under a budget",
        description="Run the study on captured attention (a .npz from "
        "structattn.studies.capture, or arrays q, k, v) and print the Pareto-optimal "
        "methods and budgets (error vs cost) meeting the constraint, with the call "
        "reproducing each.",
    )
    recommend.add_argument("--inputs", required=True, type=inputs_argument, metavar="PATH",
                           help="captured attention (.npz)")
    limit = recommend.add_mutually_exclusive_group()
    limit.add_argument("--max-error", type=float, metavar="E",
                       help="largest mean relative output error accepted (cheapest wins)")
    limit.add_argument("--max-cost", type=float, metavar="FRACTION",
                       help="largest cost as a fraction of exact attention's (most "
                       "accurate wins)")
    recommend.add_argument("--cost", choices=("time", "flops"), default="time",
                           help="time: measured, over exact attention's time (default); "
                           "flops: matmul flops over exact attention's")
    recommend.add_argument("--operators", metavar="A,B", help="registered names (default: all)")
    recommend.add_argument("--seeds", type=_int_list, default=(0,), metavar="S,S",
                           help="operators' random draws")
    recommend.add_argument("--repeats", type=_positive, default=3,
                           help="timed calls after one warm-up call")
    recommend.add_argument("--backend", choices=("auto", "numpy", "numba", "torch"),
                           default="auto")
    recommend.add_argument("--records", metavar="FILE",
                           help="use these study records (e.g. structattn study --inputs PATH "
                           "--timing all --out FILE) instead of running the study")
    recommend.add_argument("--out", metavar="FILE", help="write the study's records here")
    recommend.add_argument("--quiet", action="store_true", help="no progress bar")

    bench = sub.add_parser("bench", help="run benchmarks/bench_*.py of a source checkout")
    bench.add_argument("--quick", action="store_true", help="pass --quick to every script")
    bench.add_argument("--dir", metavar="PATH", help="start the benchmarks/ search here")
    return parser, study, task, report, recommend


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``structattn`` console script.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 on success, 2 for usage errors (argparse style), 1 when a
        benchmark script fails.
    """
    parser, study_parser, task_parser, report_parser, recommend_parser = _parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "info":
            return _info(args)
        if args.command == "study":
            from .studies.command import study_command

            return study_command(args, study_parser)
        if args.command == "task":
            return _task(args, task_parser)
        if args.command == "report":
            from .studies.command import report_command

            return report_command(args, report_parser)
        if args.command == "recommend":
            return _recommend(args, recommend_parser)
        return _bench(args)
    except SystemExit as exc:  # argparse errors, --help, --version
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)

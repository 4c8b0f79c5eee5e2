"""The ``study`` and ``report`` subcommands of the ``structattn`` command line.

Thin wrappers: the arguments become a :class:`~structattn.studies.Sweep`, run by
:func:`~structattn.studies.run_study` (records appended to a file as they finish), then
summarized (:func:`~structattn.studies.summary_table`) and reported
(:func:`~structattn.studies.write_report`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..backends import BACKENDS
from .captured_inputs import inputs_argument as _inputs_argument
from .runner import REPEATS
from .sweep import TIMING, Sweep

__all__ = ["add_study_parsers", "report_command", "study_command"]


def _cli():
    from .. import cli

    return cli


def _split(text: str) -> list[str]:
    return _cli()._split(text)


def _int_list(text: str) -> tuple[int, ...]:
    return _cli()._int_list(text)


def _float_list(text: str) -> tuple[float, ...]:
    return _cli()._float_list(text)


def _positive(text: str) -> int:
    return _cli()._positive(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def _nonnegative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _layer(text: str) -> int | str:
    if text == "all":
        return text
    if text.isdigit() and int(text) <= 5:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a MiniLM layer 0-5 or 'all', got {text!r}")


def _list_operators() -> int:
    from . import registry

    for name, entry in registry().items():
        grid = "; ".join(f"{k}={','.join(map(str, v))}" for k, v in entry.budgets.items())
        causal = "" if entry.causal else " [no causal form]"
        default = "" if entry.default else " [not in default: slow on CPU]"
        print(f"{name:22s} {grid or '(no budget)':34s} {entry.description}{causal}{default}")
    return 0


def _prepare_outputs(args: argparse.Namespace, parser: argparse.ArgumentParser
                     ) -> tuple[Path | None, Path | None]:
    """Records path and report directory, checked writable before any work."""
    from .records import check_writable

    report = None if args.no_report else Path(args.report)
    out = Path(args.out) if args.out else (None if report is None else report / "records.jsonl")
    if args.out and Path(args.out).suffix.lower() not in (".jsonl", ".csv"):
        parser.error(f"--out must end in .jsonl or .csv, got {args.out!r}")
    if report is not None:
        try:
            report.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            parser.error(f"--report {str(report)!r} cannot be created: {exc}")
        if not os.access(report, os.W_OK | os.X_OK):
            parser.error(f"--report {str(report)!r} is not writable")
    if out is None:
        if args.resume:
            parser.error("--resume needs a records file: give --out (or a --report directory)")
        return None, None
    try:
        check_writable(out)
    except ValueError as exc:
        parser.error(f"--out: {exc}")
    if args.resume and not out.exists():
        parser.error(f"--resume: {str(out)!r} does not exist")
    return out, report


def study_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``structattn study``; returns the exit status."""
    if args.list:
        return _list_operators()
    from . import registry

    known = registry()
    operators = None
    if args.operators is not None:
        operators = _split(args.operators)
        if operators == ["all"]:
            operators = list(known)
        unknown = [name for name in operators if name not in known]
        if unknown or not operators:
            parser.error(
                f"unknown operator(s): {', '.join(unknown) or '(none given)'}; "
                f"registered operators: {', '.join(known)}"
            )
    if any(x < 1 for x in args.lengths):
        parser.error(f"--lengths must be positive, got {args.lengths}")
    if any(x < 0 for x in args.seeds):
        parser.error(f"--seeds must be non-negative, got {args.seeds}")
    if args.workers is not None and args.scheduler is not None:
        parser.error("give --workers or --scheduler, not both")
    out, report = _prepare_outputs(args, parser)
    from . import Sweep, run_study, summarize, summary_table, write_report
    from .records import load_records

    temperatures = tuple(t for group in args.temperatures for t in group)
    try:
        sweep = Sweep(
            operators=None if operators is None else tuple(operators),
            lengths=args.lengths, inputs=args.inputs, minilm_layer=args.minilm_layer,
            causal=(False, True) if args.causal else (False,), seeds=args.seeds,
            temperatures=temperatures, dim=args.dim, value_dim=args.value_dim,
            heads=args.heads, batch=args.batch, scale=args.scale, dtype=args.dtype,
            backend=args.backend, matrix_max_length=args.matrix_max_length,
            repeats=args.repeats, timing="none" if args.no_timing else args.timing,
        )
        sweep.check_inputs()
    except (ImportError, ValueError) as exc:  # missing extra, MiniLM beyond 512 tokens
        print(f"structattn study: {exc}", file=sys.stderr)
        return 2
    engine, client = "serial", None
    if args.workers is not None or args.scheduler is not None:
        engine = "dask"
        if args.scheduler is not None:
            try:
                from distributed import Client
            except ImportError:
                print("structattn study: --scheduler needs dask.distributed: "
                      "pip install 'structattn[distributed]'", file=sys.stderr)
                return 2
            client = Client(args.scheduler)
    start = time.perf_counter()
    try:
        records = run_study(sweep=sweep, engine=engine, workers=args.workers, client=client,
                            out=out, resume=args.resume,
                            progress=not args.quiet and sys.stderr.isatty())
    except KeyboardInterrupt:
        if out is None:
            print("\nstructattn study: interrupted (no --out: nothing kept)", file=sys.stderr)
        else:
            print(f"\nstructattn study: interrupted; {len(load_records(out))} finished "
                  f"records kept in {out} (rerun with --resume to continue)", file=sys.stderr)
        return 130
    finally:
        if client is not None:
            client.close()
    elapsed = time.perf_counter() - start
    rows = summarize(records)
    print(summary_table(rows))
    where = "not saved (give --out)" if out is None else f"{out} (metadata: {out}.meta.json)"
    print(f"\n{len(records)} records in {elapsed:.1f} s; errors against float64 exact "
          f"softmax attention; records: {where}")
    if operators is None:
        skipped = [name for name, entry in known.items() if not entry.default]
        if skipped:
            print(f"not in the default set (slow on a CPU): {', '.join(skipped)}; "
                  f"--operators all includes them")
    if report is not None:
        meta = _metadata(out)
        paths = write_report(records, report, metadata=meta, records_path=out)
        figures = ", ".join(paths[k].name for k in ("error_vs_budget", "pareto",
                                                    "time_vs_length"))
        print(f"report: {paths['markdown']} (and {paths['html'].name}, figures {figures})")
    return 0


def _metadata(records_path: Path) -> dict[str, Any] | None:
    import json

    meta = records_path.with_name(records_path.name + ".meta.json")
    if not meta.exists():
        return None
    try:
        return json.loads(meta.read_text(encoding="utf-8"))
    except ValueError:
        return None


def report_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``structattn report``; returns the exit status."""
    from . import summarize, summary_table, write_report
    from .records import load_records

    path = Path(args.records)
    if not path.is_file():
        parser.error(f"records file {str(path)!r} does not exist")
    try:
        records = load_records(path)
    except (ValueError, KeyError) as exc:
        parser.error(f"cannot read records from {str(path)!r}: {exc}")
    if not records:
        parser.error(f"{str(path)!r} holds no records")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"--out {str(out)!r} cannot be created: {exc}")
    paths = write_report(records, out, metadata=_metadata(path), records_path=path)
    print(summary_table(summarize(records)))
    print(f"\nreport: {paths['markdown']} (and {paths['html'].name} and figures in {out})")
    return 0



def add_study_parsers(sub: Any) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """Add the ``study`` and ``report`` subparsers to ``sub``; returns them."""
    study = sub.add_parser(
        "study",
        help="accuracy sweep of approximations against exact softmax attention",
        description="Accuracy sweep of the registered approximations against exact "
        "softmax attention (float64 reference). Default: real MiniLM attention (72 heads) "
        "at L = 128, 256, 512 and entropy-calibrated synthetic inputs at 1024; prints the "
        "summary table, writes records and a report.",
    )
    study.add_argument("--list", action="store_true",
                       help="list the registered operators with their budget grids")
    study.add_argument("--operators", metavar="A,B",
                       help="registered names, or 'all' (default: every registered operator "
                       "except the slow ones marked [not in default] by --list)")
    study.add_argument("--lengths", type=_int_list, default=Sweep.lengths, metavar="L,L")
    study.add_argument(
        "--inputs", type=_inputs_argument, default="auto", metavar="KIND|PATH",
        help="auto: real MiniLM attention up to 512 tokens, calibrated synthetic beyond; "
        "minilm; calibrated (Gaussian q, k scaled to MiniLM's mean normalized row entropy); "
        "synthetic (Gaussian q, k of std --scale); or a .npz of captured attention "
        "(structattn.studies.capture; or arrays q, k, v and optional mask, causal): its "
        "shapes, masks and causal flags replace --lengths, --causal, --dim, --heads",
    )
    study.add_argument("--minilm-layer", type=_layer, default="all", metavar="N|all",
                       help="MiniLM layer 0-5, or all (6 layers x 12 heads; default)")
    study.add_argument("--dim", type=_positive, default=Sweep.dim,
                       help="synthetic query/key size d")
    study.add_argument("--value-dim", type=_positive, default=Sweep.value_dim,
                       help="synthetic value size d_v")
    study.add_argument("--heads", type=_positive, default=Sweep.heads)
    study.add_argument("--batch", type=_positive, default=Sweep.batch)
    study.add_argument("--seeds", type=_int_list, default=(0,), metavar="S,S",
                       help="MiniLM text windows / synthetic draws and feature draws")
    study.add_argument("--scale", type=_positive_float, default=0.5,
                       help="std of synthetic queries and keys (--inputs synthetic)")
    study.add_argument(
        "--temperatures", type=_float_list, nargs="+", default=[(1.0,)], metavar="T",
        help="norm sweep: multiply q and k by each factor (e.g. 0.5 1 2, or 0.5,1,2)",
    )
    study.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    study.add_argument("--causal", action="store_true",
                       help="also run causal attention (MiniLM is an encoder: off by default)")
    study.add_argument("--no-causal", action="store_true", help=argparse.SUPPRESS)
    study.add_argument("--backend", choices=BACKENDS, default="auto")
    study.add_argument(
        "--repeats", type=_positive, default=REPEATS,
        help=f"timed calls after one warm-up call (median and spread; default {REPEATS}; "
        "speedups are shown only with >= 3)",
    )
    study.add_argument(
        "--timing", choices=TIMING, default="middle",
        help="time every budget point (all), each operator's middle budget (middle, "
        "default), or none; timings are always serial, first seed only")
    study.add_argument("--no-timing", action="store_true", help="errors only (--timing none)")
    study.add_argument(
        "--matrix-max-length", type=_nonnegative, default=Sweep.matrix_max_length,
        help="row KL (dense L x L maps) up to this length",
    )
    study.add_argument("--report", metavar="DIR", default="structattn-study",
                       help="report directory (Markdown, HTML, figures; default "
                       "structattn-study)")
    study.add_argument("--no-report", action="store_true", help="write no report")
    study.add_argument("--out", metavar="PATH",
                       help="records file, .jsonl or .csv, appended as each record finishes "
                       "(default REPORT/records.jsonl)")
    study.add_argument("--resume", action="store_true",
                       help="keep the records in --out and run only the missing ones")
    study.add_argument("--quiet", action="store_true", help="no progress bar")
    study.add_argument("--workers", type=_positive, metavar="N",
                       help="run the errors on a dask LocalCluster of N processes "
                       "(timings stay serial)")
    study.add_argument("--scheduler", metavar="ADDRESS",
                       help="run the errors on an existing dask cluster")

    report = sub.add_parser(
        "report",
        help="rebuild a study report from saved records",
        description="Rebuild the Markdown/HTML report and figures of a study from its "
        "records file (.jsonl or .csv).",
    )
    report.add_argument("records", help="records file written by `structattn study`")
    report.add_argument("--out", metavar="DIR", default="structattn-study",
                        help="report directory (default structattn-study)")

    return study, report

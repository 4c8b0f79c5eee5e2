"""Which approximation, at which budget: the Pareto front of a study, under a constraint.

:func:`recommend` takes the records of :func:`~structattn.studies.run_study` (on captured
attention: ``Sweep(inputs=PATH)``, or on any inputs) and places every operator x budget at
``(cost, error)``:

* ``error`` — the study's headline ``head_error`` (mean relative output error over the
  batch x head slices against float64 exact softmax attention), averaged over the
  records' inputs (lengths, causal flags, seeds, temperatures);
* ``cost`` — ``"time"``: median time over exact attention's median time on the same
  input (measured serially, warm-up + repeats calls; only timed records count), averaged
  over inputs; or ``"flops"``: matrix-multiply flops over those of exact attention on one
  head of each input, counted by :class:`torch.utils.flop_counter.FlopCounterMode`
  (matmuls, bmm, einsum and SDPA; elementwise ops, FFTs and sorts are not counted, so
  FFT-based methods look cheaper than they are — prefer ``"time"`` for those).

The non-dominated points form the Pareto front; ``max_error`` keeps the front points with
``error <= max_error`` and picks the cheapest, ``max_cost`` keeps those with ``cost <=
max_cost`` and picks the most accurate.  A point whose error is not below uniform
attention's on the same inputs is never recommended (marked ``!``).  Uniform attention
(the trivial baseline) and exact attention (cost 1, error 0) are points like the others.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["COSTS", "Recommendation", "operator_flops", "pareto_front", "recommend"]

#: Cost measures of :func:`recommend`.
COSTS = ("time", "flops")


@functools.lru_cache(maxsize=512)
def operator_flops(name: str, budget_name: str | None, budget_value: Any, length: int,
                   dim: int, value_dim: int, causal: bool, seed: int = 0) -> int | None:
    """Matmul flops of one head of registered operator ``name`` at ``length`` (torch backend).

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode` on one call with
    ``(1, 1, L, d)`` inputs; ``name="exact"`` (and ``None``) counts exact softmax attention.
    None when the operator has no torch path (it raised) or the counter sees no matmul
    (sparse and gather-based methods, uniform attention): their cost is not measured by
    flops.  ``O(one call)``.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..attention import softmax_attention
    from .registry import get

    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(1, 1, length, dim, generator=g, dtype=torch.float64) * 0.5
            for _ in range(2))
    v = torch.randn(1, 1, length, value_dim, generator=g, dtype=torch.float64)
    try:
        if name in ("exact", None):
            def call():
                return softmax_attention(q, k, v, causal=causal, backend="torch")
        else:
            budget = {} if budget_name is None else {budget_name: budget_value}
            op = get(name).build(dim=dim, seed=seed, causal=causal, backend="torch",
                                 length=length, **budget)

            def call():
                return op(q, k, v)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            out = call()
        flops = int(counter.get_total_flops())
        # 0: the work is in ops the counter does not see (sparse, gathers) — unmeasured
        return flops if isinstance(out, torch.Tensor) and flops > 0 else None
    except (TypeError, NotImplementedError):  # no torch path: left out of flops comparisons
        return None
    except Exception as exc:  # a failure, not a missing path: say so, then leave it out
        import warnings

        warnings.warn(f"operator_flops: {name} ({budget_name}={budget_value}) failed on "
                      f"torch inputs and is left out of the flops comparison: "
                      f"{type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)
        return None


def pareto_front(points: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Points not dominated in ``(cost, error)`` (lower is better), sorted by cost.

    A point is dominated when another has ``cost <=`` and ``error <=`` with one strict.
    ``O(n log n)``.
    """
    pts = sorted((dict(p) for p in points if p.get("cost") is not None
                  and p.get("error") is not None),
                 key=lambda p: (p["cost"], p["error"]))
    front: list[dict[str, Any]] = []
    best = math.inf
    for p in pts:
        if p["error"] < best:
            front.append(p)
            best = p["error"]
    return front


def _budget_text(p: Mapping[str, Any]) -> str:
    return "-" if p["budget_name"] is None else f"{p['budget_name']}={p['budget_value']}"


def _call(p: Mapping[str, Any], dim: int | None, causal: bool, inputs: str | None) -> str:
    budget = "" if p["budget_name"] is None else f", {p['budget_name']}={p['budget_value']!r}"
    py = (f"structattn.studies.get({p['operator']!r}).build(dim={dim or 'd'}, seed=0, "
          f"causal={causal}{budget})")
    if inputs is None:
        return py
    return f"{py}  |  structattn study --inputs {inputs} --operators {p['operator']}"


@dataclasses.dataclass
class Recommendation:
    """What :func:`recommend` returns.

    Attributes
    ----------
    points : list of dict
        Every operator x budget: ``operator``, ``budget_name``, ``budget_value``,
        ``error``, ``uniform_error``, ``cost`` (None when unmeasured), ``time_s``,
        ``exact_time_s``, ``flops``, ``exact_flops``, ``records``, ``call``.
    front : list of dict
        The Pareto-optimal points, by increasing cost.
    feasible : list of dict
        Front points meeting the constraint whose error is below uniform attention's on
        the same inputs (a point that is not has learned nothing about the scores and is
        never recommended); without a constraint, all such front points.
    choice : dict or None
        The cheapest feasible point under ``max_error``, the most accurate under
        ``max_cost``; None without a constraint or when nothing is feasible.
    cost, max_error, max_cost
        The settings.
    """

    points: list[dict[str, Any]]
    front: list[dict[str, Any]]
    feasible: list[dict[str, Any]]
    choice: dict[str, Any] | None
    cost: str
    max_error: float | None
    max_cost: float | None

    def __str__(self) -> str:
        unit = "time / exact time" if self.cost == "time" else "matmul flops / exact flops"
        lines = [f"Pareto front (error = mean relative output error over heads; "
                 f"cost = {unit}):", ""]
        head = f"{'':2s}{'method':22s} {'budget':20s} {'error':>8s} {'cost':>8s}"
        lines += [head, "-" * len(head)]
        for p in self.front:
            mark = "->" if p is self.choice else (
                "" if p in self.feasible else ("!" if not _beats_uniform(p) else "x"))
            lines.append(f"{mark:2s}{p['operator']:22s} {_budget_text(p):20s} "
                         f"{p['error']:8.4f} {p['cost']:8.3g}")
        uni = next((p for p in self.points if p["operator"] == "uniform"), None)
        if uni is not None and uni["error"] is not None:
            lines.append(f"\nbaseline: uniform attention error {uni['error']:.4f}")
        if any(not _beats_uniform(p) for p in self.front):
            lines.append("'!': error not below uniform attention's (never recommended)")
        unmeasured = sum(p["cost"] is None for p in self.points)
        if unmeasured:
            lines.append(f"{unmeasured} operator/budget point(s) without a {self.cost} "
                         "measurement are not on the front")
        if self.max_error is None and self.max_cost is None:
            lines.append("no constraint given (--max-error or --max-cost): the whole front "
                         "is shown")
        elif self.choice is None:
            what = (f"error <= {self.max_error:g}" if self.max_error is not None
                    else f"cost <= {self.max_cost:g}")
            lines.append(f"\nno Pareto point meets {what} ('x' rows miss it)")
        else:
            what = (f"the cheapest with error <= {self.max_error:g}"
                    if self.max_error is not None
                    else f"the most accurate with cost <= {self.max_cost:g}")
            c = self.choice
            lines.append(f"\nrecommended ({what}): {c['operator']} {_budget_text(c)}, "
                         f"error {c['error']:.4f}, cost {c['cost']:.3g}")
            lines.append(f"  {c['call']}")
        if self.feasible and self.choice is not None:
            lines.append("\nreproduce the feasible Pareto points:")
            lines += [f"  {p['call']}" for p in self.feasible]
        return "\n".join(lines)


def _beats_uniform(p: Mapping[str, Any]) -> bool:
    """The error is below uniform attention's on the same inputs (else: learned nothing)."""
    return p["uniform_error"] is None or p["error"] < p["uniform_error"]


def _check(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def recommend(
    records: Iterable[Mapping[str, Any]],
    max_error: float | None = None,
    max_cost: float | None = None,
    *,
    cost: str = "time",
    dim: int | None = None,
    value_dim: int | None = None,
    inputs: str | None = None,
) -> Recommendation:
    """The Pareto-optimal methods and budgets of a study, and the choice under a budget.

    Parameters
    ----------
    records : iterable of dict
        Records of :func:`~structattn.studies.run_study` (keys
        :data:`~structattn.studies.RECORD_KEYS`); with ``cost="time"`` run with
        ``timing="all"`` so every budget point is timed.
    max_error : float, optional
        Keep front points with ``error <= max_error``; choose the cheapest.
    max_cost : float, optional
        Keep front points with ``cost <= max_cost`` (a fraction of exact attention's);
        choose the most accurate.  Give at most one of the two.
    cost : {"time", "flops"}
        Cost measure (module docstring).
    dim, value_dim : int, optional
        Head sizes of the inputs: needed for ``cost="flops"`` and shown in the calls.
    inputs : str, optional
        The inputs' path, shown in the reproducing ``structattn study`` command.

    Returns
    -------
    Recommendation
        ``str()`` of it is the printed table.

    Raises
    ------
    ValueError
        Both constraints, a negative constraint, an unknown ``cost``, ``cost="flops"``
        without ``dim``, or records without errors.
    """
    max_error, max_cost = _check(max_error, "max_error"), _check(max_cost, "max_cost")
    if max_error is not None and max_cost is not None:
        raise ValueError("give max_error or max_cost, not both")
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")
    if cost == "flops" and dim is None:
        raise ValueError("cost='flops' needs dim (the head size of the inputs)")
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in records:
        key = (r.get("operator"), r.get("budget_name"), r.get("budget_value"))
        groups.setdefault(key, []).append(r)
    causal = any(bool(r.get("causal")) for rs in groups.values() for r in rs)
    points = []
    for (op, bname, bvalue), rs in groups.items():
        errs = [r["head_error"] for r in rs if r.get("head_error") is not None]
        if not errs:
            continue
        timed = [r for r in rs if r.get("time_s") is not None and r.get("exact_time_s")]
        p: dict[str, Any] = {
            "operator": op, "budget_name": bname, "budget_value": bvalue,
            "error": _mean(errs), "records": len(rs),
            "uniform_error": _mean([r["uniform_error"] for r in rs
                                    if r.get("uniform_error") is not None]),
            "time_s": _mean([r["time_s"] for r in timed]),
            "exact_time_s": _mean([r["exact_time_s"] for r in timed]),
            "flops": None, "exact_flops": None,
        }
        if cost == "time":
            p["cost"] = _mean([r["time_s"] / r["exact_time_s"] for r in timed])
        else:
            ratios, fl, ex = [], [], []
            for length, c in sorted({(int(r["length"]), bool(r["causal"])) for r in rs}):
                f = operator_flops(op, bname, bvalue, length, dim, value_dim or dim, c)
                e = operator_flops("exact", None, None, length, dim, value_dim or dim, c)
                if f is None or not e:
                    ratios = []
                    break
                ratios.append(f / e)
                fl.append(f)
                ex.append(e)
            p.update(cost=_mean(ratios), flops=_mean(fl), exact_flops=_mean(ex))
        p["call"] = _call(p, dim, causal, inputs)
        points.append(p)
    if not points:
        raise ValueError("records hold no errors (every operator failed, or no records)")
    front = pareto_front(points)
    # keep identity with `points` entries (the table marks the choice by identity)
    front = [next(p for p in points if p["operator"] == f["operator"]
                  and p["budget_name"] == f["budget_name"]
                  and p["budget_value"] == f["budget_value"]) for f in front]
    useful = [p for p in front if _beats_uniform(p)]
    if max_error is not None:
        feasible = [p for p in useful if p["error"] <= max_error]
        choice = min(feasible, key=lambda p: p["cost"], default=None)
    elif max_cost is not None:
        feasible = [p for p in useful if p["cost"] <= max_cost]
        choice = min(feasible, key=lambda p: p["error"], default=None)
    else:
        feasible, choice = useful, None
    return Recommendation(points, front, feasible, choice, cost, max_error, max_cost)


def recommend_command(args: Any, parser: Any) -> int:
    """``structattn recommend``: run the study on ``--inputs`` (or read ``--records``),
    print the Pareto front and the choice; returns the exit status."""
    import sys
    import time

    from .captured_inputs import captured_groups
    from .records import load_records
    from .runner import run_study
    from .sweep import Sweep

    if args.max_error is not None and args.max_cost is not None:
        parser.error("give --max-error or --max-cost, not both")
    try:
        groups, skipped = captured_groups(args.inputs)
    except ValueError as exc:
        print(f"structattn recommend: {exc}", file=sys.stderr)
        return 2
    dim, value_dim = groups[0]["dim"], groups[0]["value_dim"]
    shapes = ", ".join(f"L={g['length']} x {g['heads']} heads{' causal' if g['causal'] else ''}"
                       for g in groups)
    print(f"inputs: {args.inputs}: {shapes}, d={dim}"
          + (f"; {len(skipped)} batch element(s) skipped (mask)" if skipped else ""))
    start = time.perf_counter()
    if args.records is not None:
        try:
            records = load_records(args.records)
        except (OSError, ValueError, KeyError) as exc:
            parser.error(f"cannot read --records {args.records!r}: {exc}")
    else:
        operators = None if args.operators is None else tuple(
            t.strip() for t in args.operators.split(",") if t.strip())
        try:
            sweep = Sweep(inputs=args.inputs, operators=operators, seeds=args.seeds,
                          repeats=args.repeats, backend=args.backend,
                          timing="all" if args.cost == "time" else "none")
        except (KeyError, ValueError) as exc:
            parser.error(str(exc))
        records = run_study(sweep=sweep, out=args.out,
                            progress=not args.quiet and sys.stderr.isatty())
    try:
        result = recommend(records, args.max_error, args.max_cost, cost=args.cost, dim=dim,
                           value_dim=value_dim, inputs=args.inputs)
    except ValueError as exc:
        print(f"structattn recommend: {exc}", file=sys.stderr)
        return 2
    print(result)
    print(f"\n{len(records)} records ({time.perf_counter() - start:.1f} s); errors against "
          "float64 exact softmax attention on the captured q, k, v"
          + (f"; records: {args.out}" if args.out else ""))
    return 0

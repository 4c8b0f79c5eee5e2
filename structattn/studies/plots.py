"""matplotlib figures of a study summary (Agg backend, PNG files).

* :func:`plot_error_budget` — error vs budget, one panel per method family, uniform's
  error as a dashed line;
* :func:`plot_pareto` — error vs time at one setting, the Pareto front drawn;
* :func:`plot_time_length` — time vs length (log-log) with fitted growth exponents.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .summary import BASELINES, family, growth_exponents

__all__ = ["plot_error_budget", "plot_pareto", "plot_time_length"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _grid(n: int, plt, width: float = 3.4, height: float = 2.8):
    cols = min(4, max(1, n))
    rows_ = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(width * cols, height * rows_),
                             squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _title(setting: Mapping[str, Any]) -> str:
    causal = ", causal" if setting.get("causal") else ""
    return f"{setting.get('inputs')} inputs, L = {setting.get('length')}{causal}"


def plot_error_budget(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Error vs budget per method family for the rows of one setting; returns ``path``."""
    plt = _pyplot()
    fams: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        if r["operator"] not in BASELINES and r["error"] is not None:
            fams.setdefault(family(r["operator"]), []).append(r)
    uniform = next((r["error"] for r in rows if r["operator"] == "uniform"), None)
    fig, axes = _grid(max(1, len(fams)), plt)
    for ax, (fam, frs) in zip(axes, sorted(fams.items()), strict=False):
        for op in dict.fromkeys(r["operator"] for r in frs):
            pts = [r for r in frs if r["operator"] == op]
            if all(_numeric(r["budget_value"]) for r in pts):
                xs = [r["budget_value"] for r in pts]
                ax.plot(xs, [r["error"] for r in pts], "o-", ms=3, label=op)
                ax.set_xscale("log", base=2)
            else:  # no budget: one point at x = 1
                ax.plot([1] * len(pts), [r["error"] for r in pts], "s", label=op)
        if uniform is not None:
            ax.axhline(uniform, color="k", ls="--", lw=1, label="uniform")
        ax.set_yscale("log")
        ax.set_title(fam, fontsize=9)
        ax.set_xlabel("budget", fontsize=8)
        ax.set_ylabel("mean relative error", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    if rows:
        fig.suptitle(f"Error vs budget — {_title(rows[0])}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_pareto(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Error vs time for the rows of one setting, Pareto front as a step line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    pts = [r for r in rows if r["error"] is not None and r["time_s"] is not None]
    fams = sorted({family(r["operator"]) for r in pts})
    cmap = plt.get_cmap("tab20")
    colors = {f: cmap(i % 20) for i, f in enumerate(fams)}
    floor = 1e-4  # exact (and methods exact at a budget) are drawn at this floor
    for f in fams:
        sel = [r for r in pts if family(r["operator"]) == f]
        filled = [r for r in sel if not r["worse_than_uniform"]]
        hollow = [r for r in sel if r["worse_than_uniform"]]
        ax.scatter([1e3 * r["time_s"] for r in filled], [max(r["error"], floor) for r in filled],
                   color=colors[f], s=18, label=f)
        ax.scatter([1e3 * r["time_s"] for r in hollow], [max(r["error"], floor) for r in hollow],
                   facecolors="none", edgecolors=colors[f], s=18)
    front = sorted((r for r in pts if r["pareto"]), key=lambda r: r["time_s"])
    if front:
        ax.step([1e3 * r["time_s"] for r in front], [max(r["error"], floor) for r in front],
                where="post", color="k", lw=1, label="Pareto front")
        for r in front:
            budget = "" if r["budget_value"] is None else f" {r['budget_value']}"
            ax.annotate(f"{r['operator']}{budget}", (1e3 * r["time_s"], max(r["error"], floor)),
                        fontsize=6, xytext=(3, 3), textcoords="offset points")
    uniform = next((r for r in pts if r["operator"] == "uniform"), None)
    if uniform is not None:
        ax.axhline(uniform["error"], color="k", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("time per call (ms, median)")
    ax.set_ylabel("mean relative error (below 1e-4 drawn at 1e-4)")
    if rows:
        ax.set_title(f"Error vs time — {_title(rows[0])}; hollow: not better than uniform",
                     fontsize=9)
    if pts:
        ax.legend(fontsize=6, ncol=2)
    else:
        ax.text(0.5, 0.5, "no timed rows at this setting", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_time_length(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Time vs length (log-log) per family, one line per operator at its middle budget,
    with the fitted growth exponent in the legend; exact attention in every panel."""
    plt = _pyplot()
    fits = {(g["operator"], g["budget_value"], g["causal"]): g["exponent"]
            for g in growth_exponents(rows)}
    chosen: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows:
        if r["time_s"] is None or r["causal"]:
            continue
        chosen.setdefault((r["operator"], r["budget_value"]), []).append(r)
    middle = {}
    for op in dict.fromkeys(k[0] for k in chosen):
        budgets = [k[1] for k in chosen if k[0] == op]
        middle[op] = budgets[len(budgets) // 2]
    fams: dict[str, list[str]] = {}
    for op in middle:
        if op != "exact":
            fams.setdefault(family(op), []).append(op)
    fig, axes = _grid(max(1, len(fams)), plt)
    if not fams:
        axes[0].text(0.5, 0.5, "no timed rows", ha="center", transform=axes[0].transAxes)

    def line(ax, op, style):
        pts = sorted(chosen[(op, middle[op])], key=lambda r: r["length"])
        b = fits.get((op, middle[op], False))
        budget = "" if middle[op] is None else f" {middle[op]}"
        label = f"{op}{budget}" + ("" if b is None else f" (L^{b:.2f})")
        ax.plot([r["length"] for r in pts], [1e3 * r["time_s"] for r in pts], style, ms=3,
                label=label)

    for ax, (fam, ops) in zip(axes, sorted(fams.items()), strict=False):
        for op in ops:
            line(ax, op, "o-")
        if "exact" in middle:
            line(ax, "exact", "k--")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(fam, fontsize=9)
        ax.set_xlabel("L", fontsize=8)
        ax.set_ylabel("time (ms)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    fig.suptitle("Time vs length (median of the timed repeats; fitted exponent)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)

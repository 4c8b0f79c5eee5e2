"""Task study ``de-capacity``: how many dimensions a dual encoder needs for real teacher scores.

Teachers (see :mod:`structattn.studies.ranking_data`): late-interaction MaxSim over real
MiniLM token states (``n = m = 512`` query/passage pairs from the Python language
reference), the full cross-attention MaxSim of the jointly encoded pair (``n = m = 32``:
one encoder pass per pair, 1,024 passes — the cost is why it is a subset), and, as a
sanity check with a known answer, MiniLM's own dual-encoder cosine matrix (rank ``<= 384``).

For every ``d = 1 … min(n, m)``: the relative Frobenius error of the best rank-``d`` DE
(truncated SVD; for scores and for the row-centered "softmax" target), the fraction of
queries whose top-1 document and whose whole top-10 list (in order) the rank-``d`` fit
preserves, and its MRR@10 against the true passages; :func:`~structattn.ranking.de_capacity`
for exact scores and for softmax distributions; and free embeddings learned with the
listwise KL (:func:`~structattn.ranking.fit_free_embeddings`) at a few small ``d``, to see
how much lower the order-preserving dimension is than the SVD's.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..ranking import de_capacity, de_fit_errors, fit_free_embeddings, mrr_at_k
from . import ranking_data as rd
from .tasks import TaskResult, register_task

__all__ = ["CapacityConfig", "run_de_capacity"]


@dataclasses.dataclass(frozen=True)
class CapacityConfig:
    """Sizes of the ``de-capacity`` study."""

    n_maxsim: int = 512
    n_cross: int = 32
    learned_dims: tuple[int, ...] = (2, 8, 32)
    learned_steps: int = 6
    temperature: float = 0.05

    @classmethod
    def quick(cls) -> CapacityConfig:
        return cls(n_maxsim=24, n_cross=4, learned_dims=(2,), learned_steps=2)


def _top10(S: np.ndarray) -> np.ndarray:
    k = min(10, S.shape[-1])
    part = np.argpartition(-S, k - 1, axis=-1)[:, :k]
    order = np.argsort(-np.take_along_axis(S, part, -1), axis=-1, kind="stable")
    return np.take_along_axis(part, order, -1)


class _Agreement:
    """Top-1 and in-order top-10 agreement of a fit with the teacher ``S`` (``O(n m)`` each)."""

    def __init__(self, S: np.ndarray) -> None:
        self.top1 = S.argmax(-1)
        self.top10 = _top10(S)
        self.mask = np.zeros(S.shape, dtype=bool)
        np.put_along_axis(self.mask, self.top10, True, axis=-1)

    def __call__(self, fit: np.ndarray) -> tuple[float, float]:
        top1 = float(np.mean(fit.argmax(-1) == self.top1))
        tv = np.take_along_axis(fit, self.top10, -1)
        rest = np.where(self.mask, -np.inf, fit).max(-1)
        kept = np.all(np.diff(tv, axis=-1) < 0, axis=-1) & (tv[:, -1] > rest)
        return top1, float(np.mean(kept))


def _svd_curve(name: str, S: np.ndarray) -> list[dict[str, Any]]:
    """One record per d: errors, top-k agreement and MRR@10 of the rank-d softmax fit."""
    pos = np.arange(S.shape[0])
    err_s = de_fit_errors(S, target="scores")
    err_p = de_fit_errors(S, target="softmax")
    T = S - S.mean(-1, keepdims=True)
    U, sv, Vh = np.linalg.svd(T, full_matrices=False)
    fit = np.zeros_like(S)
    agreement = _Agreement(S)
    rows = []
    for d in range(1, sv.shape[0] + 1):
        fit += sv[d - 1] * np.outer(U[:, d - 1], Vh[d - 1])
        top1, top10 = agreement(fit)
        rows.append({"teacher": name, "method": "svd", "d": d, "rel_err_scores": err_s[d],
                     "rel_err_softmax": err_p[d], "top1_agree": top1, "top10_agree": top10,
                     "mrr@10": mrr_at_k(fit, positives=pos, k=10)})
    return rows


def _first(rows: list[dict[str, Any]], key: str, ok: Any) -> int | None:
    for r in rows:
        if ok(r[key]):
            return int(r["d"])
    return None


def run_de_capacity(cfg: CapacityConfig, seed: int = 0, *,
                    progress: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Compute the study's records and per-teacher summary facts."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with rd.torch_threads(1):
        queries, passages = rd.query_passage_pairs(max(cfg.n_maxsim, cfg.n_cross))
        hq = rd.encode_texts(queries[: cfg.n_maxsim], progress=progress)
        hp = rd.encode_texts(passages[: cfg.n_maxsim], progress=progress)
        timings["encode_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        teachers = {"maxsim": rd.maxsim_scores(hq, hp)}
        timings["maxsim_s"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        teachers["cross"] = rd.cross_scores(queries[: cfg.n_cross], passages[: cfg.n_cross],
                                            progress=progress)
        timings["cross_s"] = time.perf_counter() - t1
        teachers["minilm-de"] = rd.mean_pooled(hq) @ rd.mean_pooled(hp).T
        records: list[dict[str, Any]] = []
        facts: dict[str, Any] = {}
        t1 = time.perf_counter()
        for name, S in teachers.items():
            pos = np.arange(S.shape[0])
            rows = _svd_curve(name, S)
            records += rows
            facts[name] = {
                "n": S.shape[0], "m": S.shape[1],
                "capacity_scores": de_capacity(S), "capacity_softmax": de_capacity(
                    S, target="softmax"),
                "teacher_mrr@10": mrr_at_k(S, positives=pos, k=10),
                "chance_mrr@10": float(np.sum(1.0 / np.arange(1, min(10, S.shape[1]) + 1))
                                       / S.shape[1]),
                "d_err<=0.1": _first(rows, "rel_err_softmax", lambda v: v <= 0.1),
                "d_err<=0.01": _first(rows, "rel_err_softmax", lambda v: v <= 0.01),
                "d_top1>=0.9": _first(rows, "top1_agree", lambda v: v >= 0.9),
                "d_top1=1": _first(rows, "top1_agree", lambda v: v >= 1.0),
                "d_top10>=0.9": _first(rows, "top10_agree", lambda v: v >= 0.9),
                "d_top10=1": _first(rows, "top10_agree", lambda v: v >= 1.0),
            }
            if name == "minilm-de":
                continue
            for d in cfg.learned_dims:
                if d > min(S.shape):
                    continue
                fit = fit_free_embeddings(S.astype(np.float32), d, loss="listwise_kl",
                                          steps=cfg.learned_steps,
                                          temperature=cfg.temperature, seed=seed)
                student = (fit.phi @ fit.psi.T).astype(np.float64)
                top1, top10 = _Agreement(S)(student)
                records.append({"teacher": name, "method": "learned listwise-KL", "d": d,
                                "top1_agree": top1, "top10_agree": top10,
                                "final_kl": float(fit.losses[-1]),
                                "mrr@10": mrr_at_k(student, positives=pos, k=10)})
        timings["fits_s"] = time.perf_counter() - t1
    facts["timings"] = timings
    return records, facts


_SHOW_D = (1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 511, 512)


def _summary(records: list[dict[str, Any]], facts: dict[str, Any]) -> str:
    lines = ["| teacher | n × m | rank (scores) | rank (softmax) | teacher MRR@10 | chance "
             "| d: err ≤ 10 % | err ≤ 1 % | top-1 ≥ 90 % | top-1 all | top-10 ≥ 90 % "
             "| top-10 all |", "|" + "---|" * 12]
    for name in ("maxsim", "cross", "minilm-de"):
        f = facts[name]
        lines.append(
            f"| {name} | {f['n']} × {f['m']} | {f['capacity_scores']} | "
            f"{f['capacity_softmax']} | {f['teacher_mrr@10']:.3f} | {f['chance_mrr@10']:.4f} | "
            + " | ".join(str(f[k]) for k in ("d_err<=0.1", "d_err<=0.01", "d_top1>=0.9",
                                              "d_top1=1", "d_top10>=0.9", "d_top10=1"))
            + " |")
    lines += ["", "| teacher | method | d | rel. error (softmax target) | top-1 kept "
              "| top-10 kept | MRR@10 |", "|---|---|---|---|---|---|---|"]
    for r in records:
        if r["method"] == "svd" and r["d"] not in _SHOW_D:
            continue
        err = f"{r['rel_err_softmax']:.3g}" if "rel_err_softmax" in r else "—"
        lines.append(f"| {r['teacher']} | {r['method']} | {r['d']} | {err} | "
                     f"{r['top1_agree']:.3f} | {r['top10_agree']:.3f} | {r['mrr@10']:.3f} |")
    return "\n".join(lines)


def _figure(records: list[dict[str, Any]], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    colors = {"maxsim": "C0", "cross": "C1", "minilm-de": "C2"}
    for name, c in colors.items():
        rows = [r for r in records if r["teacher"] == name and r["method"] == "svd"]
        d = [r["d"] for r in rows]
        axes[0].semilogy(d, np.maximum([r["rel_err_scores"] for r in rows], 1e-17), c=c,
                         ls="--", label=f"{name}: scores")
        axes[0].semilogy(d, np.maximum([r["rel_err_softmax"] for r in rows], 1e-17), c=c,
                         label=f"{name}: softmax")
        axes[1].semilogx(d, [r["top1_agree"] for r in rows], c=c, label=f"{name}: SVD")
        axes[2].semilogx(d, [r["top10_agree"] for r in rows], c=c, label=f"{name}: SVD")
        learned = [r for r in records if r["teacher"] == name and r["method"] != "svd"]
        if learned:
            for ax, key in ((axes[1], "top1_agree"), (axes[2], "top10_agree")):
                ax.semilogx([r["d"] for r in learned], [r[key] for r in learned], "o", c=c,
                            ms=4, label=f"{name}: learned (KL)")
    axes[0].set(xlabel="embedding dimension d", ylabel="relative Frobenius error",
                title="best rank-d DE (truncated SVD)")
    axes[1].set(xlabel="d", ylabel="fraction of queries", title="top-1 document preserved")
    axes[2].set(xlabel="d", ylabel="fraction of queries", title="top-10 list preserved (in order)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "de_capacity.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@register_task("de-capacity", default_seeds=(0,),
               description="dual-encoder capacity on real MiniLM teachers (MaxSim, cross-"
                           "attention): best rank-d error, top-1/top-10 kept, exact capacity")
def _de_capacity(*, seeds: tuple[int, ...], quick: bool, out_dir: Path,
                 progress: bool) -> TaskResult:
    cfg = CapacityConfig.quick() if quick else CapacityConfig()
    cpu0, load0 = time.process_time(), os.getloadavg()[0]
    records, facts = run_de_capacity(cfg, seeds[0], progress=progress)
    cpu_s = time.process_time() - cpu0
    figure = _figure(records, Path(out_dir))
    return TaskResult(records=records, summary=_summary(records, facts), figures=[figure],
                      metadata={"config": dataclasses.asdict(cfg), "cpu_s": cpu_s,
                                "load_average_1min": [load0, os.getloadavg()[0]], "facts": facts,
                                "text": "pydoc_data.topics (Python language reference)"})

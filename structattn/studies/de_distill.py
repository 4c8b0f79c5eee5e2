"""Task study ``de-distill``: one-hot training vs distillation for dual-encoder students.

Menon et al. (ICML 2022) argue that dual encoders trained on one-hot labels overfit, and
that distilling a cross-interaction teacher's *scores* generalizes better.  Here, on real
text (query = first clause of a sentence of the Python language reference, relevant
passage = its rest; :mod:`structattn.studies.ranking_data`):

* teacher: late-interaction MaxSim over MiniLM token states, logits ``T / 0.05``;
* students (dimension ``d = 64``), two towers each:
  ``free`` — bag-of-WordPiece embeddings learned from scratch (mean of a token table per
  tower); ``proj`` — a trainable linear map ``384 → d`` per tower on frozen MiniLM
  mean-pooled sentence embeddings;
* losses on the *train* queries, each query's list = all train passages:
  one-hot softmax CE on the true passage, Margin-MSE against the teacher's margins
  (positive = the true passage), listwise KL to the teacher's softmax;
* MRR@10 and nDCG@10 against the true passages, each query ranking *all* ``m`` passages
  of the corpus, on train queries and on held-out queries (whose passages were never
  seen in training); 3 seeds (split and initialisation).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..ranking import listwise_kl, margin_mse, mrr_at_k, ndcg_at_k, softmax_ce
from . import ranking_data as rd
from .tasks import TaskResult, register_task

__all__ = ["DistillConfig", "run_de_distill"]

LOSSES = ("one-hot CE", "margin-MSE", "listwise KL")
STUDENTS = ("free", "proj")


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Sizes and optimisation settings of the ``de-distill`` study."""

    n_pairs: int | None = None  # all unique pairs of the corpus
    train_fraction: float = 2 / 3
    dim: int = 64
    steps: int = 200
    lr_free: float = 0.05
    lr_proj: float = 0.01
    teacher_temperature: float = 0.05

    @classmethod
    def quick(cls) -> DistillConfig:
        return cls(n_pairs=40, steps=5)


class _Student:
    """Two-tower DE: a bag-of-token table per tower, or a linear map of MiniLM embeddings."""

    def __init__(self, kind: str, data: dict[str, Any], dim: int, seed: int) -> None:
        import torch

        g = torch.Generator().manual_seed(seed)
        self.kind = kind
        if kind == "free":
            vocab = data["vocab"]
            self.params = [torch.nn.Parameter(torch.randn(vocab, dim, generator=g,
                                                          dtype=torch.float32) / dim**0.5)
                           for _ in range(2)]
        else:
            w = torch.randn(384, dim, generator=g, dtype=torch.float32) / dim**0.5
            self.params = [torch.nn.Parameter(w.clone()), torch.nn.Parameter(w.clone())]
        self.data = data

    def embed(self, tower: int, idx: Any) -> Any:
        import torch

        key = ("q", "p")[tower]
        if self.kind == "proj":
            return self.data[f"x_{key}"][idx] @ self.params[tower]
        flat, offsets = self.data[f"bag_{key}"]
        out = torch.nn.functional.embedding_bag(flat, self.params[tower], offsets, mode="mean")
        return out[idx]

    def scores(self, q_idx: Any, p_idx: Any) -> Any:
        return self.embed(0, q_idx) @ self.embed(1, p_idx).T


def _bags(texts: list[str], remap: dict[int, int]) -> tuple[Any, Any]:
    import torch

    ids = [np.array([remap[t] for t in rd.body_ids(x)], dtype=np.int64) for x in texts]
    offsets = np.cumsum([0] + [len(i) for i in ids])[:-1]
    return torch.as_tensor(np.concatenate(ids)), torch.as_tensor(offsets)


def _prepare(cfg: DistillConfig, progress: bool) -> dict[str, Any]:
    import torch

    queries, passages = rd.query_passage_pairs(cfg.n_pairs)
    hq = rd.encode_texts(queries, progress=progress)
    hp = rd.encode_texts(passages, progress=progress)
    teacher = rd.maxsim_scores(hq, hp)
    eq, ep = rd.mean_pooled(hq), rd.mean_pooled(hp)
    tokens = sorted({int(t) for x in queries + passages for t in rd.body_ids(x)})
    remap = {t: i for i, t in enumerate(tokens)}
    return {"queries": queries, "passages": passages, "teacher": teacher,
            "minilm": eq @ ep.T, "x_q": torch.as_tensor(eq, dtype=torch.float32),
            "x_p": torch.as_tensor(ep, dtype=torch.float32),
            "bag_q": _bags(queries, remap), "bag_p": _bags(passages, remap),
            "vocab": len(tokens)}


def _evaluate(S: np.ndarray, q_idx: np.ndarray) -> dict[str, float]:
    return {"mrr@10": mrr_at_k(S[q_idx], positives=q_idx, k=10),
            "ndcg@10": ndcg_at_k(S[q_idx], positives=q_idx, k=10)}


def _train(student: _Student, loss: str, train: np.ndarray, teacher: Any, cfg: DistillConfig,
           lr: float) -> list[float]:
    import torch

    opt = torch.optim.Adam(student.params, lr=lr)
    q = torch.as_tensor(train)
    pos = np.arange(len(train))
    t_logits = teacher[np.ix_(train, train)] / cfg.teacher_temperature
    t_logits = torch.as_tensor(t_logits, dtype=torch.float32)
    history = []
    for _ in range(cfg.steps):
        opt.zero_grad()
        s = student.scores(q, q)
        if loss == "one-hot CE":
            value = softmax_ce(s, positive_index=pos)
        elif loss == "margin-MSE":
            value = margin_mse(s, t_logits, positive_index=pos)
        else:
            value = listwise_kl(s, t_logits)
        value.backward()
        opt.step()
        history.append(float(value.detach()))
    return history


def run_de_distill(cfg: DistillConfig, seeds: tuple[int, ...], *,
                   progress: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train every (student, loss, seed) and evaluate it; returns records and timings."""
    import torch

    t0 = time.perf_counter()
    records: list[dict[str, Any]] = []
    with rd.torch_threads(1):
        data = _prepare(cfg, progress)
        prep_s = time.perf_counter() - t0
        n = len(data["queries"])
        jobs = [(s, k, loss) for s in seeds for k in STUDENTS for loss in LOSSES]
        if progress:
            from tqdm.auto import tqdm

            jobs = tqdm(jobs, desc="de-distill runs", leave=False)
        splits: dict[int, dict[str, np.ndarray]] = {}
        for seed in seeds:
            perm = np.random.default_rng(seed).permutation(n)
            n_train = round(cfg.train_fraction * n)
            splits[seed] = {"train": np.sort(perm[:n_train]), "test": np.sort(perm[n_train:])}
            for name, S in (("teacher (MaxSim)", data["teacher"]),
                            ("MiniLM DE (untrained)", data["minilm"])):
                for split, idx in splits[seed].items():
                    records.append({"seed": seed, "student": name, "loss": "—", "split": split,
                                    **_evaluate(S, idx)})
            chance = float(np.sum(1.0 / np.arange(1, 11)) / n)
            for split in ("train", "test"):
                records.append({"seed": seed, "student": "chance", "loss": "—", "split": split,
                                "mrr@10": chance, "ndcg@10": float("nan")})
        for seed, kind, loss in jobs:
            student = _Student(kind, data, cfg.dim, seed)
            lr = cfg.lr_free if kind == "free" else cfg.lr_proj
            hist = _train(student, loss, splits[seed]["train"], data["teacher"], cfg, lr)
            with torch.no_grad():
                S = student.scores(torch.arange(n), torch.arange(n)).double().numpy()
            for split, idx in splits[seed].items():
                records.append({"seed": seed, "student": kind, "loss": loss, "split": split,
                                "final_loss": hist[-1], **_evaluate(S, idx)})
    return records, {"prepare_s": prep_s, "total_s": time.perf_counter() - t0, "n_pairs": n,
                     "vocab": data["vocab"]}


def _cell(rows: list[dict[str, Any]], key: str) -> str:
    v = np.array([r[key] for r in rows], dtype=float)
    if np.all(np.isnan(v)):
        return "—"
    return f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}"


def _summary(records: list[dict[str, Any]]) -> str:
    lines = ["| student | loss | train MRR@10 | test MRR@10 | gap | train nDCG@10 "
             "| test nDCG@10 |", "|---|---|---|---|---|---|---|"]
    keys = list(dict.fromkeys((r["student"], r["loss"]) for r in records))
    for student, loss in keys:
        sel = {s: [r for r in records if r["student"] == student and r["loss"] == loss
                   and r["split"] == s] for s in ("train", "test")}
        gap = np.array([a["mrr@10"] - b["mrr@10"] for a, b in zip(sel["train"], sel["test"],
                                                                  strict=True)])
        lines.append(f"| {student} | {loss} | {_cell(sel['train'], 'mrr@10')} | "
                     f"{_cell(sel['test'], 'mrr@10')} | {gap.mean():+.3f} | "
                     f"{_cell(sel['train'], 'ndcg@10')} | {_cell(sel['test'], 'ndcg@10')} |")
    return "\n".join(lines)


def _figure(records: list[dict[str, Any]], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    refs = {name: np.mean([r["mrr@10"] for r in records if r["student"] == name
                           and r["split"] == "test"])
            for name in ("teacher (MaxSim)", "MiniLM DE (untrained)", "chance")}
    for ax, kind in zip(axes, STUDENTS, strict=True):
        for j, split in enumerate(("train", "test")):
            vals = [[r["mrr@10"] for r in records if r["student"] == kind and r["loss"] == loss
                     and r["split"] == split] for loss in LOSSES]
            ax.bar(np.arange(len(LOSSES)) + 0.4 * j - 0.2, [np.mean(v) for v in vals],
                   yerr=[np.std(v) for v in vals], width=0.4, label=f"{split} queries")
        for (name, v), ls in zip(refs.items(), (":", "--", "-."), strict=True):
            ax.axhline(v, color="k", ls=ls, lw=1, label=f"{name}, test")
        ax.set_xticks(np.arange(len(LOSSES)), LOSSES)
        ax.set_title(f"student: {kind}")
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("MRR@10 (mean ± std, 3 seeds)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "de_distill.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@register_task("de-distill", default_seeds=(0, 1, 2),
               description="dual-encoder students trained with one-hot CE vs margin-MSE vs "
                           "listwise KL from a MiniLM MaxSim teacher: MRR@10 train vs test")
def _de_distill(*, seeds: tuple[int, ...], quick: bool, out_dir: Path,
                progress: bool) -> TaskResult:
    cfg = DistillConfig.quick() if quick else DistillConfig()
    cpu0, load0 = time.process_time(), os.getloadavg()[0]
    records, timing = run_de_distill(cfg, tuple(seeds), progress=progress)
    cpu_s = time.process_time() - cpu0
    figure = _figure(records, Path(out_dir))
    return TaskResult(records=records, summary=_summary(records), figures=[figure],
                      metadata={"config": dataclasses.asdict(cfg), "cpu_s": cpu_s,
                                "load_average_1min": [load0, os.getloadavg()[0]], **timing,
                                "text": "pydoc_data.topics (Python language reference)"})

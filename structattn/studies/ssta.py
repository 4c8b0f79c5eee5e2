"""Task study ``ssta-digits``: head-level attention distillation from a supervised teacher
and a self-supervised teaching assistant (SSTA, Wu et al., ICML 2022) on real digits.

Per seed, on scikit-learn's bundled digits (8×8, 2×2 patches → CLS + 4×4 grid):

1. teacher: TinyViT (dim 32, depth 2, 4 heads), supervised cross-entropy;
2. teaching assistant (TA): the same architecture trained *without labels* by masked-patch
   reconstruction (half the patches replaced by the mask token, a linear decoder predicts
   their pixels, MSE on the masked patches);
3. head importance (:func:`structattn.analysis.head_importance`, ``"gradient"``): the
   teacher on its cross-entropy, the TA on its own reconstruction loss (4 fixed random
   masks, averaged); the most important head of the last layer of each is selected;
4. student: a smaller TinyViT (dim 16, depth 2, 2 heads) in four arms — cross-entropy
   only, + teacher head, + TA head, + both — with ``L = CE + λ·L_att`` and
   :func:`structattn.analysis.ssta_attention_loss` on the student's last layer
   (``"dedicated"``: student head 0 ← teacher head, head 1 ← TA head; forward KL).

Reported: test accuracy mean ± std over seeds per arm, and per model and layer the mean
attention distance and the mean row entropy of the test-set maps (uniform-attention
baselines printed next to them).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..analysis import (
    head_importance,
    map_entropy,
    mean_attention_distance,
    patch_coordinates,
    select_heads,
    ssta_attention_loss,
)
from ..layers.tiny_vit import TinyViT
from ._vit_train import accuracy, mean_std, one_thread, train
from .digits import DIGITS_CLASSES, load_digits_split
from .tasks import TaskResult, register_task

__all__ = ["ARMS", "MaskedPatchModel", "attention_statistics"]

#: Student arms: (name, use teacher head, use TA head).
ARMS = (("ce", False, False), ("ce+teacher", True, False), ("ce+ta", False, True),
        ("ce+teacher+ta", True, True))
_GRID = (4, 4)
_MASK_RATIO = 0.5
_LAMBDA = 1.0


class MaskedPatchModel(nn.Module):
    """A TinyViT encoder with a linear pixel decoder for masked-patch reconstruction."""

    def __init__(self, vit: TinyViT) -> None:
        super().__init__()
        self.vit = vit
        self.decoder = nn.Linear(vit.dim, vit.channels * vit.patch_size**2)

    def loss(self, x: torch.Tensor, patch_mask: torch.Tensor,
             head_gate: torch.Tensor | None = None) -> torch.Tensor:
        """Per-example MSE on the masked patches' pixels, shape ``(B,)``."""
        tokens = self.vit.forward_tokens(x, patch_mask=patch_mask, head_gate=head_gate)
        pred = self.decoder(tokens[:, self.vit.num_prefix_tokens:])
        err = ((pred - self.vit.patchify(x)) ** 2).mean(-1)
        m = patch_mask.to(err.dtype)
        return (err * m).sum(-1) / m.sum(-1).clamp_min(1.0)


def _random_masks(n: int, num_patches: int, gen: torch.Generator) -> torch.Tensor:
    k = round(_MASK_RATIO * num_patches)
    order = torch.rand(n, num_patches, generator=gen).argsort(dim=1)
    return order < k  # exactly k masked patches per image


@torch.no_grad()
def attention_statistics(model: TinyViT, x: torch.Tensor) -> list[dict[str, float]]:
    """Per layer: mean attention distance and mean row entropy (over images and heads)."""
    out = []
    for layer, P in enumerate(model.attention_maps(x)):
        P = P.double()
        out.append({"layer": layer,
                    "distance": float(mean_attention_distance(
                        P, grid=model.grid_shape,
                        num_prefix_tokens=model.num_prefix_tokens).mean()),
                    "entropy": float(map_entropy(P).mean())})
    return out


def _ce_per_example(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out, y, reduction="none")


def _vit(dim: int, heads: int, seed: int) -> TinyViT:
    torch.manual_seed(seed)
    return TinyViT(8, 2, dim, 2, heads, DIGITS_CLASSES, pool="cls")


def _run_seed(seed: int, quick: bool, progress: bool) -> tuple[list[dict[str, Any]], dict]:
    data = load_digits_split(seed)
    x_tr, y_tr, x_te, y_te = data.x_train, data.y_train, data.x_test, data.y_test
    if quick:
        x_tr, y_tr, x_te, y_te = x_tr[:256], y_tr[:256], x_te[:128], y_te[:128]
    epochs_t, epochs_s = (2, 2) if quick else (10, 9)
    records: list[dict[str, Any]] = []
    probe = x_tr[:512]

    # 1. supervised teacher
    teacher = _vit(32, 4, seed)
    log_t = train(teacher, x_tr, lambda m, xb, idx: nn.functional.cross_entropy(
        m(xb), y_tr[idx]), epochs=epochs_t, seed=seed, progress=progress,
        desc=f"teacher {seed}")
    # 2. self-supervised teaching assistant (no labels)
    ta = MaskedPatchModel(_vit(32, 4, seed + 1000))
    gen = torch.Generator().manual_seed(seed)

    def mpr(m: MaskedPatchModel, xb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return m.loss(xb, _random_masks(xb.shape[0], m.vit.num_patches, gen)).mean()

    log_a = train(ta, x_tr, mpr, epochs=epochs_t, seed=seed, progress=progress,
                  desc=f"assistant {seed}")
    # 3. head importance and selection (last layer)
    imp_t = head_importance(teacher, (probe, y_tr[:512]), _ce_per_example, num_layers=2,
                            num_heads=4)
    imp_a = torch.zeros(2, 4, dtype=torch.float64)
    mask_gen = torch.Generator().manual_seed(10_000 + seed)
    for _ in range(4):
        fixed = _random_masks(1, ta.vit.num_patches, mask_gen)[0]

        def ta_forward(x: torch.Tensor, head_gate: torch.Tensor,
                       fixed: torch.Tensor = fixed) -> torch.Tensor:
            return ta.loss(x, fixed.expand(x.shape[0], -1), head_gate=head_gate)

        imp_a += head_importance(ta_forward, probe, lambda out: out, num_layers=2,
                                 num_heads=4) / 4
    h_t, h_a = int(select_heads(imp_t)[0]), int(select_heads(imp_a)[0])
    with torch.no_grad():
        maps_t = teacher(x_tr, return_attention=True)[1][-1][:, h_t:h_t + 1]
        maps_a = ta.vit(x_tr, return_attention=True)[1][-1][:, h_a:h_a + 1]
    for name, model, log in (("teacher", teacher, log_t), ("assistant", ta.vit, log_a)):
        rec = {"kind": "model", "model": name, "seed": seed,
               "train_seconds": log["seconds"], "train_cpu_seconds": log["cpu_seconds"],
               "final_train_loss": log["losses"][-1],
               "test_accuracy": accuracy(model, x_te, y_te) if name == "teacher" else None,
               "importance": (imp_t if name == "teacher" else imp_a).tolist(),
               "selected_head": h_t if name == "teacher" else h_a,
               "layers": attention_statistics(model, x_te)}
        records.append(rec)
    # 4. student arms
    for arm, use_t, use_a in ARMS:
        student = _vit(16, 2, seed + 2000)

        def student_loss(m: TinyViT, xb: torch.Tensor, idx: torch.Tensor,
                         use_t: bool = use_t, use_a: bool = use_a) -> torch.Tensor:
            if not (use_t or use_a):
                return nn.functional.cross_entropy(m(xb), y_tr[idx])
            logits, maps = m(xb, return_attention=True)
            att = ssta_attention_loss(maps[-1], maps_t[idx] if use_t else None,
                                      maps_a[idx] if use_a else None, teacher_head=0,
                                      assistant_head=0, student_heads=(0, 1),
                                      assignment="dedicated", direction="forward")
            return nn.functional.cross_entropy(logits, y_tr[idx]) + _LAMBDA * att

        log = train(student, x_tr, student_loss, epochs=epochs_s, seed=seed,
                    progress=progress, desc=f"student {arm} {seed}")
        records.append({"kind": "student", "model": arm, "seed": seed,
                        "train_seconds": log["seconds"],
                        "train_cpu_seconds": log["cpu_seconds"],
                        "final_train_loss": log["losses"][-1],
                        "test_accuracy": accuracy(student, x_te, y_te),
                        "layers": attention_statistics(student, x_te)})
    chance = float(np.bincount(y_te.numpy()).max() / len(y_te))
    return records, {"chance": chance, "epochs_teacher": epochs_t,
                     "epochs_student": epochs_s}


def _figure(records: list[dict[str, Any]], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    names = [a[0] for a in ARMS]
    accs = [[r["test_accuracy"] for r in records if r["model"] == n] for n in names]
    axes[0].bar(range(len(names)), [np.mean(a) for a in accs],
                yerr=[np.std(a, ddof=1) if len(a) > 1 else 0 for a in accs], capsize=4,
                color=[f"C{i}" for i in range(len(names))])
    for i, a in enumerate(accs):
        axes[0].scatter([i] * len(a), a, color="k", s=8, zorder=3)
    lo = min(min(a) for a in accs)
    axes[0].set_ylim(max(0.0, lo - 0.05), 1.0)
    axes[0].set_xticks(range(len(names)), names, rotation=15)
    axes[0].set_ylabel("student test accuracy")
    axes[0].set_title("SSTA arms (mean ± std over seeds)")
    for ax, key in ((axes[1], "distance"), (axes[2], "entropy")):
        for i, n in enumerate(["teacher", "assistant", *names]):
            rows = [r for r in records if r["model"] == n]
            vals = np.array([[lay[key] for lay in r["layers"]] for r in rows])
            ax.plot(range(vals.shape[1]), vals.mean(0), marker="o", label=n,
                    color=f"C{i + 4}" if i < 2 else f"C{i - 2}",
                    linestyle="--" if i < 2 else "-")
        ax.set_xlabel("layer")
        ax.set_xticks(range(vals.shape[1]))
        ax.set_title(f"mean attention {key} (test maps)")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "ssta_digits.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _summary(records: list[dict[str, Any]], chance: float) -> str:
    L = 1 + _GRID[0] * _GRID[1]
    pts = patch_coordinates(_GRID)
    uniform_d = float(np.mean(np.linalg.norm(pts[:, None] - pts[None], axis=-1)))
    lines = ["| student arm | test accuracy (mean ± std) | train CPU s | train wall s |",
             "|---|---|---|---|"]
    for arm, _, _ in ARMS:
        rows = [r for r in records if r["model"] == arm]
        lines.append(f"| {arm} | {mean_std([r['test_accuracy'] for r in rows])} | "
                     f"{np.mean([r['train_cpu_seconds'] for r in rows]):.1f} | "
                     f"{np.mean([r['train_seconds'] for r in rows]):.1f} |")
    teach = [r for r in records if r["model"] == "teacher"]
    lines.append(f"| (teacher, dim 32) | {mean_std([r['test_accuracy'] for r in teach])} | "
                 f"{np.mean([r['train_cpu_seconds'] for r in teach]):.1f} | "
                 f"{np.mean([r['train_seconds'] for r in teach]):.1f} |")
    lines.append(f"\nChance accuracy: {chance:.4f}.  Selected heads (teacher, TA) per seed: "
                 + ", ".join(f"{r['seed']}: ({r['selected_head']}, {a['selected_head']})"
                             for r, a in zip(teach, [r for r in records
                                                     if r["model"] == "assistant"],
                                             strict=True)) + ".\n")
    lines += ["| model | layer | attention distance | row entropy (nats) |", "|---|---|---|---|"]
    for name in ["teacher", "assistant", *[a[0] for a in ARMS]]:
        rows = [r for r in records if r["model"] == name]
        for layer in range(len(rows[0]["layers"])):
            d = np.mean([r["layers"][layer]["distance"] for r in rows])
            h = np.mean([r["layers"][layer]["entropy"] for r in rows])
            lines.append(f"| {name} | {layer} | {d:.4f} | {h:.4f} |")
    lines.append(f"| uniform attention | - | {uniform_d:.4f} | {np.log(L):.4f} |")
    return "\n".join(lines)


@register_task("ssta-digits", default_seeds=(0, 1, 2, 3, 4),
               description="SSTA head-level attention distillation (supervised teacher + "
                           "self-supervised TA -> small student) on real digits")
def _ssta_digits(*, seeds: tuple[int, ...], quick: bool, out_dir: Path,
                 progress: bool) -> TaskResult:
    start, cpu = time.perf_counter(), time.process_time()
    records: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    with one_thread():
        for seed in seeds:
            recs, meta = _run_seed(seed, quick, progress)
            records += recs
    return TaskResult(
        records=records, summary=_summary(records, meta["chance"]),
        figures=[_figure(records, out_dir)],
        metadata={**meta, "lambda_att": _LAMBDA, "mask_ratio": _MASK_RATIO, "threads": 1,
                  "teacher": {"dim": 32, "depth": 2, "heads": 4},
                  "student": {"dim": 16, "depth": 2, "heads": 2},
                  "assignment": "dedicated", "direction": "forward", "layer": "last",
                  "importance": "gradient", "wall_s": time.perf_counter() - start,
                  "cpu_s": time.process_time() - cpu},
    )

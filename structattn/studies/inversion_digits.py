"""Task study ``inversion-digits``: what does an approximate attention keep of a class?

Plug-In Inversion (:mod:`structattn.studies.inversion`) on real digits, in miniature:

* The classifiers take scikit-learn's 8×8 digits at their own size (:data:`NATIVE` = 8,
  no upsampling), and the authors' growth schedule is scaled down as the spec suggests:
  ``step = 8 // 8 = 1``, canvases 2, 3, …, 8 (7 stages, as for 224), growth border
  ``pad = step // 2 = 0``, jitter ``J = 8 // 7 = 1`` (:data:`JITTER`, the driver's
  default ``N // 7``), colour shift ``mu ~ U(-1, 1)``, ``log sigma ~ U(-1, 1)``,
  ensemble 8, Adam ``betas (0.5, 0.99)``, cosine to 0.  The updates per stage are
  reduced (:data:`STEPS` = 50 instead of 400), with the learning rate raised in
  proportion (:data:`LR` = 0.08), so that a stage can move a pixel as far as the
  authors' stage can (``Σ lr_i`` is the same).
* The inverted classifiers are trained on the inversion's own views
  (:data:`TRAIN_AUGMENT`): every training image gets its own jitter (``U{-1..1}²``
  cyclic roll) and colour shift (:func:`~structattn.studies.inversion.augment_batch`),
  so that they are (nearly) invariant to what the inversion does to its canvas.
  Trained on clean digits only, the TinyViT misses the sanity target under the
  spec's jitter (mean target probability 0.79, min 0.005; see ``docs/inversion.rst``).
* Classifiers: an MLP and a TinyViT (2×2 patches → a 4×4 grid, mean pooling) trained
  with exact softmax attention; the same TinyViT with Performer (FAVOR+, 16 features)
  or MRA-2 attention *swapped in* after training (no retraining).
* For each of the four models the ten classes are inverted (seed ``s``), plus the exact
  models (MLP, softmax TinyViT) with the seeds ``s + 1, …, s + INVERSION_SEEDS - 1``
  (:data:`INVERSION_SEEDS` = 3): the sanity target of the spec (target probability
  ``>= 0.99`` for every class) is checked at three inversion seeds of the same trained
  model, and ``s + 1`` is the seed-to-seed baseline of similarity.
* Reported per model: the target probability the inversion reaches under the inverted
  model (of the inverted image itself — the final canvas, no augmentation — checked
  against :data:`TARGET`), its mean and minimum over the cyclic rolls of the jitter (a
  diagnostic: with 2×2 patches the unrolled image is the least sampled patch phase of
  the inversion), the class a *judge* assigns to it (a small CNN trained with another
  seed: a different architecture and initialisation), the target probability of the
  exact-attention ViT for the approximate-attention inversions (does the exact model
  still see the class?), the pixel correlation with the exact-attention inversion of
  the same class and seed (which shares the initial canvas and every augmentation
  draw), with that of another seed, and with the class-mean digit;
  baselines: the class-mean digit (its target probability) and U[0, 1) noise (the mean
  of its largest class probability) under every model, the judge's test accuracy,
  correlations between inversions of *different* classes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..attention import FeatureMapAttention, SoftmaxAttention
from ..features import PositiveRandomFeatures
from ..layers.tiny_vit import TinyViT
from ..mra import MRAAttention
from ._vit_train import accuracy, one_thread, train
from .digits import DIGITS_CLASSES, load_digits_split
from .inversion import augment_batch, invert_class
from .tasks import TaskResult, register_task

__all__ = ["ENSEMBLE", "EPOCHS", "INVERSION_SEEDS", "JITTER", "LR", "MODELS", "NATIVE", "STEPS",
           "TARGET", "TRAIN_AUGMENT", "make_judge", "make_mlp", "make_vit"]

#: Classifier input side: the 8×8 digits at their own size (growth schedule 2, 3, …, 8).
NATIVE = 8
#: Adam updates per growth stage in the full run (the authors use 400 at 224×224).
STEPS = 50
#: Learning rate: the authors' 0.01 × 400 / STEPS, the same total step length per stage.
LR = 0.01 * 400 / STEPS
#: Augmented copies per update (the spec's default ensemble).
ENSEMBLE = 8
#: Jitter limit in pixels: the driver's default ``N // 7`` (32 at N = 224), 1 here.
JITTER = NATIVE // 7
#: Probability that a training image of the MLP and the TinyViT gets the inversion's
#: jitter and colour shift (the judge trains on clean digits).
TRAIN_AUGMENT = 1.0
#: Training epochs (full run) and AdamW peak learning rates of the three classifiers.
EPOCHS = {"mlp": 120, "vit": 160, "judge": 6}
_TRAIN_LR = {"mlp": 3e-3, "vit": 3e-3, "judge": 3e-3}
#: The inverted models, in report order.
MODELS = ("mlp", "vit-softmax", "vit-performer", "vit-mra")
#: Inversion seeds of the exact models per study seed ``s``: ``s, s + 1, s + 2``.
INVERSION_SEEDS = 3
#: The spec's sanity target: the target probability of every class (exact models).
TARGET = 0.99

_DIM, _DEPTH, _HEADS, _PATCH = 32, 2, 4, 2


def make_mlp(seed: int) -> nn.Module:
    """MLP ``64 → 128 → 10`` (GELU) on 8×8 images."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(NATIVE * NATIVE, 128), nn.GELU(),
                         nn.Linear(128, DIGITS_CLASSES))


def make_vit(seed: int) -> TinyViT:
    """TinyViT: 8×8 input, 2×2 patches (16 tokens), dim 32, depth 2, 4 heads, mean pool."""
    torch.manual_seed(seed)
    return TinyViT(NATIVE, _PATCH, _DIM, _DEPTH, _HEADS, DIGITS_CLASSES, pool="mean")


def make_judge(seed: int) -> nn.Module:
    """The independent judge: a small CNN (three 3×3 convolutions, max pooling)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(128, DIGITS_CLASSES),
    )


def _attention(name: str, seed: int) -> Any:
    if name == "vit-softmax":
        return SoftmaxAttention()
    if name == "vit-performer":
        return FeatureMapAttention(PositiveRandomFeatures(_DIM // _HEADS, 16, seed=seed))
    if name == "vit-mra":
        return MRAAttention(block_size=4, blocks_per_row=2)
    raise ValueError(f"no attention for model {name!r}")


class _Swapped(nn.Module):
    """The trained TinyViT with another attention (shared weights, swapped per call)."""

    def __init__(self, vit: TinyViT, attention: Any) -> None:
        super().__init__()
        self.vit, self.op = vit, attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.vit.set_attention(self.op)
        return self.vit(x)


def _fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, seed: int,
         lr: float, progress: bool, desc: str, augment: float = 0.0) -> dict[str, Any]:
    """Train with cross-entropy; ``augment`` > 0: the inversion's views with that chance."""
    def ce(m: nn.Module, xb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(m(xb), y[idx])

    def views(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return augment_batch(xb, jitter=JITTER, color_shift=(1.0, 1.0),
                             probability=augment, rng=gen)

    return train(model, x, ce, epochs=epochs, seed=seed, lr=lr, progress=progress, desc=desc,
                 augment=views if augment > 0 else None)


@torch.no_grad()
def _probs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.softmax(model(x), dim=-1)


def _corr(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Pixel Pearson correlation of matching images ``(n, ...)`` (NaN for constant)."""
    a = a.reshape(a.shape[0], -1).double()
    b = b.reshape(b.shape[0], -1).double()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    den = a.norm(dim=1) * b.norm(dim=1)
    return (((a * b).sum(1)) / den).numpy()


def _figure(images: dict[str, torch.Tensor], means: torch.Tensor, out_dir: Path,
            seed: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("class mean", means), *((k, v) for k, v in images.items())]
    fig, axes = plt.subplots(len(rows), DIGITS_CLASSES,
                             figsize=(DIGITS_CLASSES * 0.9, len(rows) * 0.95))
    for r, (label, imgs) in enumerate(rows):
        for c in range(DIGITS_CLASSES):
            ax = axes[r, c]
            ax.imshow(imgs[c, 0].numpy(), cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(str(c), fontsize=9)
            if c == 0:
                ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"Plug-In Inversion of digits classifiers (seed {seed})", fontsize=9)
    fig.tight_layout()
    path = out_dir / f"inversion_digits_seed{seed}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _extra_labels() -> list[tuple[str, str, int]]:
    """``(label, model, seed offset)`` of the exact models' runs at the other seeds."""
    return [(f"{name} (seed+{k})", name, k) for k in range(1, INVERSION_SEEDS)
            for name in ("mlp", "vit-softmax")]


def _target_lines(records: list[dict[str, Any]]) -> list[str]:
    """The sanity target over the exact models' runs (every class, every seed)."""
    lines = []
    for name in ("mlp", "vit-softmax"):
        rows = [r for r in records if r["model"] == name
                or r["model"].startswith(f"{name} (seed+")]
        if not rows:
            continue
        miss = [r for r in rows if r["p_target"] < TARGET]
        worst = min(rows, key=lambda r: r["p_target"])
        seeds = sorted({r["inversion_seed"] for r in rows})
        several = len({r["seed"] for r in rows}) > 1
        text = ", ".join((f"study seed {r['seed']} " if several else "")
                         + f"class {r['class']} seed {r['inversion_seed']}: {r['p_target']:.3f}"
                         for r in miss)
        lines.append(f"- {name}: target p >= {TARGET} met for {len(rows) - len(miss)} of "
                     f"{len(rows)} (inversion seeds {seeds}); min {worst['p_target']:.4f}"
                     + (f"; misses: {text}" if miss else ""))
    return lines


def _summary(records: list[dict[str, Any]], base: list[dict[str, Any]]) -> str:
    labels = [*MODELS, *(label for label, _, _ in _extra_labels())]
    lines = ["| model | test acc. | p(target), own model: mean / min | p(target), exact ViT | "
             "judge agrees | judge p(target) | corr. with exact inversion | "
             "corr. with exact inversion, other seed | corr. with class mean |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in labels:
        rows = [r for r in records if r["model"] == name]
        if not rows:
            continue

        def m(key: str, rows: list[dict[str, Any]] = rows) -> str:
            vals = [r[key] for r in rows if r.get(key) is not None]
            return f"{np.mean(vals):.3f}" if vals else "–"

        exact_vit = m("p_target_under_exact_vit") if name.startswith("vit") else "–"
        lines.append(f"| {name} | {m('test_accuracy')} | {m('p_target')} / "
                     f"{min(r['p_target'] for r in rows):.3f} | {exact_vit} | "
                     f"{m('judge_correct')} | "
                     f"{m('judge_p_target')} | {m('corr_exact')} | {m('corr_exact_other_seed')} | "
                     f"{m('corr_class_mean')} |")
    lines += ["", f"Sanity target (spec §6: the inverted image's target probability under "
              f"the inverted model >= {TARGET} for every class):", "", *_target_lines(records)]
    for key, title in (("p_target", "Target probability under the inverted model"),
                       ("p_target_roll_min", f"Diagnostic: its minimum over the jitter's "
                                             f"rolls (dy, dx) in {{-{JITTER}..{JITTER}}}^2")):
        lines += ["", f"{title}, per class:", "",
                  "| model | " + " | ".join(str(c) for c in range(DIGITS_CLASSES)) + " |",
                  "|---|" + "---|" * DIGITS_CLASSES]
        for name in labels:
            by_class = {r["class"]: r[key] for r in records if r["model"] == name}
            if by_class:
                lines.append(f"| {name} | " + " | ".join(f"{by_class[c]:.3f}" for c in
                                                         sorted(by_class)) + " |")
    lines += ["", "Baselines (mean over classes):", "",
              "| model | p(target) of class-mean digit | max. prob. on U[0,1) noise | "
              "corr. between inversions of different classes |", "|---|---|---|---|"]
    for b in base:
        lines.append(f"| {b['model']} | {b['p_mean_digit']:.3f} | {b['p_noise']:.3f} | "
                     f"{b['corr_other_class']:.3f} |")
    judge = [b for b in base if b["model"] == "judge (CNN)"]
    if judge:
        lines.append(f"\nJudge test accuracy {judge[0]['test_accuracy']:.3f}; chance 0.1.")
    return "\n".join(lines)


@torch.no_grad()
def _roll_probs(model: nn.Module, images: torch.Tensor, limit: int) -> torch.Tensor:
    """Target probabilities under every jitter roll of the inversion.

    ``images`` ``(T, C, H, W)`` holds the inversion of class ``t`` at index ``t``; returns
    ``(R, T)``, ``R = (2·limit + 1)²``, the probability of class ``t`` for the cyclic
    roll ``(dy, dx) ∈ {-limit..limit}²`` (row-major; row ``R // 2`` is the image itself).
    Cost: ``R`` forward passes of ``T`` images.
    """
    model.eval()
    idx = torch.arange(images.shape[0])
    shifts = range(-limit, limit + 1)
    return torch.stack([
        torch.softmax(model(torch.roll(images, (dy, dx), (-2, -1))), -1)[idx, idx]
        for dy in shifts for dx in shifts])


@register_task("inversion-digits", default_seeds=(0,),
               description="Plug-In Inversion of an MLP and a TinyViT on digits (8x8) with "
                           "exact, Performer and MRA attention: target probability, judge "
                           "classification, similarity across attentions")
def _inversion_digits(*, seeds: tuple[int, ...], quick: bool, out_dir: Path,
                      progress: bool) -> TaskResult:
    steps, ensemble = (3, 2) if quick else (STEPS, ENSEMBLE)
    epochs = {"mlp": 2, "vit": 1, "judge": 1} if quick else dict(EPOCHS)
    records: list[dict[str, Any]] = []
    base: list[dict[str, Any]] = []
    figures: list[Path] = []
    start, cpu = time.perf_counter(), time.process_time()
    classes = list(range(DIGITS_CLASSES))
    with one_thread():
        for seed in seeds:
            data = load_digits_split(seed)
            x_tr, x_te = data.x_train, data.x_test
            y_tr, y_te = data.y_train, data.y_test
            if quick:
                x_tr, y_tr, x_te, y_te = x_tr[:200], y_tr[:200], x_te[:100], y_te[:100]
            means = torch.stack([x_tr[y_tr == c].mean(0) for c in classes])
            noise = torch.rand((64, 1, NATIVE, NATIVE),
                               generator=torch.Generator().manual_seed(seed))
            mlp, vit, judge = make_mlp(seed), make_vit(seed), make_judge(seed + 1000)
            timing = {}
            for name, model in (("mlp", mlp), ("vit", vit), ("judge", judge)):
                log = _fit(model, x_tr, y_tr, epochs=epochs[name],
                           seed=seed + (1000 if name == "judge" else 0), lr=_TRAIN_LR[name],
                           progress=progress, desc=f"train {name} seed {seed}",
                           augment=0.0 if name == "judge" else TRAIN_AUGMENT)
                timing[name] = log["cpu_seconds"]
            models: dict[str, nn.Module] = {"mlp": mlp}
            for name in MODELS[1:]:
                models[name] = _Swapped(vit, _attention(name, seed))
            acc = {name: accuracy(m, x_te, y_te) for name, m in models.items()}
            base.append({"seed": seed, "model": "judge (CNN)",
                         "test_accuracy": accuracy(judge, x_te, y_te),
                         "p_mean_digit": float(_probs(judge, means).diagonal().mean()),
                         "p_noise": float(_probs(judge, noise).max(-1).values.mean()),
                         "corr_other_class": float("nan")})
            images: dict[str, torch.Tensor] = {}
            inv_seconds: dict[str, float] = {}
            runs = [(name, name, seed) for name in MODELS]
            runs += [(label, name, seed + k) for label, name, k in _extra_labels()]
            for label, name, inv_seed in runs:
                t0 = time.process_time()
                images[label] = invert_class(
                    models[name], classes, native_size=NATIVE, channels=1, ensemble=ensemble,
                    steps=steps, lr=LR, jitter=JITTER, seed=inv_seed,
                    progress=progress)
                inv_seconds[label] = time.process_time() - t0
            for label, name, inv_seed in runs:
                inv = images[label]
                p_own = _probs(models[name], inv).diagonal()
                p_rolls = _roll_probs(models[name], inv, JITTER)
                pj = _probs(judge, inv)
                exact = images["vit-softmax"] if name.startswith("vit") else images["mlp"]
                is_exact = label in ("mlp", "vit-softmax")
                corr_exact = [None] * DIGITS_CLASSES if is_exact else _corr(inv, exact)
                other = images["vit-softmax (seed+1)"] if name.startswith("vit") \
                    else images["mlp (seed+1)"]
                corr_other = (_corr(inv, other) if label == name
                              else [None] * DIGITS_CLASSES)
                corr_mean = _corr(inv, means)
                p_under_exact = (_probs(models["vit-softmax"], inv).diagonal()
                                 if name.startswith("vit") else p_own)
                for c in classes:
                    records.append({
                        "seed": seed, "inversion_seed": inv_seed, "model": label, "class": c,
                        "test_accuracy": acc[name],
                        "p_target": float(p_own[c]),
                        "p_target_roll_mean": float(p_rolls[:, c].mean()),
                        "p_target_roll_min": float(p_rolls[:, c].min()),
                        "p_target_under_exact_vit": float(p_under_exact[c]),
                        "judge_pred": int(pj[c].argmax()),
                        "judge_correct": float(int(pj[c].argmax()) == c),
                        "judge_p_target": float(pj[c, c]),
                        "corr_exact": (None if corr_exact[c] is None
                                       else float(corr_exact[c])),
                        "corr_exact_other_seed": (None if corr_other[c] is None
                                                  else float(corr_other[c])),
                        "corr_class_mean": float(corr_mean[c]),
                        "inversion_cpu_seconds": inv_seconds[label],
                    })
            for name in MODELS:
                inv = images[name]
                cm = np.corrcoef(inv.reshape(DIGITS_CLASSES, -1).double().numpy())
                off = cm[~np.eye(DIGITS_CLASSES, dtype=bool)].mean()
                base.append({"seed": seed, "model": name,
                             "p_mean_digit": float(_probs(models[name], means)
                                                   .diagonal().mean()),
                             "p_noise": float(_probs(models[name], noise)
                                              .max(-1).values.mean()),
                             "corr_other_class": float(off)})
            figures.append(_figure({k: images[k] for k in MODELS}, means, out_dir, seed))
            vit.set_attention(SoftmaxAttention())
    return TaskResult(
        records=records, summary=_summary(records, base), figures=figures,
        metadata={"native_size": NATIVE, "steps_per_stage": steps, "lr": LR, "ensemble": ensemble,
                  "jitter": JITTER, "epochs": epochs, "inversion_seeds": INVERSION_SEEDS,
                  "target": TARGET, "train_lr": _TRAIN_LR,
                  "train_augment": TRAIN_AUGMENT, "train_cpu_s": timing,
                  "baselines": base, "threads": 1,
                  "wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu},
    )

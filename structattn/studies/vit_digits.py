"""Task study ``vit-digits``: one TinyViT trained on real digits with each attention.

The task-level counterpart of the operator study: the same TinyViT (8×8 digits, 2×2
patches → a 4×4 grid, mean pooling, no prefix token) is trained with exact softmax,
Performer (FAVOR+), Performer × GridRPE, Performer × Ripple, MRA-2, softmax on the
hypercube graph and FLASH; for each, test accuracy and training time, next to the
operator-level error of the mechanism on the attention inputs ``(q, k, v)`` of

* the softmax-trained model of the same seed (``err_on_softmax_model``), and
* the model trained with the mechanism itself (``err_on_own_model``),

measured against the mechanism's exact reference (softmax with the same mask for the
masked Performers, plain softmax otherwise; FLASH has no ``(q, k, v)``: n/a).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..analysis import attention_kl
from ..attention import FeatureMapAttention, SoftmaxAttention
from ..features import PositiveRandomFeatures
from ..graphs import hypercube
from ..layers.tiny_vit import GatedUnitSpec, TinyViT
from ..masks import GridRPE, Ripple
from ..mra import MRAAttention
from ._vit_train import accuracy, mean_std, one_thread, train
from .digits import DIGITS_CLASSES, load_digits_split
from .graphs import SparseGraphAttention
from .tasks import TaskResult, register_task

__all__ = ["MECHANISMS", "make_attention", "operator_error"]

#: The mechanisms compared, in report order.
MECHANISMS = ("softmax", "performer", "performer-gridrpe", "performer-ripple", "mra",
              "hypercube", "flash")

_GRID = (4, 4)
_DIM, _DEPTH, _HEADS = 32, 2, 4
_HEAD_DIM = _DIM // _HEADS


def make_attention(name: str, *, seed: int, num_features: int = 16) -> Any:
    """The attention operator (or GatedUnitSpec) of mechanism ``name`` on a 4×4 grid.

    Performer: ``num_features`` positive orthogonal random features (seeded); GridRPE:
    ``exp(−0.5·(|Δx| + |Δy|))``; Ripple: ring weights ``(1, 0.5, tail 0.25)``; MRA-2: blocks
    of 4 tokens, 2 refined blocks per row; hypercube: Gray-code hypercube graph on the 16
    tokens (degree 4 + self); FLASH: chunks of 8 tokens, ``s = 16``.
    """
    prf = PositiveRandomFeatures(_HEAD_DIM, num_features, seed=seed)
    if name == "softmax":
        return SoftmaxAttention()
    if name == "performer":
        return FeatureMapAttention(prf)
    if name == "performer-gridrpe":
        mask = GridRPE(_GRID, function=lambda a, b: -0.5 * (np.abs(a) + np.abs(b)), log=True)
        return FeatureMapAttention(prf, mask=mask)
    if name == "performer-ripple":
        return FeatureMapAttention(prf, mask=Ripple(_GRID, [1.0, 0.5, 0.25]))
    if name == "mra":
        return MRAAttention(block_size=4, blocks_per_row=2)
    if name == "hypercube":
        return SparseGraphAttention(hypercube(_GRID[0] * _GRID[1]))
    if name == "flash":
        return GatedUnitSpec(kind="flash", chunk_size=8, qk_dim=16)
    raise ValueError(f"unknown mechanism {name!r}; expected one of {MECHANISMS}")


def _reference(op: Any) -> Any:
    return op.reference if isinstance(op, FeatureMapAttention) else SoftmaxAttention()


@torch.no_grad()
def operator_error(model: TinyViT, op: Any, x: torch.Tensor) -> dict[str, float]:
    """Error of ``op`` against its exact reference on ``model``'s attention inputs.

    Returns the relative Frobenius error of the outputs, ``‖op(q,k,v) − ref(q,k,v)‖ /
    ‖ref(q,k,v)‖`` over all layers, heads and images, and the mean row KL
    ``KL(P_ref ‖ P_op)`` of the maps.
    """
    num = den = kl = 0.0
    layers = model.attention_inputs(x)
    ref_op = _reference(op)
    for q, k, v in layers:
        q, k, v = q.double(), k.double(), v.double()
        ref = ref_op(q, k, v)
        num += float(((op(q, k, v) - ref) ** 2).sum())
        den += float((ref**2).sum())
        kl += max(0.0, float(attention_kl(ref_op.matrix(q, k), op.matrix(q, k))))
    return {"rel_error": (num / den) ** 0.5, "row_kl": kl / len(layers)}


def _build(name: str, seed: int) -> TinyViT:
    torch.manual_seed(seed)
    return TinyViT(8, 2, _DIM, _DEPTH, _HEADS, DIGITS_CLASSES,
                   make_attention(name, seed=seed), pool="mean")


def _figure(records: list[dict[str, Any]], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for i, name in enumerate(MECHANISMS):
        rows = [r for r in records if r["mechanism"] == name]
        t = [r["train_cpu_seconds"] for r in rows]
        acc = [r["test_accuracy"] for r in rows]
        ax1.scatter(t, acc, label=name, color=f"C{i}")
        err = [r["err_on_softmax_model"] for r in rows if r["err_on_softmax_model"] is not None]
        if err:
            ax2.scatter(err, acc[:len(err)], label=name, color=f"C{i}")
    ax1.set_xlabel("training CPU time (s, one thread)")
    ax1.set_ylabel("test accuracy")
    ax1.set_title("TinyViT on digits: accuracy vs training time")
    ax1.legend(fontsize=7)
    ax2.set_xscale("symlog", linthresh=1e-3)
    ax2.set_xlabel("operator rel. error on the softmax model's (q, k, v)")
    ax2.set_ylabel("test accuracy")
    ax2.set_title("task accuracy vs operator error")
    fig.tight_layout()
    path = out_dir / "vit_digits.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _summary(records: list[dict[str, Any]], chance: float) -> str:
    lines = ["| mechanism | test accuracy (mean ± std) | train CPU s | train wall s | "
             "err on softmax model | err on own model | row KL on softmax model |",
             "|---|---|---|---|---|---|---|"]
    for name in MECHANISMS:
        rows = [r for r in records if r["mechanism"] == name]
        if not rows:
            continue

        def fmt(key: str, rows: list[dict[str, Any]] = rows) -> str:
            vals = [r[key] for r in rows if r[key] is not None]
            return f"{np.mean(vals):.3g}" if vals else "n/a"

        lines.append(f"| {name} | {mean_std([r['test_accuracy'] for r in rows])} | "
                     f"{np.mean([r['train_cpu_seconds'] for r in rows]):.1f} | "
                     f"{np.mean([r['train_seconds'] for r in rows]):.1f} | "
                     f"{fmt('err_on_softmax_model')} | {fmt('err_on_own_model')} | "
                     f"{fmt('kl_on_softmax_model')} |")
    lines.append(f"\nChance accuracy: {chance:.4f} (majority class of the test set).")
    return "\n".join(lines)


@register_task("vit-digits", default_seeds=(0, 1, 2),
               description="TinyViT on real digits with 7 attention mechanisms: accuracy, "
                           "training time and operator error on the model's own inputs")
def _vit_digits(*, seeds: tuple[int, ...], quick: bool, out_dir: Path,
                progress: bool) -> TaskResult:
    epochs = 2 if quick else 8
    mechanisms = ("softmax", "performer", "flash") if quick else MECHANISMS
    records: list[dict[str, Any]] = []
    chance = 0.0
    start, cpu = time.perf_counter(), time.process_time()
    with one_thread():
        for seed in seeds:
            data = load_digits_split(seed)
            x_tr, y_tr, x_te, y_te = data.x_train, data.y_train, data.x_test, data.y_test
            if quick:
                x_tr, y_tr, x_te, y_te = x_tr[:128], y_tr[:128], x_te[:64], y_te[:64]
            chance = float(np.bincount(y_te.numpy()).max() / len(y_te))
            probe = x_te[:128]  # operator errors: 128 test images
            models: dict[str, TinyViT] = {}
            for name in mechanisms:
                model = _build(name, seed)

                def ce(m: TinyViT, xb: torch.Tensor, idx: torch.Tensor,
                       y: torch.Tensor = y_tr) -> torch.Tensor:
                    return torch.nn.functional.cross_entropy(m(xb), y[idx])

                log = train(model, x_tr, ce, epochs=epochs, seed=seed, progress=progress,
                            desc=f"{name} seed {seed}")
                models[name] = model
                records.append({"mechanism": name, "seed": seed,
                                "test_accuracy": accuracy(model, x_te, y_te),
                                "train_seconds": log["seconds"],
                                "train_cpu_seconds": log["cpu_seconds"],
                                "final_train_loss": log["losses"][-1]})
            for rec in records[-len(mechanisms):]:
                name = rec["mechanism"]
                op = models[name].attention[0]
                if isinstance(op, GatedUnitSpec):
                    rec.update(err_on_softmax_model=None, err_on_own_model=None,
                               kl_on_softmax_model=None)
                    continue
                on_soft = operator_error(models["softmax"], op, probe)
                rec.update(err_on_softmax_model=on_soft["rel_error"],
                           kl_on_softmax_model=on_soft["row_kl"],
                           err_on_own_model=operator_error(models[name], op, probe)["rel_error"])
    figures = [_figure(records, out_dir)]
    return TaskResult(
        records=records, summary=_summary(records, chance), figures=figures,
        metadata={"epochs": epochs, "model": {"dim": _DIM, "depth": _DEPTH, "heads": _HEADS,
                                              "patch": 2, "pool": "mean"},
                  "threads": 1, "wall_s": time.perf_counter() - start,
                  "cpu_s": time.process_time() - cpu,
                  "operator_error_images": 128},
    )

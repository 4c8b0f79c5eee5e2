"""Task study ``pbt-attention``: truncation PBT of learnable attention approximations.

A population of ``P`` learnable kernel-attention approximations is trained — all members
as one ``torch.func.vmap`` call, per-member Adam learning rates — to match the outputs of
real MiniLM-L6 softmax attention (12 heads, ``L`` real tokens, no padding).  Two kinds:

* ``rpe``: positive random features (fixed projection per member, ``m`` features) times a
  learnable Toeplitz relative-position mask ``exp(b_{i-j})`` per head;
* ``proj``: learnable feature-map projections ``W`` (``m x d`` per head).

Hyper-parameters ``lr``, ``temperature`` (the feature map's softmax scale is
``temperature / sqrt(d)``) and ``feature_scale`` (``W`` is used as ``feature_scale · W``)
are evolved by truncation PBT (exploit every ``E`` steps, bottom 25 %, explore =
resample from the prior).  Fitness: minus the relative output error on a held-out text
window; reported: the error on a third window (test).  Baselines at equal compute:
the same members trained independently (no exploit; median and best), the untuned
default hyper-parameters, the untrained approximation, and uniform attention.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..attention import softmax_attention
from ..population.pbt import sample_prior
from ..population.train import train_population
from .minilm import minilm_attention_inputs, minilm_token_ids
from .tasks import TaskResult, register_task

PRIOR = {"lr": ("loguniform", 1e-3, 1e-1), "temperature": ("uniform", 0.5, 2.0),
         "feature_scale": ("uniform", 0.5, 1.5)}
DEFAULT = {"lr": 1e-2, "temperature": 1.0, "feature_scale": 1.0}
KINDS = ("rpe", "proj")


def _windows(length: int, seed: int) -> list[tuple[torch.Tensor, ...]]:
    """(q, k, v, target) on three text windows: train, validation, test (layer 2)."""
    out = []
    for w in range(3):
        ids = minilm_token_ids(length, seed=3 * seed + w)
        assert np.all(ids != 0), "MiniLM inputs must hold no [PAD] (id 0) tokens"
        q, k, v = (torch.from_numpy(a[0]) for a in
                   minilm_attention_inputs(length, layer=2, seed=3 * seed + w))
        out.append((q, k, v, softmax_attention(q, k, v)))
    return out


def member_output(params: dict, buffers: dict, hp: dict, q: Any, k: Any, v: Any) -> Any:
    """One member's attention output ``(H, L, d_v)`` (plain torch: vmap-able)."""
    L, d = q.shape[-2:]
    W = params["W"] if "W" in params else buffers["W"]
    W = W * hp["feature_scale"]
    root = torch.sqrt(hp["temperature"] * d**-0.5)
    xq, xk = q * root, k * root
    lq = xq @ W.transpose(-1, -2) - (xq * xq).sum(-1, keepdim=True) / 2
    lk = xk @ W.transpose(-1, -2) - (xk * xk).sum(-1, keepdim=True) / 2
    lq = lq - lq.amax(-1, keepdim=True).detach()  # shifts cancel in the row normalization
    lk = lk - lk.amax((-2, -1), keepdim=True).detach()
    scores = torch.exp(lq) @ torch.exp(lk).transpose(-1, -2)
    if "b" in params:  # learnable Toeplitz mask exp(b_{i-j}) per head
        idx = torch.arange(L)[:, None] - torch.arange(L)[None, :] + (L - 1)
        scores = scores * torch.exp(params["b"][:, idx])
    return (scores @ v) / scores.sum(-1, keepdim=True)


def _rel_error(y: Any, target: Any) -> Any:
    return (((y - target) ** 2).sum((-2, -1)) / (target**2).sum((-2, -1))).mean()


def _member_loss(params: dict, buffers: dict, hp: dict, batch: tuple) -> Any:
    q, k, v, target = batch
    return _rel_error(member_output(params, buffers, hp, q, k, v), target)


def _init(kind: str, P: int, H: int, L: int, d: int, m: int, seed: int) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(P, H, m, d, generator=g, dtype=torch.float64)
    if kind == "rpe":
        return {"b": torch.zeros(P, H, 2 * L - 1, dtype=torch.float64)}, {"W": W}
    return {"W": W}, {}


def _run(kind: str, hp: dict, data: list, *, m: int, steps: int, exploit: int | None,
         seed: int, progress: bool) -> tuple[np.ndarray, Any]:
    train, val, test = data
    P = len(hp["lr"])
    H, L, d = train[0].shape
    params, buffers = _init(kind, P, H, L, d, m, seed)

    def fitness(prm: dict, buf: dict, hpt: dict, batch: tuple = val) -> np.ndarray:
        loss = torch.vmap(_member_loss, in_dims=(0, 0, 0, None))
        with torch.no_grad():
            return -loss(prm, buf, hpt, batch).numpy()

    run = train_population(_member_loss, params, hp, lambda s: train, fitness, steps=steps,
                           buffers=buffers, exploit_every=exploit, bottom_frac=0.25,
                           prior=PRIOR if exploit else None, rng=seed, progress=progress,
                           desc=f"pbt-attention {kind}")
    hpt = {k: torch.as_tensor(v) for k, v in run.hparams.items() if k != "lr"}
    test_err = -fitness(run.params, run.buffers, hpt, test)
    return test_err, run


@register_task("pbt-attention", default_seeds=(0,),
               description="truncation PBT (lr, temperature, feature scale) of learnable "
                           "Toeplitz-RPE / learned-projection kernel attention fitted to "
                           "real MiniLM attention; vs independent runs at equal compute")
def _pbt_attention(*, seeds: Any, quick: bool, out_dir: Any, progress: bool) -> TaskResult:
    L, m, P, steps, every = (16, 8, 4, 4, 2) if quick else (48, 16, 16, 60, 15)
    kinds = KINDS[:1] if quick else KINDS
    rows: list[dict[str, Any]] = []
    figures: list[Path] = []
    for seed in seeds:
        data = _windows(L, int(seed))
        v, target = data[2][2:]
        uniform = float(_rel_error(v.mean(-2, keepdim=True).expand_as(target), target))
        for kind in kinds:
            hp0 = sample_prior(PRIOR, P, rng=int(seed))
            default = {n: np.full(P, val) for n, val in DEFAULT.items()}
            res = {}
            for label, hp, exploit in (("pbt", hp0, every), ("independent", hp0, None),
                                       ("default", default, None)):
                err, run = _run(kind, hp, data, m=m, steps=steps, exploit=exploit,
                                seed=int(seed), progress=progress)
                res[label] = (err, run)
            untrained_err, _ = _run(kind, default, data, m=m, steps=0, exploit=None,
                                    seed=int(seed), progress=False)
            pbt_err, pbt_run = res["pbt"]
            best = int(np.argmax(pbt_run.fitness))  # chosen on validation
            ind_err = res["independent"][0]
            row = {
                "seed": int(seed), "kind": kind, "L": L, "num_features": m, "population": P,
                "steps": steps, "exploit_every": every,
                "pbt_best": float(pbt_err[best]),
                "independent_median": float(np.median(ind_err)),
                "independent_best": float(ind_err[int(np.argmax(res["independent"][1].fitness))]),
                "default_median": float(np.median(res["default"][0])),
                "untrained_median": float(np.median(untrained_err)), "uniform": uniform,
                "pbt_best_hparams": {n: float(vals[best]) for n, vals in pbt_run.hparams.items()},
                "exploits": sum(len(h["copies"]) for h in pbt_run.history),
            }
            rows.append(row)
        if out_dir is not None and not quick:
            figures.append(_figure(rows, Path(out_dir), int(seed)))
    return TaskResult(records=rows, summary=_summary(rows), figures=figures,
                      metadata={"prior": {k: list(map(str, v)) for k, v in PRIOR.items()},
                                "default": DEFAULT, "data": "MiniLM-L6 layer 2, 12 heads, "
                                "3 text windows (train / validation / test), no padding"})


def _summary(rows: list[dict[str, Any]]) -> str:
    lines = ["Relative output error ||Y - Y*||²/||Y*||² on a held-out MiniLM window "
             "(lower is better; members chosen on a validation window).", "",
             "| seed | kind | P | steps | PBT best | indep. median | indep. best | "
             "default (median) | untrained | uniform | best lr / temp / scale |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        h = r["pbt_best_hparams"]
        lines.append(
            f"| {r['seed']} | {r['kind']} | {r['population']} | {r['steps']} | "
            f"{r['pbt_best']:.4f} | {r['independent_median']:.4f} | "
            f"{r['independent_best']:.4f} | {r['default_median']:.4f} | "
            f"{r['untrained_median']:.4f} | {r['uniform']:.4f} | "
            f"{h['lr']:.3g} / {h['temperature']:.2f} / {h['feature_scale']:.2f} |")
    return "\n".join(lines)


def _figure(rows: list[dict[str, Any]], out: Path, seed: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    mine = [r for r in rows if r["seed"] == seed]
    labels = ["pbt_best", "independent_median", "independent_best", "default_median",
              "uniform"]
    fig, ax = plt.subplots(figsize=(6, 3))
    width = 0.8 / len(mine)
    for i, r in enumerate(mine):
        ax.bar(np.arange(len(labels)) + i * width, [r[x] for x in labels], width,
               label=r["kind"])
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, rotation=20, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("relative error (test window)")
    ax.legend()
    fig.tight_layout()
    path = out / f"pbt_attention_seed{seed}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


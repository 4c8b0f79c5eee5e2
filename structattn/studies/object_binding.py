"""Task study ``object-binding``: binding attention and compositional generalisation.

On :class:`~structattn.objects.ObjectLibrary` trajectories (library of ``N`` objects,
scenes of ``K = 3`` on a 5 × 5 grid, disjoint train/eval scene compositions) a small
C-SWM-style slot transition model (a GNN over the slots) is trained and evaluated by
next-state ranking (Hits@1, Hits@5, MRR; the HOWM/C-SWM protocol) on fresh episodes of the
*training* compositions and of the *held-out* compositions.

Slots are the binding problem without pixels: each object's slot is its fixed random
"appearance" vector (8 numbers per library object, standing in for its colour/shape)
concatenated with the one-hot of its cell (25), and the ``K`` slots come in a random
order.  Actions are library-indexed (``(N, 4)`` one-hot), as in HOWM.  Models:

``none``
    No binding: the flattened library action ``(4N)`` is copied to every slot (C-SWM's
    action input).  It is given a slot order that is *tracked* from ``t`` to ``t + 1``, so
    that its slot-space energy and ranking are defined.
``soft``
    HOWM: a learned :func:`~structattn.objects.binding_attention` ``M (N, K)`` from the
    slots to one-hot library identities routes the action to slots
    (:func:`~structattn.objects.bind_actions`); trained with the aligned contrastive energy
    (:func:`~structattn.objects.aligned_energy`, ``M`` detached as in the authors' code)
    and evaluated in the full (library) MDP with independently shuffled slots at ``t + 1``.
``soft→hard``
    The ``soft`` model evaluated with :func:`~structattn.objects.hard_binding` of its
    ``M`` (the authors' ``hard_bind`` evaluation option).
``oracle``
    The true one-hot binding, same model and energy (the upper reference).

Baselines: chance (random ranking: ``Hits@k = k/n``, ``MRR = H_n / n``), ``no-op`` (predict
no change, true binding) and ``true dynamics`` (the environment's next state, true binding:
the sanity bound, Hits@1 = 1).  The slots are fixed features (no learned encoder), so the
negative (hinge) term of the contrastive loss carries no gradient; it is kept in the loss
for fidelity and the models are effectively trained on the positive energy.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..objects import (
    ObjectLibrary,
    aligned_energy,
    bind_actions,
    binding_attention,
    hard_binding,
    hits_at_k,
    lift,
    mrr,
)
from .tasks import TaskResult, register_task

__all__ = ["BindingConfig", "run_object_binding"]

_GRID = (5, 5)
_APPEARANCE = 8
_MODELS = ("none", "soft", "oracle")
_ROWS = ("chance", "no-op", "true dynamics", "none", "soft", "soft→hard", "oracle")


@dataclasses.dataclass(frozen=True)
class BindingConfig:
    """Sizes of one ``object-binding`` run (per library size ``N`` and seed)."""

    num_objects: tuple[int, ...] = (5, 10, 20)
    scene_size: int = 3
    train_episodes: int = 300
    eval_episodes: int = 100
    steps: int = 10
    eval_steps: int = 5
    train_iters: int = 400
    batch: int = 64
    hidden: int = 64
    lr: float = 5e-3
    binding_lr: float = 2e-2
    hinge: float = 1.0
    sigma: float = 0.5

    @classmethod
    def quick(cls) -> BindingConfig:
        return cls(num_objects=(5,), train_episodes=20, eval_episodes=10, steps=5,
                   train_iters=25, batch=32, hidden=16)


def _scene_counts(N: int, K: int) -> tuple[int, int]:
    """Train/eval scene compositions: enough to cover the library, a held-out rest."""
    total = math.comb(N, K)
    if total == 1:  # N = K: one scene, shared by both splits
        return 1, 1
    n_train = min(max(2 * math.ceil(N / K) + 2, 6), total - 1)
    return n_train, max(1, min(10, total - n_train))


# ------------------------------------------------------------------------------- data
def _episodes(env: ObjectLibrary, split: str, E: int, T: int, appearance: np.ndarray,
              rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Slot features (scene order), ids, library actions and slot orders for ``E`` episodes."""
    tr = env.rollout(E, T, split=split)
    H, W = _GRID
    ids = tr.scenes  # (E, K) sorted library ids
    pos = np.take_along_axis(tr.positions, ids[:, None, :, None], axis=2)  # (E, T+1, K, 2)
    cell = np.eye(H * W)[pos[..., 0] * W + pos[..., 1]]
    z = np.concatenate([np.broadcast_to(appearance[ids][:, None], (*cell.shape[:3],
                                                                    _APPEARANCE)), cell], -1)
    N, K = env.num_objects, env.scene_size
    act = np.zeros((E, T, N, 4))
    e, t = np.meshgrid(np.arange(E), np.arange(T), indexing="ij")
    act[e, t, tr.actions // 4, tr.actions % 4] = 1.0
    tracked = np.stack([rng.permutation(K) for _ in range(E)])  # one order per episode
    shuffled = np.stack([[rng.permutation(K) for _ in range(T + 1)] for _ in range(E)])
    return {"z": z.astype(np.float32), "ids": ids, "act": act.astype(np.float32),
            "tracked": tracked, "shuffled": shuffled}


def _true_binding(ids: np.ndarray, order: np.ndarray, N: int) -> np.ndarray:
    """One-hot ``M (..., N, K)``: slot ``k`` holds library object ``ids[order[k]]``."""
    slot_ids = np.take_along_axis(ids, order, axis=-1)
    return np.eye(N, dtype=np.float32)[slot_ids].swapaxes(-1, -2)


def _slots(d: dict[str, np.ndarray], e: np.ndarray, t: np.ndarray, tracked: bool):
    """Slot features at (episode e, time t) in the model's slot order, and that order."""
    order = d["tracked"][e] if tracked else d["shuffled"][e, t]
    return np.take_along_axis(d["z"][e, t], order[..., None], axis=-2), order


# ------------------------------------------------------------------------------ model
def _build(mode: str, N: int, F: int, hidden: int, seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    d_a = 4 * N if mode == "none" else 4

    def mlp(i: int, o: int) -> nn.Module:
        return nn.Sequential(nn.Linear(i, hidden), nn.ReLU(), nn.Linear(hidden, o))

    class SlotGNN(nn.Module):
        """C-SWM transition: edge MLP over slot pairs, node MLP on (slot, action, messages)."""

        def __init__(self) -> None:
            super().__init__()
            self.edge, self.node = mlp(2 * F, hidden), mlp(F + d_a + hidden, F)
            if mode == "soft":  # binding attention: slots -> one-hot library identities
                self.w_q = nn.Parameter(torch.randn(F, 16) / math.sqrt(F))
                self.w_k = nn.Parameter(0.1 * torch.randn(N, 16))  # M starts near uniform

        def binding(self, z: Any) -> Any:
            return binding_attention(z, w_q=self.w_q, w_k=self.w_k, check_finite=False)

        def forward(self, z: Any, a: Any) -> Any:
            K = z.shape[-2]
            zi = z[..., :, None, :].expand(*z.shape[:-1], K, F)
            zj = z[..., None, :, :].expand(*z.shape[:-2], K, K, F)
            msg = self.edge(torch.cat([zi, zj], -1))
            off = 1.0 - torch.eye(K, dtype=z.dtype)
            agg = (msg * off[..., None]).sum(-2)
            return self.node(torch.cat([z, a, agg], -1))

    return SlotGNN()


def _bound_action(model: Any, mode: str, z: Any, act: Any, M: Any) -> Any:
    if mode == "none":
        return act.flatten(-2)[..., None, :].expand(*z.shape[:-1], act.shape[-2] * 4)
    return bind_actions(M, act, check_finite=False)


def _train(model: Any, mode: str, d: dict, cfg: BindingConfig, N: int, seed: int) -> float:
    import torch

    rng = np.random.default_rng(seed + 7919)
    binding = [p for n, p in model.named_parameters() if n in ("w_q", "w_k")]
    rest = [p for n, p in model.named_parameters() if n not in ("w_q", "w_k")]
    groups = [{"params": rest}] + ([{"params": binding, "lr": cfg.binding_lr}] if binding else [])
    opt = torch.optim.Adam(groups, lr=cfg.lr)
    E, T = d["act"].shape[:2]
    tracked = mode == "none"
    loss_val = float("nan")
    for _ in range(cfg.train_iters):
        e, t = rng.integers(E, size=cfg.batch), rng.integers(T, size=cfg.batch)
        z0, o0 = _slots(d, e, t, tracked)
        z1, o1 = _slots(d, e, t + 1, tracked)
        z0, z1 = torch.as_tensor(z0), torch.as_tensor(z1)
        act = torch.as_tensor(d["act"][e, t])
        if mode == "soft":
            M0, M1 = model.binding(z0), model.binding(z1).detach()
        elif mode == "oracle":
            M0 = torch.as_tensor(_true_binding(d["ids"][e], o0, N))
            M1 = torch.as_tensor(_true_binding(d["ids"][e], o1, N))
        pred = z0 + model(z0, _bound_action(model, mode, z0, act, None if mode == "none"
                                            else M0))
        perm = torch.as_tensor(rng.permutation(cfg.batch))
        if mode == "none":
            pos = (0.5 / cfg.sigma**2) * ((pred - z1) ** 2).sum(-1).mean(-1)
            neg = (0.5 / cfg.sigma**2) * ((z0 - z1[perm]) ** 2).sum(-1).mean(-1)
        else:
            M0d = M0.detach()
            pos = aligned_energy(pred, z1, M0d, M1, sigma=cfg.sigma, check_finite=False)
            neg = aligned_energy(z0, z1[perm], M0d, M1[perm], sigma=cfg.sigma,
                                 check_finite=False)
        loss = pos.mean() + torch.clamp(cfg.hinge - neg, min=0).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_val = float(loss.detach())
    return loss_val


def _evaluate(model: Any, row: str, d: dict, N: int, horizon: int) -> dict[str, float]:
    """Hits@1/5 and MRR of ``horizon``-step predictions over all evaluation starts."""
    import torch

    E, T = d["act"].shape[:2]
    e, t = np.meshgrid(np.arange(E), np.arange(T - horizon + 1), indexing="ij")
    e, t = e.ravel(), t.ravel()
    mode = {"soft→hard": "soft", "no-op": "oracle", "true dynamics": "oracle"}.get(row, row)
    tracked = mode == "none"
    z0, o0 = _slots(d, e, t, tracked)
    zT, oT = _slots(d, e, t + horizon, tracked)
    z0, zT = torch.as_tensor(z0), torch.as_tensor(zT)
    with torch.no_grad():
        if mode == "soft":
            M0, MT = model.binding(z0), model.binding(zT)
            if row == "soft→hard":
                M0, MT = hard_binding(M0), hard_binding(MT)
        elif mode == "oracle":
            M0 = torch.as_tensor(_true_binding(d["ids"][e], o0, N))
            MT = torch.as_tensor(_true_binding(d["ids"][e], oT, N))
        binding_acc = float("nan")
        if mode == "soft":  # share of present objects bound to their own slot
            true = _true_binding(d["ids"][e], o0, N)
            present = true.sum(-1) > 0
            binding_acc = float((M0.numpy().argmax(-1) == true.argmax(-1))[present].mean())
        z = z0
        if row == "true dynamics":  # the environment's answer, in the slot order of t
            z = torch.as_tensor(np.take_along_axis(d["z"][e, t + horizon], o0[..., None],
                                                   axis=-2))
        elif row != "no-op":
            for s in range(horizon):  # actions bound with the first step's M (HOWM)
                act = torch.as_tensor(d["act"][e, t + s])
                z = z + model(z, _bound_action(model, mode, z, act,
                                               None if mode == "none" else M0))
        if mode == "none":
            pred, true = z.flatten(-2), zT.flatten(-2)
        else:
            pred, true = lift(z, M0).flatten(-2), lift(zT, MT).flatten(-2)
        D = torch.cdist(pred.double(), true.double(),  # exact differences: d_ii = 0
                        compute_mode="donot_use_mm_for_euclid_dist") ** 2
    return {"hits@1": hits_at_k(D, 1, lower_is_better=True),
            "hits@5": hits_at_k(D, 5, lower_is_better=True),
            "mrr": mrr(D, lower_is_better=True), "n": len(e), "binding_acc": binding_acc}


def run_object_binding(cfg: BindingConfig, seeds: tuple[int, ...], *,
                       progress: bool = False) -> list[dict[str, Any]]:
    """All rows of the study: ``(N, seed, model, split, horizon) -> Hits@1/5, MRR``."""
    import torch

    runs = [(N, s) for N in cfg.num_objects for s in seeds]
    if progress:
        from tqdm.auto import tqdm

        runs = tqdm(runs, desc="object-binding")
    records: list[dict[str, Any]] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest on a shared machine
    try:
        for N, seed in runs:
            n_train, n_eval = _scene_counts(N, cfg.scene_size)
            env = ObjectLibrary(N, cfg.scene_size, num_train_scenes=n_train,
                                num_eval_scenes=n_eval, grid=_GRID, seed=seed)
            rng = np.random.default_rng(seed + 104729)
            appearance = rng.standard_normal((N, _APPEARANCE)) / math.sqrt(_APPEARANCE)
            train = _episodes(env, "train", cfg.train_episodes, cfg.steps, appearance, rng)
            splits = {"train scenes": _episodes(env, "train", cfg.eval_episodes, cfg.eval_steps,
                                                appearance, rng),
                      "held-out scenes": _episodes(env, "eval", cfg.eval_episodes,
                                                   cfg.eval_steps, appearance, rng)}
            F = train["z"].shape[-1]
            models, losses, secs = {}, {}, {}
            for mode in _MODELS:
                start = time.perf_counter()
                models[mode] = _build(mode, N, F, cfg.hidden, seed)
                losses[mode] = _train(models[mode], mode, train, cfg, N, seed)
                secs[mode] = time.perf_counter() - start
            models["soft→hard"] = models["soft"]
            for split, d in splits.items():
                for horizon in (1, cfg.eval_steps):
                    for row in _ROWS:
                        base = {"num_objects": N, "seed": seed, "model": row, "split": split,
                                "horizon": horizon, "train_scenes": n_train,
                                "eval_scenes": n_eval}
                        if row == "chance":
                            n = d["act"].shape[0] * (cfg.eval_steps - horizon + 1)
                            res = {"hits@1": 1 / n, "hits@5": min(5, n) / n,
                                   "mrr": sum(1 / r for r in range(1, n + 1)) / n, "n": n,
                                   "binding_acc": float("nan")}
                        else:
                            res = _evaluate(models.get(row), row, d, N, horizon)
                        res["final_loss"] = losses.get(row.split("→")[0], float("nan"))
                        res["train_s"] = secs.get(row.split("→")[0], float("nan"))
                        records.append({**base, **res})
    finally:
        torch.set_num_threads(threads)
    return records


def _summary(records: list[dict[str, Any]], cfg: BindingConfig) -> str:
    lines = []
    for horizon in sorted({r["horizon"] for r in records}):
        lines += [f"\n### {horizon}-step prediction (mean ± std over seeds)\n",
                  "| N | model | train scenes: Hits@1 | Hits@5 | MRR "
                  "| held-out scenes: Hits@1 | Hits@5 | MRR |",
                  "|---|---|---|---|---|---|---|---|"]
        for N in cfg.num_objects:
            for row in _ROWS:
                cells = []
                for split in ("train scenes", "held-out scenes"):
                    sel = [r for r in records if r["num_objects"] == N and r["model"] == row
                           and r["split"] == split and r["horizon"] == horizon]
                    for key in ("hits@1", "hits@5", "mrr"):
                        v = np.array([r[key] for r in sel])
                        cells.append(f"{v.mean():.3f} ± {v.std():.3f}")
                lines.append(f"| {N} | {row} | " + " | ".join(cells) + " |")
    lines += ["\n### Learned binding: share of present objects whose argmax slot is their own "
              "(soft model, 1-step starts; one value per seed)\n",
              "| N | train scenes | held-out scenes |", "|---|---|---|"]
    for N in cfg.num_objects:
        cells = []
        for split in ("train scenes", "held-out scenes"):
            sel = [r for r in records if r["num_objects"] == N and r["model"] == "soft"
                   and r["split"] == split and r["horizon"] == 1]
            cells.append(", ".join(f"{r['binding_acc']:.2f}" for r in sel))
        lines.append(f"| {N} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _figure(records: list[dict[str, Any]], cfg: BindingConfig, out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in _ROWS if r not in ("true dynamics",)]
    fig, axes = plt.subplots(1, len(cfg.num_objects), figsize=(4 * len(cfg.num_objects), 3.2),
                             squeeze=False, sharey=True)
    for ax, N in zip(axes[0], cfg.num_objects, strict=True):
        for j, split in enumerate(("train scenes", "held-out scenes")):
            vals = [np.mean([r["mrr"] for r in records if r["num_objects"] == N
                             and r["model"] == m and r["split"] == split and r["horizon"] == 1])
                    for m in rows]
            ax.bar(np.arange(len(rows)) + 0.4 * j - 0.2, vals, width=0.4, label=split)
        ax.set_xticks(np.arange(len(rows)), rows, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"N = {N}, K = {cfg.scene_size}: 1-step MRR")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "object_binding.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@register_task("object-binding", default_seeds=(0, 1, 2),
               description="HOWM binding attention: slot GNN with soft / hard / no binding, "
                           "Hits@k and MRR on train vs held-out scene compositions")
def _object_binding(*, seeds: tuple[int, ...], quick: bool, out_dir: Path,
                    progress: bool) -> TaskResult:
    cfg = BindingConfig.quick() if quick else BindingConfig()
    records = run_object_binding(cfg, tuple(seeds), progress=progress)
    figure = _figure(records, cfg, Path(out_dir))
    return TaskResult(records=records, summary=_summary(records, cfg), figures=[figure],
                      metadata={"config": dataclasses.asdict(cfg)})

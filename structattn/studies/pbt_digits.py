"""Task study ``pbt-digits``: truncation PBT of ``P = 16`` TinyViTs on scikit-learn digits.

The whole population is one model call: the members' parameters are stacked with
``torch.func.stack_module_state`` and the loss of one TinyViT (``functional_call``) is
``vmap``-ed over them, then differentiated by one ordinary reverse pass of the sum of the
members' losses (the functorch ``grad`` transform is ~100x slower on TinyViT here).
Every member has its own Adam learning rate (the unit-lr trick of
:func:`~structattn.population.adam_step`) and its own attention temperature (softmax
scale ``temperature / sqrt(d_h)``, a batched input of the vmapped call).  PBT (as the
spec: exploit every 200 of 600 steps, bottom 25 %, explore = resample from the prior)
evolves
``(lr, temperature)``; fitness is the accuracy on a validation split of the training set.
Reported: the best member's test accuracy (chosen on validation) against the median and
best of the same members trained independently for the same number of steps (equal
compute), and chance (10 %).

Runs on one torch/BLAS thread: every kernel here is tiny (32 images of 17 tokens of
width 16 per member), and a second intra-op thread only spins — measured in one process
on the shared 2-core machine, a population step costs 70 ms of CPU on one thread and
280 ms on two (the whole study: 267 s of CPU on two threads).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from ..attention import attention_matrix, softmax_attention
from ..layers.tiny_vit import TinyViT
from ..population.pbt import sample_prior
from ..population.train import train_population
from ._vit_train import one_thread
from .digits import load_digits_split
from .tasks import TaskResult, register_task

PRIOR = {"lr": ("loguniform", 3e-4, 3e-2), "temperature": ("loguniform", 0.25, 4.0)}


class TemperatureAttention:
    """Softmax attention with scale ``temperature / sqrt(d)``; ``temperature`` may be a
    0-d tensor set per call (a batched tensor under ``vmap``)."""

    def __init__(self) -> None:
        self.temperature: Any = 1.0

    def __call__(self, q: Any, k: Any, v: Any) -> Any:
        return softmax_attention(q * self.temperature, k, v)

    def matrix(self, q: Any, k: Any) -> Any:
        return attention_matrix(q * self.temperature, k)


def _population(P: int, seed: int, dim: int) -> tuple[TinyViT, TemperatureAttention, dict,
                                                       dict]:
    op = TemperatureAttention()
    models = []
    for p in range(P):
        torch.manual_seed(1000 * seed + p)
        models.append(TinyViT(8, 2, dim, 2, 2, 10, attention=op, check_finite=False))
    params, buffers = stack_module_state(models)
    return models[0], op, params, buffers


@register_task("pbt-digits", default_seeds=(0,),
               description="truncation PBT of 16 TinyViTs (lr, attention temperature) on "
                           "sklearn digits, one vmapped population; vs independent runs")
def _pbt_digits(*, seeds: Any, quick: bool, out_dir: Any, progress: bool) -> TaskResult:
    with one_thread():  # 17-token batches of 32: a second thread only spins (4x CPU)
        return _run(seeds=seeds, quick=quick, progress=progress)


def _run(*, seeds: Any, quick: bool, progress: bool) -> TaskResult:
    P, steps, every, dim, batch = (4, 6, 2, 16, 32) if quick else (16, 600, 200, 16, 32)
    rows = []
    for seed in seeds:
        seed = int(seed)
        split = load_digits_split(seed, as_torch=True)
        n_val = len(split.y_train) // 5
        x_tr, y_tr = split.x_train[n_val:], split.y_train[n_val:]
        x_val, y_val = split.x_train[:n_val], split.y_train[:n_val]
        gen = torch.Generator().manual_seed(seed)
        order = [torch.randperm(len(y_tr), generator=gen)[:batch] for _ in range(steps)]
        base, op, params0, buffers0 = _population(P, seed, dim)

        def member_loss(params: dict, buffers: dict, hp: dict, b: tuple) -> Any:
            op.temperature = hp["temperature"]  # noqa: B023 - one population per seed
            logits = functional_call(base, (params, buffers), (b[0],))  # noqa: B023
            return torch.nn.functional.cross_entropy(logits, b[1])

        def accuracy(params: dict, buffers: dict, hp: dict, x: Any, y: Any) -> np.ndarray:
            def member(prm: dict, buf: dict, h: dict) -> Any:
                op.temperature = h["temperature"]  # noqa: B023
                return (functional_call(base, (prm, buf), (x,)).argmax(-1) == y).double().mean()  # noqa: B023

            with torch.no_grad():
                return vmap(member)(params, buffers, hp).numpy()

        results = {}
        hp0 = sample_prior(PRIOR, P, rng=seed)
        for label, exploit in (("pbt", every), ("independent", None)):
            run = train_population(
                member_loss, params0, hp0, lambda s: (x_tr[order[s]], y_tr[order[s]]),  # noqa: B023
                lambda p, b, h: accuracy(p, b, h, x_val, y_val),  # noqa: B023
                steps=steps, buffers=buffers0, exploit_every=exploit, bottom_frac=0.25,
                prior=PRIOR if exploit else None, rng=seed, progress=progress,
                desc=f"pbt-digits {label}", functorch_grad=False)
            hpt = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in run.hparams.items()
                   if k != "lr"}
            test = accuracy(run.params, run.buffers, hpt, split.x_test, split.y_test)
            results[label] = (run, test)
        op.temperature = 1.0
        pbt_run, pbt_test = results["pbt"]
        ind_run, ind_test = results["independent"]
        best = int(np.argmax(pbt_run.fitness))
        rows.append({
            "seed": seed, "population": P, "steps": steps, "exploit_every": every,
            "pbt_best_test": float(pbt_test[best]),
            "independent_median_test": float(np.median(ind_test)),
            "independent_best_test": float(ind_test[int(np.argmax(ind_run.fitness))]),
            "chance": 0.1,
            "pbt_best_hparams": {k: float(v[best]) for k, v in pbt_run.hparams.items()},
            "exploits": sum(len(h["copies"]) for h in pbt_run.history),
        })
    lines = ["Test accuracy on sklearn digits (members chosen on a validation split).", "",
             "| seed | P | steps | PBT best | indep. median | indep. best | chance | "
             "best lr / temperature | copies |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        h = r["pbt_best_hparams"]
        lines.append(f"| {r['seed']} | {r['population']} | {r['steps']} | "
                     f"{r['pbt_best_test']:.3f} | {r['independent_median_test']:.3f} | "
                     f"{r['independent_best_test']:.3f} | {r['chance']:.2f} | "
                     f"{h['lr']:.3g} / {h['temperature']:.2f} | {r['exploits']} |")
    return TaskResult(records=rows, summary="\n".join(lines),
                      metadata={"prior": {k: list(map(str, v)) for k, v in PRIOR.items()},
                                "model": f"TinyViT(8, patch 2, dim {dim}, depth 2, 2 heads)"})

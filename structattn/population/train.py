"""A vectorized PBT training loop: ``torch.func.vmap`` over members, per-member Adam.

The loop the fastpbrl code runs, for any member written as a pure function::

    loss = member_loss(params, buffers, hparams, batch)      # one member, plain torch

``train_population`` evaluates ``vmap(grad_and_value(member_loss))`` on the stacked
``(P, ...)`` parameters (one batched call per step), updates them with
:func:`~structattn.population.adam_step` and every member's own learning rate, and
every ``exploit_every`` steps runs truncation selection + explore.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.func import grad_and_value, vmap

from ._core import adam_step
from .pbt import pbt_explore, pbt_truncation

__all__ = ["PopulationRun", "train_population", "train_segment"]


def train_segment(
    member_loss: Callable[..., Any],
    params: Mapping[str, Any],
    buffers: Mapping[str, Any],
    state: Mapping[str, Any] | None,
    hparams: Mapping[str, Any],
    batches: Callable[[int], Any],
    start: int,
    stop: int,
    *,
    functorch_grad: bool = True,
    bar: Any = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Steps ``start … stop - 1`` of vectorized training, no exploit: the inner loop of
    :func:`train_population` (and of each shard of
    :func:`~structattn.population.train_population_dask`).

    Returns ``(params, adam_state)``; ``adam_state`` is ``state`` when no step ran.
    ``O((stop - start) · P · member cost)``.
    """
    like = next(iter(params.values()))
    hpt = {k: torch.as_tensor(v, dtype=like.dtype) for k, v in hparams.items() if k != "lr"}
    lr = torch.as_tensor(np.asarray(hparams["lr"], dtype=np.float64), dtype=like.dtype)
    step_fn = vmap(grad_and_value(member_loss), in_dims=(0, 0, 0, None))
    loss_fn = vmap(member_loss, in_dims=(0, 0, 0, None))
    params = dict(params)
    for step in range(start, stop):
        if functorch_grad:
            grads, _ = step_fn(params, buffers, hpt, batches(step))
        else:
            leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            losses = loss_fn(leaves, buffers, hpt, batches(step))
            found = torch.autograd.grad(losses.sum(), list(leaves.values()), allow_unused=True)
            grads = {k: torch.zeros_like(v) if g is None else g
                     for (k, v), g in zip(leaves.items(), found, strict=True)}
        params, state = adam_step(params, grads, state, lr=lr)
        if bar is not None:
            bar.update()
    return params, state


@dataclass
class PopulationRun:
    """The outcome of :func:`train_population`.

    Attributes
    ----------
    params, buffers : dict[str, Tensor]
        Final stacked parameters and buffers ``(P, ...)``.
    hparams : dict[str, ndarray]
        Final hyper-parameters ``(P,)`` (``"lr"`` included).
    fitness : ndarray, shape (P,)
        Final fitness (higher is better).
    history : list of dict
        ``{"step", "fitness", "copies"}`` at every exploit point (and the end).
    """

    params: dict[str, Any]
    buffers: dict[str, Any]
    hparams: dict[str, np.ndarray]
    fitness: np.ndarray
    history: list[dict[str, Any]] = field(default_factory=list)


def train_population(
    member_loss: Callable[..., Any],
    params: Mapping[str, Any],
    hparams: Mapping[str, Any],
    batches: Callable[[int], Any],
    fitness: Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], np.ndarray],
    *,
    steps: int,
    buffers: Mapping[str, Any] | None = None,
    exploit_every: int | None = None,
    bottom_frac: float = 0.25,
    prior: Mapping[str, Any] | None = None,
    rng: Any = 0,
    progress: bool = False,
    desc: str = "population",
    functorch_grad: bool = True,
) -> PopulationRun:
    """Train ``P`` members at once; optionally truncation-PBT every ``exploit_every`` steps.

    Parameters
    ----------
    member_loss : callable
        ``member_loss(params, buffers, hparams, batch) -> scalar`` for ONE member
        (``hparams`` holds 0-d tensors; the learning rate is not passed).
    params : dict[str, Tensor (P, ...)]
        Trainable stacked parameters.
    hparams : dict[str, array (P,)]
        Per-member hyper-parameters; ``hparams["lr"]`` is the learning rate.
    batches : callable
        ``batches(step) -> batch`` shared by every member (not vmapped).
    fitness : callable
        ``fitness(params, buffers, hparams) -> ndarray (P,)`` (stacked; ``hparams``
        without ``"lr"``, as tensors), higher is better.
    steps : int
    buffers : dict[str, Tensor (P, ...)], optional
        Per-member non-trained arrays (e.g. fixed random projections); copied on exploit.
    exploit_every : int, optional
        None: independent training (no exploit).
    bottom_frac : float
        :func:`~structattn.population.pbt_truncation`'s fraction.
    prior : dict, optional
        Explore resamples these hyper-parameters (required with ``exploit_every``).
    rng : int or Generator
    progress : bool
        Show a tqdm bar.
    functorch_grad : bool, default True
        True: ``vmap(grad_and_value(member_loss))``.  False: ``vmap(member_loss)`` forward
        and one reverse pass of the *sum* of the members' losses (each member's gradient
        is then its solo gradient) — much faster for models whose ops are slow under the
        functorch ``grad`` transform (e.g. TinyViT).

    Returns
    -------
    PopulationRun

    Notes
    -----
    A copying member takes its source's parameters, buffers and Adam moments, then
    resamples its hyper-parameters from ``prior`` (fastpbrl's explore).
    """
    if exploit_every is not None and prior is None:
        raise ValueError("exploit_every needs a prior= to explore from")
    gen = np.random.default_rng(rng)
    params = {k: v.detach().clone() for k, v in params.items()}
    buffers = {k: v.detach().clone() for k, v in (buffers or {}).items()}
    hp = {k: np.array(v, dtype=np.float64) for k, v in hparams.items()}
    like = next(iter(params.values()))

    def hp_tensors() -> dict[str, Any]:
        return {k: torch.as_tensor(v, dtype=like.dtype) for k, v in hp.items() if k != "lr"}

    state = None
    history: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=desc, leave=False)
    ends = list(range(exploit_every, steps, exploit_every)) if exploit_every else []
    start = 0
    for stop in [*ends, steps]:
        params, state = train_segment(member_loss, params, buffers, state, hp, batches,
                                      start, stop, functorch_grad=functorch_grad, bar=bar)
        start = stop
        if stop == steps:
            break
        fit = np.asarray(fitness(params, buffers, hp_tensors()), dtype=np.float64)
        copies = pbt_truncation(fit, bottom_frac=bottom_frac, rng=gen)
        if copies:
            dst = torch.as_tensor(list(copies))
            src = torch.as_tensor(list(copies.values()))
            for d in (params, buffers, state["m"], state["v"]):
                for k in d:
                    d[k] = d[k].clone()
                    d[k][dst] = d[k][src]
            hp = pbt_explore(hp, copies, prior=prior, rng=gen)
        history.append({"step": stop, "fitness": fit.tolist(),
                        "copies": {int(a): int(b) for a, b in copies.items()}})
    if bar is not None:
        bar.close()
    fit = np.asarray(fitness(params, buffers, hp_tensors()), dtype=np.float64)
    history.append({"step": steps, "fitness": fit.tolist(), "copies": {}})
    return PopulationRun(params, buffers, hp, fit, history)

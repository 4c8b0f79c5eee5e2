"""Population-based training spread over dask.distributed workers.

The population of ``P`` members is cut into ``W`` contiguous shards, one per worker;
each worker trains its shard as one vectorized sub-population
(:func:`~structattn.population.train_population`'s inner loop: ``vmap`` over the
shard's members, per-member Adam) for ``exploit_every`` steps and evaluates its
members' fitness.  Between rounds the driver gathers every shard, runs truncation
selection and explore on the *whole* population — a member may copy a member trained on
another worker: parameters, buffers and Adam moments travel with the copy — and sends
the shards out again.  The random draws of selection and explore come from one
generator on the driver, in the order of the serial loop, so the run equals
``train_population(...)`` with the same arguments (to the rounding of batched kernels
of different batch sizes).

The study engine's dask conventions apply: ``client=`` uses an existing cluster,
``workers=N`` starts a LocalCluster of ``N`` single-threaded worker processes on this
machine (closed at the end).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .._validate import check_int
from .pbt import pbt_explore, pbt_truncation
from .train import PopulationRun, train_segment

__all__ = ["train_population_dask"]


def _slices(P: int, shards: int) -> list[slice]:
    bounds = np.linspace(0, P, shards + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)
            if b > a]


def _take(tree: Mapping[str, Any] | None, part: slice) -> dict[str, Any] | None:
    return None if tree is None else {k: v[part].clone() for k, v in tree.items()}


def _concat(parts: list[Mapping[str, Any]]) -> dict[str, Any]:
    import torch

    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _shard_round(member_loss, params, buffers, state, hparams, batches, fitness, start, stop,
                 functorch_grad):
    """Worker side: train one shard for steps ``start..stop-1``; return it with fitness."""
    import torch

    params, state = train_segment(member_loss, params, buffers, state, hparams, batches,
                                  start, stop, functorch_grad=functorch_grad)
    like = next(iter(params.values()))
    hpt = {k: torch.as_tensor(v, dtype=like.dtype) for k, v in hparams.items() if k != "lr"}
    fit = np.asarray(fitness(params, buffers, hpt), dtype=np.float64)
    return params, state, fit


def train_population_dask(
    member_loss: Callable[..., Any],
    params: Mapping[str, Any],
    hparams: Mapping[str, Any],
    batches: Callable[[int], Any],
    fitness: Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], np.ndarray],
    *,
    steps: int,
    exploit_every: int | None = None,
    buffers: Mapping[str, Any] | None = None,
    bottom_frac: float = 0.25,
    prior: Mapping[str, Any] | None = None,
    rng: Any = 0,
    workers: int | None = None,
    client: Any = None,
    functorch_grad: bool = True,
) -> PopulationRun:
    """:func:`~structattn.population.train_population` with the members on dask workers.

    Parameters
    ----------
    member_loss, params, hparams, batches, fitness, steps, exploit_every, buffers,
    bottom_frac, prior, rng, functorch_grad
        As :func:`~structattn.population.train_population` (the callables travel to the
        workers with cloudpickle: module-level or local functions both work).
    workers : int, optional
        Shards (and LocalCluster processes when no ``client`` is given); default 2.  At
        most ``P`` shards are used.
    client : distributed.Client, optional
        An existing cluster (its workers take the shards).

    Returns
    -------
    PopulationRun
        As the serial loop's, ``history`` included.

    Notes
    -----
    Per round: one task per shard (``O(exploit_every · shard cost)``), then the driver
    gathers ``O(P · parameters)`` bytes, selects and explores.  Worth it when a shard's
    round costs much more than moving the population's parameters twice.
    """
    import torch

    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ImportError("train_population_dask needs dask.distributed: "
                          "pip install 'structattn[distributed]'") from exc
    steps = check_int(steps, "steps", minimum=0)
    if exploit_every is not None:
        exploit_every = check_int(exploit_every, "exploit_every", minimum=1)
        if prior is None:
            raise ValueError("exploit_every needs a prior= to explore from")
    hp = {k: np.array(v, dtype=np.float64) for k, v in hparams.items()}
    P = len(hp["lr"])
    shards = _slices(P, min(check_int(2 if workers is None else workers, "workers",
                                      minimum=1), P))
    gen = np.random.default_rng(rng)
    params = {k: v.detach().clone() for k, v in params.items()}
    buffers = {k: v.detach().clone() for k, v in (buffers or {}).items()}
    state: dict[str, Any] | None = None
    own = client is None
    cluster = None
    if own:
        cluster = LocalCluster(n_workers=len(shards), threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    history: list[dict[str, Any]] = []
    try:
        ends = list(range(exploit_every, steps, exploit_every)) if exploit_every else []
        start = 0
        fit = None
        for stop in [*ends, steps]:
            futures = [client.submit(
                _shard_round, member_loss, _take(params, s), _take(buffers, s),
                None if state is None else {"m": _take(state["m"], s),
                                            "v": _take(state["v"], s), "t": state["t"]},
                {k: v[s] for k, v in hp.items()}, batches, fitness, start, stop,
                functorch_grad, pure=False) for s in shards]
            results = client.gather(futures)
            params = _concat([r[0] for r in results])
            if stop > 0 and results[0][1] is not None:
                state = {"m": _concat([r[1]["m"] for r in results]),
                         "v": _concat([r[1]["v"] for r in results]),
                         "t": results[0][1]["t"]}
            fit = np.concatenate([r[2] for r in results])
            start = stop
            if stop == steps:
                break
            copies = pbt_truncation(fit, bottom_frac=bottom_frac, rng=gen)
            if copies:
                dst = torch.as_tensor(list(copies))
                src = torch.as_tensor(list(copies.values()))
                for tree in (params, buffers, *(() if state is None
                                                 else (state["m"], state["v"]))):
                    for k in tree:
                        tree[k] = tree[k].clone()
                        tree[k][dst] = tree[k][src]
                hp = pbt_explore(hp, copies, prior=prior, rng=gen)
            history.append({"step": stop, "fitness": fit.tolist(),
                            "copies": {int(a): int(b) for a, b in copies.items()}})
    finally:
        if own:
            client.close()
            cluster.close()
    history.append({"step": steps, "fitness": fit.tolist(), "copies": {}})
    return PopulationRun(params, buffers, hp, fit, history)

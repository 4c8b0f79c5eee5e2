"""Vectorized populations: batched hyper-parameter maps and population-based training.

One batched computation over ``P`` members (the population axis leads every stacked
array) instead of ``P`` calls — after Flajolet et al., "Fast Population-Based
Reinforcement Learning on a Single Machine" (ICML 2022).  See ``docs/population.rst``.

* :func:`population_map` — an operator over a hyper-parameter grid, one batched call when
  every varied hyper-parameter is batchable (:data:`BATCHABLE`), else a loop;
* :func:`stack_params` / :func:`unstack_params`, :func:`adam_step` (per-member learning
  rates), :class:`VectorizedLinear` (torch);
* :func:`pbt_truncation`, :func:`pbt_explore`, :func:`sample_prior`,
  :func:`dvd_diversity`, :func:`cem_update`;
* :func:`train_population` (vectorized PBT loop, torch) and
  :func:`train_population_dask` (the same with shards of the population on
  dask.distributed workers, exploit/explore across workers).
"""

from __future__ import annotations

from typing import Any

from ._batched import StackedDecayedCausal, stack_feature_maps
from ._core import adam_step, stack_params, unstack_params
from ._map import (
    BATCHABLE,
    LOOP_ABOVE,
    OPERATORS,
    MapInfo,
    PopulationOperator,
    batchable,
    population_map,
    population_operator,
)
from .pbt import cem_update, dvd_diversity, pbt_explore, pbt_truncation, sample_prior

__all__ = [
    "BATCHABLE",
    "LOOP_ABOVE",
    "OPERATORS",
    "MapInfo",
    "PopulationOperator",
    "StackedDecayedCausal",
    "VectorizedLinear",
    "adam_step",
    "batchable",
    "cem_update",
    "dvd_diversity",
    "pbt_explore",
    "pbt_truncation",
    "population_map",
    "population_operator",
    "sample_prior",
    "stack_feature_maps",
    "stack_params",
    "train_population",
    "train_population_dask",
    "unstack_params",
]


def __getattr__(name: str) -> Any:
    if name == "VectorizedLinear":  # torch-only; imported on first use
        from ._layers import VectorizedLinear

        return VectorizedLinear
    if name == "train_population":  # torch-only
        from .train import train_population

        return train_population
    if name == "train_population_dask":  # torch + dask.distributed
        from .distributed import train_population_dask

        return train_population_dask
    raise AttributeError(f"module 'structattn.population' has no attribute {name!r}")

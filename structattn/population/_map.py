"""``population_map``: run an operator over a hyper-parameter grid, batched or looped."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._array import is_torch, namespace
from ..attention import kernel_attention, softmax_attention
from ..features import PositiveRandomFeatures, TrigonometricRandomFeatures
from ..masks import DecayedCausal
from ._batched import StackedDecayedCausal, member_shape, stack_feature_maps

__all__ = ["BATCHABLE", "MapInfo", "PopulationOperator", "batchable", "population_map",
           "population_operator"]


@dataclass(frozen=True)
class PopulationOperator:
    """An attention operator with a one-member call and, optionally, a batched call.

    Attributes
    ----------
    name : str
    member : callable
        ``member(q, k, v, **params) -> (..., L_q, d_v)``: one member.
    batched : callable or None
        ``batched(q, k, v, grid, **fixed) -> (P, ..., L_q, d_v)`` with ``grid`` a dict of
        ``(P,)`` arrays over names in ``batchable``; inputs shared by every member.
    batchable : tuple of str
        The hyper-parameters ``batched`` accepts as ``(P,)`` arrays.
    """

    name: str
    member: Callable[..., Any]
    batched: Callable[..., Any] | None
    batchable: tuple[str, ...]


def _broadcast_inputs(P: int, *xs: Any) -> list[Any]:
    out = []
    for x in xs:
        xp = namespace(x)
        out.append(xp.broadcast_to(x[None], (P, *x.shape)))
    return out


# ---------------------------------------------------------------- exact softmax
def _softmax_member(q: Any, k: Any, v: Any, *, scale: float | None = None, **kw: Any) -> Any:
    return softmax_attention(q, k, v, scale=scale, **kw)


def _softmax_batched(q: Any, k: Any, v: Any, grid: Mapping[str, Any], **kw: Any) -> Any:
    P = len(next(iter(grid.values()))) if grid else 1
    qb, kb, vb = _broadcast_inputs(P, q, k, v)
    if "scale" in grid:  # exp(q·k·s_p) = exp((s_p q)·k): scale the queries per member
        qb = qb * member_shape(grid["scale"], q, qb.ndim)
        return softmax_attention(qb, kb, vb, scale=1.0, **kw)
    return softmax_attention(qb, kb, vb, **kw)


# ------------------------------------------------------------- random features
def _feature_member(cls: type, **opts: Any) -> Callable[..., Any]:
    def member(q: Any, k: Any, v: Any, *, seed: int = 0, num_features: int = 128,
               scale: float | None = None, gamma: float | None = None, causal: bool = False,
               **kw: Any) -> Any:
        phi = cls(dim=q.shape[-1], num_features=int(num_features), seed=int(seed),
                  scale=None if scale is None else float(scale), **opts)
        if gamma is not None:
            mask = DecayedCausal(q.shape[-2], float(gamma))
            return kernel_attention(q, k, v, phi, mask=mask, **kw)
        return kernel_attention(q, k, v, phi, causal=causal, **kw)

    return member


def _feature_batched(cls: type, **opts: Any) -> Callable[..., Any]:
    def batched(q: Any, k: Any, v: Any, grid: Mapping[str, Any], *, seed: int = 0,
                num_features: int = 128, scale: float | None = None,
                gamma: float | None = None, causal: bool = False, **kw: Any) -> Any:
        P = len(next(iter(grid.values())))
        seeds = grid.get("seed", [seed] * P)
        scales = grid.get("scale", [scale] * P)
        maps = [cls(dim=q.shape[-1], num_features=int(num_features), seed=int(s),
                    scale=None if t is None else float(t), **opts)
                for s, t in zip(seeds, scales, strict=True)]
        qb, kb, vb = _broadcast_inputs(P, q, k, v)
        phi = stack_feature_maps(maps, batch_ndim=q.ndim - 2)
        gammas = grid.get("gamma", None if gamma is None else [gamma] * P)
        if gammas is not None:
            mask = StackedDecayedCausal(q.shape[-2], np.asarray(gammas, dtype=np.float64),
                                        batch_ndim=q.ndim - 2)
            return kernel_attention(qb, kb, vb, phi, mask=mask, **kw)
        return kernel_attention(qb, kb, vb, phi, causal=causal, **kw)

    return batched


def _features_op(name: str, cls: type, **opts: Any) -> PopulationOperator:
    return PopulationOperator(name, _feature_member(cls, **opts), _feature_batched(cls, **opts),
                              ("seed", "scale", "gamma"))


#: Population operators by name.  The random-feature entries take ``num_features``
#: (fixed: it changes array shapes), ``seed``/``scale`` (temperature) and an optional
#: decay ``gamma`` (a decayed causal mask); every one of these three is batchable.
OPERATORS: dict[str, PopulationOperator] = {
    op.name: op
    for op in (
        PopulationOperator("exact", _softmax_member, _softmax_batched, ("scale",)),
        _features_op("performer", PositiveRandomFeatures),
        _features_op("performer-iid", PositiveRandomFeatures, orthogonal=False),
        _features_op("performer-hyperbolic", PositiveRandomFeatures, hyperbolic=True),
        _features_op("rfa-trig", TrigonometricRandomFeatures),
    )
}

#: Batchable hyper-parameters per study-registry entry
#: (:mod:`structattn.studies.registry` names); entries not listed are loop-only.
BATCHABLE: dict[str, tuple[str, ...]] = {name: op.batchable for name, op in OPERATORS.items()}


def batchable(name: str) -> tuple[str, ...]:
    """The batchable hyper-parameters of registry entry ``name`` (``()`` if none)."""
    return BATCHABLE.get(name, ())


def population_operator(fn: Any) -> PopulationOperator:
    """Resolve ``fn`` (a name, a :class:`PopulationOperator`, or a callable)."""
    if isinstance(fn, PopulationOperator):
        return fn
    if isinstance(fn, str):
        if fn not in OPERATORS:
            raise ValueError(f"unknown population operator {fn!r}; known: {sorted(OPERATORS)}")
        return OPERATORS[fn]
    if fn is softmax_attention:
        return OPERATORS["exact"]
    if callable(fn):
        return PopulationOperator(getattr(fn, "__name__", "fn"), fn, None, ())
    raise TypeError(f"fn must be a callable, an operator name or a PopulationOperator, got {fn!r}")


@dataclass(frozen=True)
class MapInfo:
    """What :func:`population_map` ran.

    Attributes
    ----------
    vectorized : bool
        True: one batched call; False: a loop of ``P`` calls.
    population : int
    reason : str
        Why the loop ran (empty when vectorized).
    seconds : float
        Wall time of the call.
    """

    vectorized: bool
    population: int
    reason: str
    seconds: float


def _grid(grid: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    if not isinstance(grid, Mapping) or not grid:
        raise ValueError("grid must be a non-empty dict name -> (P,) values")
    out, sizes = {}, set()
    for name, values in grid.items():
        arr = values.detach().cpu().numpy() if is_torch(values) else np.asarray(values)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"grid[{name!r}] must be a non-empty 1-D sequence, got shape "
                             f"{arr.shape}")
        out[name] = arr
        sizes.add(arr.size)
    if len(sizes) != 1:
        raise ValueError(f"every grid entry needs the same length P, got {sorted(sizes)}")
    return out, sizes.pop()


def population_map(
    fn: Any,
    grid: Mapping[str, Any],
    *inputs: Any,
    vectorize: bool | str = "auto",
    return_info: bool = False,
    **fixed: Any,
) -> Any:
    """Evaluate ``fn`` for every member of a hyper-parameter grid, stacked on axis 0.

    Parameters
    ----------
    fn : str, PopulationOperator or callable
        A name of :data:`OPERATORS` (``"exact"``, ``"performer"``, …),
        :func:`~structattn.softmax_attention`, or any callable ``fn(*inputs, **params)``
        (loop only).
    grid : dict[str, sequence of length P]
        The varied hyper-parameters, member ``p`` taking ``grid[name][p]``.
    *inputs : arrays
        Shared by every member, e.g. ``q, k, v`` of shape ``(..., L, d)``.
    vectorize : {"auto", True, False}
        ``"auto"``: one batched call when every varied name is batchable for ``fn``, else
        a loop; True: require the batched call (``ValueError`` otherwise); False: loop.
    return_info : bool
        Also return a :class:`MapInfo` saying which path ran.
    **fixed
        Hyper-parameters shared by every member (e.g. ``num_features=64``,
        ``causal=True``, ``backend="numpy"``).

    Returns
    -------
    array or tuple
        ``(P, *out_shape)`` outputs, or ``(array, MapInfo)`` with ``return_info=True``.
        The loop and the batched call agree to rounding.

    Notes
    -----
    The batched path does the loop's work in ``O(1)`` calls: same flops, one dispatch.
    """
    op = population_operator(fn)
    values, P = _grid(grid)
    missing = sorted(set(values) - set(op.batchable))
    possible = op.batched is not None and not missing
    if vectorize == "auto":
        vec = possible
    elif vectorize is True or vectorize is False:
        vec = bool(vectorize)
        if vec and not possible:
            raise ValueError(
                f"vectorize=True but {op.name!r} cannot batch "
                f"{missing if op.batched is not None else 'anything'} "
                f"(batchable: {list(op.batchable)})"
            )
    else:
        raise ValueError(f"vectorize must be 'auto', True or False, got {vectorize!r}")
    clash = sorted(set(values) & set(fixed))
    if clash:
        raise ValueError(f"{clash} given both in grid and as fixed keyword arguments")
    start = time.perf_counter()
    if vec:
        out = op.batched(*inputs, values, **fixed)
        reason = ""
    else:
        outs = [op.member(*inputs, **fixed, **{n: v[p].item() for n, v in values.items()})
                for p in range(P)]
        xp = namespace(outs[0])
        out = xp.stack(outs, axis=0)
        reason = ("vectorize=False" if vectorize is False else
                  f"{op.name!r} has no batched call" if op.batched is None else
                  f"not batchable: {missing}")
    info = MapInfo(vec, P, reason, time.perf_counter() - start)
    return (out, info) if return_info else out

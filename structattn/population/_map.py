"""``population_map``: run an operator over a hyper-parameter grid, batched or looped."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._array import dtype_name, is_torch, namespace
from ..attention import kernel_attention, softmax_attention
from ..features import PositiveRandomFeatures, TrigonometricRandomFeatures
from ..masks import DecayedCausal
from ._batched import StackedDecayedCausal, member_shape, stack_feature_maps
from ._draws import feature_map, feature_maps
from ._favor import favor_population, supports
from ._softmax import softmax_population

__all__ = ["BATCHABLE", "LOOP_ABOVE", "MapInfo", "PopulationOperator", "batchable",
           "population_map", "population_operator"]


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
    loop_above : int or None
        ``vectorize="auto"`` runs the loop when the inputs are longer than this many
        tokens (None: always batched).  Above it one member's call costs
        milliseconds, its dispatch overhead is below a few percent, and the single
        call's own fused kernels (numba feature passes, the chunked causal scan) are
        as fast per member as the batched core — measured at L = 4096, d = 64,
        m = 128, P = 4 (2 cores, under load): batched/loop CPU time 1.16 (FAVOR+) and
        1.10 (decayed causal) against 0.25 at L = 128.
    """

    name: str
    member: Callable[..., Any]
    batched: Callable[..., Any] | None
    batchable: tuple[str, ...]
    loop_above: int | None = None


def _broadcast_inputs(P: int, *xs: Any) -> list[Any]:
    out = []
    for x in xs:
        xp = namespace(x)
        out.append(xp.broadcast_to(x[None], (P, *x.shape)))
    return out


def _cpu_numpy(core: Callable[..., Any], q: Any, k: Any, v: Any, *args: Any,
               **kw: Any) -> Any:
    """Run a batched ``core``; torch CPU tensors outside autograd run its numpy form.

    ``Tensor.numpy()`` and ``torch.from_numpy`` are zero-copy views, and numpy's
    element-wise passes (the exponentials of every member) are the faster ones on CPU.
    Tensors that autograd records, or that live on an accelerator, stay on torch.
    """
    if not is_torch(q):
        return core(q, k, v, *args, **kw)
    import torch

    tracked = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))
    if tracked or any(x.device.type != "cpu" for x in (q, k, v)):
        return core(q, k, v, *args, **kw)
    if kw.get("backend") == "torch":
        kw["backend"] = "auto"
    out = core(*(x.detach().numpy() for x in (q, k, v)), *args, **kw)
    return torch.from_numpy(np.ascontiguousarray(out))


# ---------------------------------------------------------------- exact softmax
def _softmax_member(q: Any, k: Any, v: Any, *, scale: float | None = None, **kw: Any) -> Any:
    return softmax_attention(q, k, v, scale=scale, **kw)


def _softmax_batched(q: Any, k: Any, v: Any, grid: Mapping[str, Any], **kw: Any) -> Any:
    P = len(next(iter(grid.values()))) if grid else 1
    if "scale" in grid and set(kw) <= {"causal", "check_finite", "backend"} \
            and dtype_name(q) in ("float32", "float64") and q.shape[-2] and k.shape[-2]:
        kw.pop("backend", None)  # numpy, numba and torch run the same array code here
        return _cpu_numpy(softmax_population, q, k, v, grid["scale"], **kw)
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
        phi = feature_map(cls, q.shape[-1], num_features, seed, scale, opts)
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
        maps = feature_maps(cls, q.shape[-1], num_features, seeds, scales, opts)
        gammas = grid.get("gamma", None if gamma is None else [gamma] * P)
        if set(kw) <= {"backend", "check_finite"} and supports(maps) \
                and dtype_name(q) in ("float32", "float64") and q.shape[-2] and k.shape[-2]:
            return _cpu_numpy(favor_population, q, k, v, maps, causal=causal, gammas=gammas,
                              **kw)
        qb, kb, vb = _broadcast_inputs(P, q, k, v)
        phi = stack_feature_maps(maps, batch_ndim=q.ndim - 2)
        if gammas is not None:
            mask = StackedDecayedCausal(q.shape[-2], np.asarray(gammas, dtype=np.float64),
                                        batch_ndim=q.ndim - 2)
            return kernel_attention(qb, kb, vb, phi, mask=mask, **kw)
        return kernel_attention(qb, kb, vb, phi, causal=causal, **kw)

    return batched


#: Sequence length above which ``vectorize="auto"`` loops over random-feature members
#: (see :attr:`PopulationOperator.loop_above`).
LOOP_ABOVE = 1024


def _features_op(name: str, cls: type, **opts: Any) -> PopulationOperator:
    return PopulationOperator(name, _feature_member(cls, **opts), _feature_batched(cls, **opts),
                              ("seed", "scale", "gamma"), loop_above=LOOP_ABOVE)


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


def _longest(inputs: tuple[Any, ...]) -> int:
    """The longest sequence axis (``shape[-2]``) among array inputs (0 if none)."""
    return max((int(x.shape[-2]) for x in inputs if getattr(x, "ndim", 0) >= 2), default=0)


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
        ``"auto"``: one batched call when every varied name is batchable for ``fn`` and
        the inputs are at most ``loop_above`` tokens long (random-feature operators:
        :data:`LOOP_ABOVE`; exact softmax: always), else a loop; True: require the
        batched call (``ValueError`` otherwise); False: loop.
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
    The batched path is one math core per operator family: exact softmax shares the
    score matrix ``Q Kᵀ`` and its row maxima among the temperatures
    (:func:`~._softmax.softmax_population`); FAVOR+ computes every member's features
    in GEMMs with the population folded into the columns and runs the causal /
    decayed-causal products batched over members (:func:`~._favor.favor_population`);
    projections are drawn once per seed (:mod:`._draws`).  Work per member is the
    loop's (softmax: less), in ``O(P / B)`` calls for blocks of ``B`` members that stay
    in cache.  Other random-feature maps and explicit ``mask=`` arguments use stacked
    feature maps and :func:`~structattn.kernel_attention` on broadcast inputs.
    """
    op = population_operator(fn)
    values, P = _grid(grid)
    missing = sorted(set(values) - set(op.batchable))
    possible = op.batched is not None and not missing
    long = _longest(inputs)
    too_long = op.loop_above is not None and long > op.loop_above
    if vectorize == "auto":
        vec = possible and not too_long
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
                  f"not batchable: {missing}" if missing else
                  f"auto: L = {long} > {op.loop_above}, the loop of single calls is as "
                  "fast per member")
    info = MapInfo(vec, P, reason, time.perf_counter() - start)
    return (out, info) if return_info else out

"""Batched hyper-parameters for attention operators (the population axis leads).

A population of ``P`` operators that differ only in *batchable* hyper-parameters runs
as one call on inputs broadcast to ``(P, ..., L, d)``:

* softmax temperature ``scale`` — the queries are scaled per member, ``scale=1``;
* random-feature ``seed`` and ``scale`` — :func:`stack_feature_maps` stacks the
  members' projections ``(P, m, d)`` (the very draws each member makes alone) and
  temperatures;
* decay ``gamma`` — :class:`StackedDecayedCausal`, a ``(P, 1, …)``-batched decayed
  causal mask running the chunked scan of :mod:`structattn.backends.scan` with
  per-member tables.

Feature *counts* change array shapes and are never batchable.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._array import as_like, is_torch, namespace
from ..backends.scan import DEFAULT_CHUNK_SIZE, _decay_tables, _torch_tables
from ..features import KEY_LOG_HEADROOM, RandomFeatureMap
from ..masks import Mask

__all__ = ["StackedDecayedCausal", "member_shape", "stack_feature_maps"]


def member_shape(values: Any, like: Any, ndim: int) -> Any:
    """``values (P,)`` on ``like``'s kind/dtype/device, reshaped to ``(P, 1, …)`` (``ndim``)."""
    arr = np.asarray(values, dtype=np.float64)
    return as_like(arr.reshape((arr.shape[0],) + (1,) * (ndim - 1)), like)


# ------------------------------------------------------------ stacked feature maps
@functools.cache
def _stacked_class(cls: type) -> type:
    """A subclass of ``cls`` whose projection and temperature carry a population axis."""

    def _stack(self: Any, like: Any) -> tuple[Any, Any]:
        key = ("stack", str(getattr(like, "device", "cpu")), str(like.dtype), is_torch(like))
        cache = self.__dict__.setdefault("_sa_stack_cache", {})
        if key not in cache:
            nd = self._sa_batch_ndim
            W = self._sa_projections  # (P, m, d)
            P = W.shape[0]
            W = W.reshape((P,) + (1,) * nd + W.shape[1:])
            root_t = np.sqrt(self._sa_temperatures).reshape((P,) + (1,) * (nd + 2))
            cache[key] = (as_like(W, like), as_like(root_t, like))
        return cache[key]

    def _projected(self: Any, x: Any) -> tuple[Any, Any]:
        xp = namespace(x)
        W, root_t = _stack(self, x)
        xs = x * root_t
        proj = xs @ xp.matrix_transpose(W)
        half_sq = xp.sum(xs * xs, axis=-1, keepdims=True) / 2
        return proj, half_sq

    def _feature_bounds(self: Any, dtype: str) -> np.ndarray:
        half_sq = 0.5 * np.sum(self._sa_projections**2, axis=-1)  # (P, m)
        if getattr(self, "hyperbolic", False):
            half_sq = np.concatenate([half_sq, half_sq], axis=-1)
        P = half_sq.shape[0]
        out = half_sq - KEY_LOG_HEADROOM[dtype]
        return out.reshape((P,) + (1,) * self._sa_batch_ndim + (1, out.shape[-1]))

    def _key_bound(self: Any, like: Any) -> float:
        from .._array import dtype_name

        half_sq = 0.5 * float(np.max(np.sum(self._sa_projections**2, axis=-1)))
        return half_sq - KEY_LOG_HEADROOM[dtype_name(like)]

    def _check(self: Any, x: Any, name: str) -> None:
        cls._check(self, x, name)
        P = self._sa_projections.shape[0]
        if x.ndim != self._sa_batch_ndim + 3 or x.shape[0] != P:
            raise ValueError(
                f"{name} must have shape (P={P}, <{self._sa_batch_ndim} batch dims>, L, d) for "
                f"a stacked feature map, got {tuple(x.shape)}"
            )

    ns = {"_projected": _projected, "_feature_bounds": _feature_bounds,
          "_key_bound": _key_bound, "_check": _check,
          "__doc__": f"``{cls.__name__}`` with a leading population axis (see "
                     "stack_feature_maps)."}
    return type(f"Stacked{cls.__name__}", (cls,), ns)


def stack_feature_maps(maps: list[RandomFeatureMap], batch_ndim: int) -> RandomFeatureMap:
    """One feature map computing ``P`` random-feature maps on inputs ``(P, *batch, L, d)``.

    Parameters
    ----------
    maps : list of RandomFeatureMap
        ``P`` maps of one class with equal ``dim``, ``num_features`` and options; they
        may differ in their projections (seeds) and temperatures (``scale``).
    batch_ndim : int
        Number of batch dimensions between the population axis and ``(L, d)``.

    Returns
    -------
    RandomFeatureMap
        Member ``p`` of its output equals ``maps[p]`` applied to input ``p`` (same
        draws, same stabilizers, to rounding).

    Notes
    -----
    ``O(P·L·m·d)`` — the same work as the loop, in one batched matmul.
    """
    if not maps:
        raise ValueError("maps must hold at least one feature map")
    first = maps[0]
    cls = type(first)
    if not isinstance(first, RandomFeatureMap):
        raise TypeError(f"maps must be RandomFeatureMaps, got {cls.__name__}")
    fixed = ("dim", "num_features", "orthogonal", "hyperbolic", "eps")
    for i, m in enumerate(maps):
        if type(m) is not cls:
            raise TypeError(f"maps[{i}] is a {type(m).__name__}, expected {cls.__name__}")
        for f in fixed:
            if getattr(m, f, None) != getattr(first, f, None):
                raise ValueError(f"maps[{i}].{f} differs from maps[0]: feature maps of a "
                                 "population may differ only in seed and scale")
    kwargs = {f: getattr(first, f) for f in ("dim", "num_features", "orthogonal", "scale")}
    for f in ("hyperbolic", "eps"):
        if hasattr(first, f):
            kwargs[f] = getattr(first, f)
    stacked = _stacked_class(cls)(projection=first.projection, **kwargs)
    object.__setattr__(stacked, "_sa_projections", np.stack([m.projection for m in maps]))
    object.__setattr__(stacked, "_sa_temperatures",
                       np.asarray([m.temperature for m in maps], dtype=np.float64))
    object.__setattr__(stacked, "_sa_batch_ndim", int(batch_ndim))
    return stacked


# --------------------------------------------------------- stacked decayed causal mask
@dataclass(frozen=True, eq=False)
class StackedDecayedCausal(Mask):
    """``P`` decayed causal masks ``M_p[i, j] = gamma_p**(i - j)`` (``j <= i``), batched.

    Parameters
    ----------
    L : int
        Sequence length.
    gammas : array, shape (P,)
        Decays in ``(0, 1]``.
    batch_ndim : int
        Batch dimensions after the population axis: ``batch_shape = (P, 1, …, 1)``.

    Notes
    -----
    ``masked_matmul`` runs the chunked scan (chunk ``C``) with per-member tables:
    ``O(P·L·m·d_v)`` time, one ``m x d_v`` state per member.  Equal to the loop over
    :class:`~structattn.masks.DecayedCausal` to rounding.
    """

    L: int
    gammas: Any
    batch_ndim: int = 0

    lower_triangular = True

    def __post_init__(self) -> None:
        g = np.asarray(self.gammas, dtype=np.float64)
        if g.ndim != 1 or g.size == 0 or not np.all((g > 0) & (g <= 1)):
            raise ValueError(
                f"gammas must be a non-empty (P,) array in (0, 1], got {self.gammas!r}"
            )
        if isinstance(self.L, bool) or not isinstance(self.L, (int, np.integer)) or self.L < 1:
            raise ValueError(f"L must be a positive int, got {self.L!r}")
        object.__setattr__(self, "gammas", g)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.L), int(self.L))

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return (self.gammas.size,) + (1,) * int(self.batch_ndim)

    def _tables(self, C: int, like: Any) -> tuple[Any, Any, Any]:
        shape = self.batch_shape
        if is_torch(like):
            import torch

            parts = [_torch_tables(float(g), False, C, like) for g in self.gammas]
            return tuple(torch.stack([p[i] for p in parts]).reshape(shape + parts[0][i].shape)
                         for i in range(3))
        decay, w_in, w_out = [], [], []
        for g in self.gammas:
            d, powers = _decay_tables(float(g), False, C)
            decay.append(d)
            w_in.append(powers[1 : C + 1, None])
            w_out.append(powers[C - 1 :: -1, None])
        return tuple(as_like(np.stack(t).reshape(shape + t[0].shape), like)
                     for t in (decay, w_in, w_out))

    def _masked_matmul(self, A: Any, B: Any, V: Any, backend: str) -> Any:
        xp = namespace(A, B, V)
        L = A.shape[-2]
        C = max(1, min(DEFAULT_CHUNK_SIZE, L))
        decay, w_in, w_out = self._tables(C, A)
        state, outs = None, []
        for s in range(0, L, C):
            e = min(s + C, L)
            c = e - s
            a, b, v = A[..., s:e, :], B[..., s:e, :], V[..., s:e, :]
            y = ((a @ xp.matrix_transpose(b)) * decay[..., :c, :c]) @ v
            if state is not None:
                y = y + (a * w_in[..., :c, :]) @ state
            if e < L:
                contrib = xp.matrix_transpose(b * w_out[..., C - c :, :]) @ v
                if state is None:
                    state = contrib
                else:
                    with np.errstate(under="ignore"):
                        gc = member_shape(self.gammas**c, A, len(self.batch_shape) + 2)
                    state = contrib + state * gc
            outs.append(y)
        return outs[0] if len(outs) == 1 else xp.concat(outs, axis=-2)

    def _matmat(self, X: Any, backend: str) -> Any:
        xp = namespace(X)
        batch = tuple(np.broadcast_shapes(tuple(X.shape[:-2]), self.batch_shape))
        ones = xp.broadcast_to(as_like(np.ones((self.L, 1)), X), (*batch, self.L, 1))
        return self._masked_matmul(ones, ones, xp.broadcast_to(X, (*batch, *X.shape[-2:])),
                                   backend)

    def _rmatmat(self, X: Any, backend: str) -> Any:
        xp = namespace(X)
        return xp.flip(self._matmat(xp.flip(X, axis=-2), backend), axis=-2)

    def _to_dense(self, like: Any) -> Any:
        i = np.arange(self.L)
        diff = i[:, None] - i[None, :]
        with np.errstate(under="ignore"):
            dense = np.where(diff >= 0, self.gammas[:, None, None] ** np.maximum(diff, 0), 0.0)
        return as_like(dense.reshape(self.batch_shape + dense.shape[1:]), like)

    def cost(self, F: int) -> float:
        return 2.0 * self.L * F * self.gammas.size

    def _structure(self) -> str:
        return f"{self.gammas.size} decayed causal scans with m x d_v states: O(P·L·m·d_v)"

    def __repr__(self) -> str:
        return f"StackedDecayedCausal(L={self.L}, P={self.gammas.size})"

    @property
    def population(self) -> int:
        """``P``."""
        return int(self.gammas.size)



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
from ..backends.scan import GROUP_TOKENS, choose_chunk_size
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
    ``masked_matmul`` runs the chunked-GEMM scan (chunk ``C`` of the cost model) with
    per-member tables: ``O(P·L·(C·(m + d_v) + m·d_v))`` time in batched GEMMs, one
    ``m x d_v`` state per member.  Equal to the loop over
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

    def _tables(self, C: int, like: Any) -> tuple[Any, Any, Any, Any]:
        """Per-member ``D`` (C x C), ``w_in``, ``w_out`` (C x 1) and ``gamma**C``.

        Shapes ``batch_shape + table shape``, in ``like``'s kind, dtype and device;
        cached per chunk length, kind, dtype and device (built once per mask).
        """
        key = (C, is_torch(like), str(like.dtype), str(getattr(like, "device", "")))
        cache = self.__dict__.setdefault("_sa_tables", {})
        if key not in cache:
            idx = np.arange(C)
            diff = (idx[:, None] - idx[None, :]).astype(np.float64)
            g = self.gammas[:, None, None]
            with np.errstate(under="ignore"):
                decay = np.where(diff >= 0, g ** np.maximum(diff, 0.0), 0.0)
                powers = g[:, :, 0] ** np.arange(C + 1, dtype=np.float64)  # (P, C+1)
                g_chunk = self.gammas**C
            shape = self.batch_shape
            tables = (decay, powers[:, 1 : C + 1, None], powers[:, C - 1 :: -1, None],
                      g_chunk[:, None, None])
            cache[key] = tuple(as_like(t.reshape(shape + t.shape[1:]), like)
                               for t in tables)
        return cache[key]

    def _masked_matmul(self, A: Any, B: Any, V: Any, backend: str) -> Any:
        """The chunked-GEMM causal scan with per-member decay tables.

        The algorithm of :func:`structattn.backends.scan.causal_masked_matmul` (chunks
        of ``C`` tokens from :func:`~structattn.backends.scan.choose_chunk_size`, groups
        of chunks whose intra-chunk products are batched GEMMs, one carried ``m x d_v``
        state per member), with ``gamma`` a ``(P, 1, …)`` array instead of a scalar.
        """
        xp = namespace(A, B, V)
        batch = tuple(np.broadcast_shapes(tuple(A.shape[:-2]), tuple(B.shape[:-2]),
                                          tuple(V.shape[:-2]), self.batch_shape))
        L, m, dv = A.shape[-2], A.shape[-1], V.shape[-1]
        A, B, V = (xp.broadcast_to(x, (*batch, *x.shape[-2:])) for x in (A, B, V))
        itemsize = 8 if "64" in str(A.dtype) else 4
        C = max(1, min(choose_chunk_size(m, dv, itemsize), L))
        nc = -(-L // C)
        pad = nc * C - L
        if pad:
            def _pad(x: Any) -> Any:
                z = xp.zeros_like(x[..., :1, :])
                return xp.concat([x, xp.broadcast_to(z, (*batch, pad, x.shape[-1]))],
                                 axis=-2)

            A, B, V = _pad(A), _pad(B), _pad(V)
        A4, B4, V4 = (xp.reshape(x, (*batch, nc, C, x.shape[-1])) for x in (A, B, V))
        decay, w_in, w_out, g_chunk = (t[..., None, :, :] for t in self._tables(C, A))
        g_chunk = g_chunk[..., 0, :, :]
        G = max(1, (GROUP_TOKENS * (m + dv)) // (C * C + m * dv + C * (m + dv)))
        state, outs = None, []
        for g0 in range(0, nc, G):
            g1 = min(g0 + G, nc)
            a, b, v = A4[..., g0:g1, :, :], B4[..., g0:g1, :, :], V4[..., g0:g1, :, :]
            y = ((a @ xp.matrix_transpose(b)) * decay) @ v  # batched over members, chunks
            contrib = xp.matrix_transpose(b * w_out) @ v  # (..., G, m, dv)
            if state is None:
                state = xp.zeros_like(contrib[..., 0, :, :])
            prev = []
            for k in range(g1 - g0):  # S_{k+1} = gamma_p**C S_k + contrib_k
                prev.append(state)
                state = contrib[..., k, :, :] + state * g_chunk
            y = y + (a * w_in) @ xp.stack(prev, axis=-3)
            outs.append(xp.reshape(y, (*batch, (g1 - g0) * C, dv)))
        out = outs[0] if len(outs) == 1 else xp.concat(outs, axis=-2)
        return out[..., :L, :] if pad else out

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



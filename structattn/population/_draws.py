"""Random-feature maps of a population: batched projection draws and a draw cache.

Member ``p`` of a random-feature population is the map
``cls(dim, num_features, seed=seeds[p], scale=scales[p], **opts)`` — its projection
is a deterministic function of ``(seed, dim, num_features, orthogonal)``.  Two costs
of building ``P`` such maps are per-member overhead rather than arithmetic:

* the orthogonal draw is ``ceil(m/d)`` small QR factorizations per member, each a
  separate LAPACK call with its Python and dispatch overhead (~0.1-0.2 ms each,
  against ``O(d³)`` flops); :func:`orthogonal_draws` draws every member's Gaussian
  blocks from the member's own generator (the very stream
  :func:`~structattn.features.orthogonal_gaussian` consumes) and factorizes all
  ``P·ceil(m/d)`` blocks in **one** batched ``numpy.linalg.qr`` call;
* repeated sweeps redraw the same seeds: :func:`feature_maps` keeps the last
  :data:`CACHE_SIZE` maps (they are immutable), so a sweep evaluated on many inputs —
  and the loop over members alike — draws each seed once.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._validate import check_int
from ..features import RandomFeatureMap

__all__ = ["CACHE_SIZE", "clear_cache", "feature_map", "feature_maps", "orthogonal_draws"]

#: Feature maps kept by :func:`feature_maps` (least recently used evicted first).
CACHE_SIZE = 512

_CACHE: OrderedDict[tuple, RandomFeatureMap] = OrderedDict()


def clear_cache() -> None:
    """Forget every cached population feature map."""
    _CACHE.clear()


def orthogonal_draws(num_rows: int, dim: int, seeds: Sequence[int]) -> np.ndarray:
    """The projections of :func:`~structattn.features.orthogonal_gaussian` for many seeds.

    Parameters
    ----------
    num_rows : int
        Rows ``m`` per member.
    dim : int
        Dimension ``d``.
    seeds : sequence of int
        One seed per member (``P`` of them).

    Returns
    -------
    numpy.ndarray, shape (P, num_rows, dim), float64
        Slice ``p`` equals ``orthogonal_gaussian(num_rows, dim, seeds[p])`` (``"chi"``
        scaling, sign fix): same generator stream, same factorization routine.

    Notes
    -----
    ``O(P·ceil(m/d)·d³)`` flops in one batched QR call instead of ``P·ceil(m/d)``.
    """
    m = check_int(num_rows, "num_rows", minimum=1)
    d = check_int(dim, "dim", minimum=1)
    nb = math.ceil(m / d)
    P = len(seeds)
    blocks = np.empty((P, nb, d, d))
    gauss = np.empty((P, m, d))
    for p, seed in enumerate(seeds):  # one generator per member: the member's own stream
        rng = np.random.default_rng(int(seed))
        blocks[p] = rng.standard_normal((nb, d, d))  # == nb successive (d, d) draws
        gauss[p] = rng.standard_normal((m, d))
    Q, R = np.linalg.qr(blocks)
    sign = np.where(np.diagonal(R, axis1=-2, axis2=-1) < 0, -1.0, 1.0)
    W = np.swapaxes(Q * sign[..., None, :], -1, -2).reshape(P, nb * d, d)[:, :m]
    return W * np.linalg.norm(gauss, axis=-1)[..., None]


def _key(cls: type, dim: int, m: int, seed: int, scale: float | None,
         opts: Mapping[str, Any]) -> tuple:
    return (cls, dim, m, seed, scale, tuple(sorted(opts.items())))


def feature_maps(
    cls: type,
    dim: int,
    num_features: int,
    seeds: Sequence[Any],
    scales: Sequence[Any],
    opts: Mapping[str, Any],
) -> list[RandomFeatureMap]:
    """``P`` maps ``cls(dim, num_features, seed=seeds[p], scale=scales[p], **opts)``.

    Parameters
    ----------
    cls : type
        A :class:`~structattn.features.RandomFeatureMap` subclass.
    dim, num_features : int
    seeds : sequence of int, length P
    scales : sequence of float or None, length P
    opts : dict
        Further constructor options (``orthogonal``, ``hyperbolic``, …).

    Returns
    -------
    list of RandomFeatureMap
        Equal (same projections) to constructing each map directly; maps not in the
        cache are drawn together (:func:`orthogonal_draws` for orthogonal maps).
    """
    dim, m = int(dim), int(num_features)
    seeds = [int(s) for s in seeds]
    scales = [None if t is None else float(t) for t in scales]
    keys = [_key(cls, dim, m, s, t, opts) for s, t in zip(seeds, scales, strict=True)]
    missing = [i for i, key in enumerate(keys) if key not in _CACHE]
    if missing:
        if opts.get("orthogonal", True) and len(missing) > 1:
            todo = sorted({seeds[i] for i in missing})
            drawn = dict(zip(todo, orthogonal_draws(m, dim, todo), strict=True))
            for i in missing:
                _CACHE[keys[i]] = cls(dim=dim, num_features=m, scale=scales[i],
                                      projection=drawn[seeds[i]], seed=seeds[i], **opts)
        else:
            for i in missing:
                _CACHE[keys[i]] = cls(dim=dim, num_features=m, seed=seeds[i],
                                      scale=scales[i], **opts)
    out = []
    for i in missing:
        _CACHE[keys[i]].projection.setflags(write=False)  # shared: never mutated
    for key in keys:
        _CACHE.move_to_end(key)
        out.append(_CACHE[key])
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return out


def feature_map(cls: type, dim: int, num_features: int, seed: Any, scale: Any,
                opts: Mapping[str, Any]) -> RandomFeatureMap:
    """One member's map (through the cache of :func:`feature_maps`)."""
    return feature_maps(cls, dim, num_features, [seed], [scale], opts)[0]

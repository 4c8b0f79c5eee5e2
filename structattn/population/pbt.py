"""Population-based training rules (fastpbrl semantics), DvD diversity and CEM.

* :func:`pbt_truncation` — exploit: the strictly-worse bottom members copy a uniformly
  random member of the rest;
* :func:`pbt_explore` — explore: resample from the prior (fastpbrl) or perturb by
  random factors (the original PBT paper's ``×0.8 / ×1.2``);
* :func:`dvd_diversity` — ``-log det`` of the members' RBF Gram matrix (DvD-TD3);
* :func:`cem_update` — CEM-RL's weighted elite update of a diagonal Gaussian.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .._array import is_torch, namespace

__all__ = ["cem_update", "dvd_diversity", "pbt_explore", "pbt_truncation", "sample_prior"]


def _rng(rng: Any) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be an int seed, None or a numpy Generator, got {rng!r}")


def pbt_truncation(fitness: Any, *, bottom_frac: float = 0.3, rng: Any = None) -> dict[int, int]:
    """Truncation selection: which member copies which (higher fitness is better).

    ``n = ⌊bottom_frac·P⌋``, ``τ = sorted(fitness)[n]``; members with fitness ``< τ``
    (strictly) are the *worst*, all others the *best*; every worst member copies a
    uniformly random best member.  With ties at ``τ`` fewer than ``n`` members copy.

    Parameters
    ----------
    fitness : array, shape (P,)
        Finite fitness values (NaN is refused).
    bottom_frac : float
        Requires ``0 < ⌊bottom_frac·P⌋ <= P/2``.  fastpbrl's default is 0.3.
    rng : int, Generator or None
        Source of the random sources (deterministic given a seed).

    Returns
    -------
    dict[int, int]
        ``{target: source}``; sources are never targets.

    Notes
    -----
    ``O(P log P)``.
    """
    f = np.asarray(fitness.detach().cpu() if is_torch(fitness) else fitness, dtype=np.float64)
    if f.ndim != 1 or f.size == 0:
        raise ValueError(f"fitness must be a non-empty 1-D array, got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError("fitness contains NaN or Inf")
    P = f.size
    n = math.floor(float(bottom_frac) * P)
    if not (0 < n <= P / 2):
        raise ValueError(
            f"bottom_frac must satisfy 0 < floor(bottom_frac * P) <= P/2 for P={P}, "
            f"got bottom_frac={bottom_frac!r} (floor = {n})"
        )
    tau = np.sort(f)[n]
    worst = np.flatnonzero(f < tau)
    best = np.flatnonzero(f >= tau)
    gen = _rng(rng)
    sources = gen.choice(best, size=worst.size, replace=True) if worst.size else []
    return {int(t): int(s) for t, s in zip(worst, sources, strict=True)}


def _draw(spec: Any, gen: np.random.Generator, size: int) -> np.ndarray:
    if callable(spec):
        return np.asarray([spec(gen) for _ in range(size)])
    kind, *args = spec
    if kind == "loguniform":
        lo, hi = float(args[0]), float(args[1])
        if not 0 < lo <= hi:
            raise ValueError(f"loguniform bounds must satisfy 0 < lo <= hi, got {args}")
        return np.exp(gen.uniform(math.log(lo), math.log(hi), size))
    if kind == "uniform":
        lo, hi = float(args[0]), float(args[1])
        if not lo <= hi:
            raise ValueError(f"uniform bounds must satisfy lo <= hi, got {args}")
        return gen.uniform(lo, hi, size)
    if kind == "choice":
        values = np.asarray(args[0])
        return values[gen.integers(0, values.size, size)]
    raise ValueError(
        f"prior spec must be ('loguniform', lo, hi), ('uniform', lo, hi), ('choice', values) "
        f"or a callable rng -> value, got {spec!r}"
    )


def _bounds(spec: Any) -> tuple[float, float] | None:
    if callable(spec) or spec[0] not in ("loguniform", "uniform"):
        return None
    return float(spec[1]), float(spec[2])


def sample_prior(prior: Mapping[str, Any], size: int, *, rng: Any = None) -> dict[str, np.ndarray]:
    """Draw ``size`` members' hyper-parameters from ``prior``.

    Parameters
    ----------
    prior : dict[str, spec]
        Name → ``("loguniform", lo, hi)``, ``("uniform", lo, hi)``,
        ``("choice", values)`` or a callable ``rng -> value``.
    size : int
    rng : int, Generator or None

    Returns
    -------
    dict[str, ndarray of shape (size,)]
    """
    gen = _rng(rng)
    return {name: _draw(spec, gen, int(size)) for name, spec in prior.items()}


def pbt_explore(
    hparams: Mapping[str, Any],
    targets: Mapping[int, int] | Iterable[int],
    *,
    prior: Mapping[str, Any] | None = None,
    perturb: tuple[float, ...] | None = None,
    rng: Any = None,
) -> dict[str, np.ndarray]:
    """Explore: new hyper-parameters for the members that copied another.

    Parameters
    ----------
    hparams : dict[str, array (P,)]
        Current hyper-parameters.
    targets : dict {target: source} or iterable of targets
        Output of :func:`pbt_truncation` (or just the members to explore).
    prior : dict, optional
        As :func:`sample_prior`.  Without ``perturb``: every target's hyper-parameters
        named in ``prior`` are **resampled** from it (fastpbrl).  With ``perturb``:
        values are clipped to the prior's bounds.
    perturb : tuple of float, optional
        Factors, e.g. ``(0.8, 1.2)``: the target takes its *source's* value (its own if
        ``targets`` is not a mapping) times a uniformly chosen factor.
    rng : int, Generator or None

    Returns
    -------
    dict[str, ndarray (P,)]
        A new dict; members that are not targets keep their values.
    """
    if prior is None and perturb is None:
        raise ValueError("pbt_explore needs a prior= to resample from or perturb= factors")
    gen = _rng(rng)
    out = {k: np.array(v, dtype=np.float64 if np.asarray(v).dtype.kind == "f" else None)
           for k, v in hparams.items()}
    mapping = dict(targets) if isinstance(targets, Mapping) else {int(t): int(t) for t in targets}
    for values in out.values():
        for t in mapping:
            if not 0 <= t < values.shape[0]:
                raise ValueError(f"target {t} out of range for P={values.shape[0]}")
    if perturb is None:
        for name, spec in prior.items():
            if name not in out:
                raise ValueError(f"prior names {name!r}, not among hparams {sorted(out)}")
            for t in sorted(mapping):
                out[name][t] = _draw(spec, gen, 1)[0]
        return out
    factors = np.asarray(perturb, dtype=np.float64)
    if factors.ndim != 1 or factors.size == 0 or not np.all(factors > 0):
        raise ValueError(f"perturb must be a non-empty tuple of positive factors, got {perturb!r}")
    names = list(prior) if prior is not None else list(out)
    for name in names:
        src = np.asarray(hparams[name], dtype=np.float64)
        bounds = _bounds(prior[name]) if prior is not None else None
        for t in sorted(mapping):
            value = src[mapping[t]] * factors[gen.integers(0, factors.size)]
            if bounds is not None:
                value = min(max(value, bounds[0]), bounds[1])
            out[name][t] = value
    return out


def dvd_diversity(embeddings: Any, *, scale: float = 1.0) -> Any:
    """DvD population diversity ``-log det K``, ``K_ij = exp(-|e_i - e_j|²/(2·scale))``.

    Parameters
    ----------
    embeddings : array, shape (P, ...)
        Member ``i``'s behaviour embedding (flattened), e.g. its outputs on a shared
        batch.  numpy or torch (differentiable).
    scale : float
        RBF bandwidth ``ℓ² = scale`` (:func:`structattn.eigen.kernels.rbf`).

    Returns
    -------
    scalar
        ``>= 0``; ``+inf`` when two members coincide (``K`` singular), never NaN.  DvD
        *minimizes* this (maximizes the volume spanned by the members).

    Notes
    -----
    ``O(P²·D + P³)``.
    """
    from ..eigen.kernels import rbf

    if not (isinstance(scale, (int, float)) and scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    if embeddings.ndim < 1 or embeddings.shape[0] < 1:
        raise ValueError(f"embeddings must have shape (P, ...), got {tuple(embeddings.shape)}")
    xp = namespace(embeddings)
    E = xp.reshape(embeddings, (embeddings.shape[0], -1))
    K = rbf(lengthscale=math.sqrt(scale))(E, E)
    if is_torch(E):
        import torch

        sign, logdet = torch.linalg.slogdet(K)
        inf = torch.full_like(logdet, math.inf)
        return torch.where((sign > 0) & torch.isfinite(logdet), -logdet, inf)
    sign, logdet = np.linalg.slogdet(K)
    return float(-logdet) if sign > 0 and np.isfinite(logdet) else math.inf


def cem_update(
    mean: Any,
    var: Any,
    elites: Any,
    fitness: Any,
    *,
    noise: float,
    tau_noise: float = 0.95,
    final_noise: float = 1e-5,
    biased: bool = True,
) -> tuple[np.ndarray, np.ndarray, float]:
    """CEM-RL update of a diagonal Gaussian from its ``E`` elites (fastpbrl ``cem.py``).

    Elites ranked best first get weights ``w_i ∝ log((E+1)/i)`` (normalized);
    ``mean' = Σ w_i e_i``; ``var' = Σ w_i (e_i - mean)² / E + noise`` with the *old*
    mean; ``noise' = tau_noise·noise + (1 - tau_noise)·final_noise``.

    Parameters
    ----------
    mean, var : array, shape (D,)
    elites : array, shape (E, D)
        The elite samples (any order).
    fitness : array, shape (E,)
        Their fitness (higher is better), used to rank them.
    noise : float
        Current noise floor added to the variance.
    tau_noise, final_noise : float
    biased : bool, default True
        Reproduce fastpbrl's extra division by ``E`` after normalized weights (a quirk);
        False gives the weighted variance ``Σ w_i (e_i - mean)²``.

    Returns
    -------
    (new_mean, new_var, new_noise)
    """
    mean = np.asarray(mean, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    elites = np.asarray(elites, dtype=np.float64)
    fitness = np.asarray(fitness, dtype=np.float64)
    if elites.ndim != 2 or elites.shape[1:] != mean.shape or var.shape != mean.shape:
        raise ValueError(
            f"elites must have shape (E, D) with mean/var of shape (D,), got elites "
            f"{elites.shape}, mean {mean.shape}, var {var.shape}"
        )
    E = elites.shape[0]
    if fitness.shape != (E,):
        raise ValueError(f"fitness must have shape (E,) = ({E},), got {fitness.shape}")
    order = np.argsort(-fitness, kind="stable")
    w = np.log((E + 1) / np.arange(1, E + 1))
    w = w / w.sum()
    ranked = elites[order]
    new_mean = w @ ranked
    dev = (ranked - mean) ** 2
    new_var = w @ dev / (E if biased else 1) + noise
    new_noise = tau_noise * noise + (1 - tau_noise) * final_noise
    return new_mean, new_var, float(new_noise)



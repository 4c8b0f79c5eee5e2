"""Linear randomized attention (LARA): self-normalised multiple importance sampling."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._array import as_generator, as_like, index_like, namespace
from ..attention import NormalizerWarning
from ..backends import resolve_backend
from . import _common as C
from ._snis import key_side

__all__ = [
    "ALPHA_FLOOR",
    "LANDMARKS",
    "MIS_TYPES",
    "LaraParts",
    "lara",
    "lara_parts",
    "pooling_matrix",
]

#: Landmark constructions of :func:`lara`.
LANDMARKS = ("segment-mean", "adaptive-2d")
#: Multiple-importance-sampling weightings of :func:`lara`.
MIS_TYPES = ("opt", "bh", "biased")

#: Floor of the ``mis="opt"`` MIS weights before their log (``alpha_floor="auto"``).
ALPHA_FLOOR = 1e-8


def _segments(n: int, c: int) -> np.ndarray:
    """``(c, n)`` averaging matrix of ``c`` contiguous segments (sizes ⌊n/c⌋, ⌈n/c⌉)."""
    P = np.zeros((c, n))
    for i in range(c):
        s, e = (i * n) // c, ((i + 1) * n) // c
        P[i, s:e] = 1.0 / (e - s)
    return P


def _adaptive(n: int, c: int) -> np.ndarray:
    """``(c, n)`` adaptive average pooling (``torch.nn.AdaptiveAvgPool1d`` windows)."""
    P = np.zeros((c, n))
    for i in range(c):
        s, e = (i * n) // c, -((-(i + 1) * n) // c)
        P[i, s:e] = 1.0 / (e - s)
    return P


def pooling_matrix(
    length: int,
    num_landmarks: int,
    landmarks: str = "segment-mean",
    grid_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """The ``(C, L)`` matrix that averages tokens into LARA's landmarks.

    Parameters
    ----------
    length : int
        Number of tokens ``L``.
    num_landmarks : int
        ``C``, at most ``L``.
    landmarks : {"segment-mean", "adaptive-2d"}
        ``"segment-mean"``: means of ``C`` contiguous segments of sizes ``⌊L/C⌋`` and
        ``⌊L/C⌋ + 1``.  ``"adaptive-2d"``: tokens are a row-major ``H x W`` grid
        (``grid_shape``; default square), pooled by 2-D adaptive average pooling to a
        ``√C x √C`` grid (``C`` a perfect square).
    grid_shape : (int, int), optional
        ``(H, W)`` with ``H·W = L`` for ``"adaptive-2d"``.

    Returns
    -------
    numpy.ndarray, shape (C, L), float64
        Rows are nonnegative and sum to one.
    """
    L = C.check_int(length, "length")
    c = C.check_int(num_landmarks, "num_landmarks")
    if c > L:
        raise ValueError(
            f"num_landmarks must be <= the sequence length L={L}, got num_landmarks={c}"
        )
    C.check_choice(landmarks, "landmarks", LANDMARKS)
    if landmarks == "segment-mean":
        if grid_shape is not None:
            raise ValueError("grid_shape is only used with landmarks='adaptive-2d'")
        return _segments(L, c)
    if grid_shape is None:
        side = math.isqrt(L)
        if side * side != L:
            raise ValueError(
                f"landmarks='adaptive-2d' needs grid_shape=(H, W) unless L is a perfect "
                f"square, got L={L}"
            )
        grid_shape = (side, side)
    if (not isinstance(grid_shape, (tuple, list)) or len(grid_shape) != 2
            or int(grid_shape[0]) * int(grid_shape[1]) != L):
        raise ValueError(f"grid_shape must be (H, W) with H*W = L = {L}, got {grid_shape!r}")
    H, W = (C.check_int(x, "grid_shape entries") for x in grid_shape)
    side = math.isqrt(c)
    if side * side != c:
        raise ValueError(
            f"landmarks='adaptive-2d' needs num_landmarks to be a perfect square "
            f"(a sqrt(C) x sqrt(C) landmark grid), got {c}"
        )
    if side > H or side > W:
        raise ValueError(f"a {side}x{side} landmark grid does not fit the {H}x{W} token grid")
    return np.kron(_adaptive(H, side), _adaptive(W, side))


@dataclass(frozen=True, eq=False)
class LaraParts:
    """The pieces of one LARA estimate (arrays of the input's kind).

    ``n`` is the number of samples: ``C``, or ``2C`` with antithetic pairs.

    Attributes
    ----------
    output : array, shape (..., L_q, d_v) or None
        ``weights @ values`` (None when computed without values).
    weights : array, shape (..., L_q, n)
        Self-normalised weights ``α_ns ρ_ns / Σ_s' α_ns' ρ_ns'``; every row sums to one.
    alpha : array, shape (..., L_q, n)
        The MIS weight ``α_{n c(s)}(w_s)`` of each sample's own proposal (before any
        ``alpha_floor``).  Query-independent for ``mis="bh"``.
    log_ratio : array, shape (..., L_q, n)
        ``log ρ_ns = log p̃_n(w_s) − log q_{c(s)}(w_s)`` (both without ``N(w; 0, I)``).
    values : array, shape (..., n, d_v) or None
        The shared integrand ``f(w_s) = softmax_m(w_s·k_m − |k_m|²/2) V``.
    key_weights : array, shape (..., n, L_k)
        ``softmax_m(w_s·k_m − |k_m|²/2)``: ``values = key_weights @ V``.
    samples : array, shape (..., n, d)
        The samples ``w_s`` (scaled space).
    means : array, shape (..., C, d)
        Proposal means ``μ_c = q̄_c + k̄_c`` (scaled space).
    proposal : numpy.ndarray of int, shape (n,)
        ``c(s)``, the proposal each sample was drawn from.
    """

    output: Any
    weights: Any
    alpha: Any
    log_ratio: Any
    values: Any
    key_weights: Any
    samples: Any
    means: Any
    proposal: np.ndarray

    def matrix(self) -> Any:
        """Implied row-stochastic matrix ``weights @ key_weights``, ``(..., L_q, L_k)``."""
        return self.weights @ self.key_weights


def lara_parts(
    q: Any,
    k: Any,
    v: Any | None,
    *,
    num_landmarks: int,
    landmarks: str = "segment-mean",
    mis: str = "opt",
    alpha_coeff: float = 1.0,
    antithetic: bool = False,
    deterministic: bool = False,
    seed: Any = None,
    noise_scale: float = 1.0,
    alpha_floor: float | str | None = "auto",
    grid_shape: tuple[int, int] | None = None,
    noise: Any = None,
    scale: float | None = None,
    backend: str = "auto",
    check_finite: bool = True,
) -> LaraParts:
    """Every intermediate of :func:`lara` (same parameters); ``v`` may be None.

    Returns
    -------
    LaraParts
    """
    vv = k[..., :0] if v is None else v
    batch, L_q, L_k, d, _ = C.validated(q, k, vv, check_finite, values=v is not None)
    resolve_backend(backend, q, k, v)
    c = C.check_int(num_landmarks, "num_landmarks")
    if c > min(L_q, L_k):
        raise ValueError(
            f"num_landmarks must be <= the sequence length (L_q={L_q}, L_k={L_k}), "
            f"got num_landmarks={c}"
        )
    mis = C.check_choice(mis, "mis", MIS_TYPES)
    lam = C.check_real(alpha_coeff, "alpha_coeff")
    if lam < 0:
        raise ValueError(f"alpha_coeff must be >= 0, got {alpha_coeff!r}")
    antithetic = C.check_bool(antithetic, "antithetic")
    deterministic = C.check_bool(deterministic, "deterministic")
    sigma = C.check_real(noise_scale, "noise_scale", minimum=0.0)
    if isinstance(alpha_floor, str) and alpha_floor == "auto":
        alpha_floor = ALPHA_FLOOR if mis == "opt" else None
    elif alpha_floor is not None:
        alpha_floor = C.check_real(alpha_floor, "alpha_floor", positive=True)
        if mis != "opt":
            raise ValueError(f"alpha_floor only applies to mis='opt' (the other MIS weights "
                             f"are positive), got mis={mis!r}")
    if deterministic and antithetic:
        raise ValueError("antithetic=True needs noise; it cannot be combined with "
                         "deterministic=True")
    if landmarks == "adaptive-2d" and L_q != L_k:
        raise ValueError(f"landmarks='adaptive-2d' needs L_q == L_k, got {L_q} and {L_k}")
    Pq = pooling_matrix(L_q, c, landmarks, grid_shape)
    Pk = Pq if L_k == L_q else pooling_matrix(L_k, c, landmarks, grid_shape)
    t = C.temperature(scale, d)

    xp = namespace(q, k)
    qs, ks = C.scaled(q, t), C.scaled(k, t)
    qbar = as_like(Pq, q) @ qs
    mu = qbar + as_like(Pk, q) @ ks  # (..., C, d)
    if deterministic or sigma == 0:
        if noise is not None:
            raise ValueError("noise= given but deterministic=True or noise_scale=0 use no noise")
        w, proposal = mu, np.arange(c)
    else:
        shape = (*batch, c, d)
        eps = (C.check_draw("noise", noise, shape).astype(np.float64) if noise is not None
               else as_generator(seed).standard_normal(shape))
        e = sigma * as_like(eps, q)
        if antithetic:
            w, proposal = xp.concat([mu + e, mu - e], axis=-2), np.tile(np.arange(c), 2)
        else:
            w, proposal = mu + e, np.arange(c)
    prop = index_like(proposal, q)
    mu_s = xp.take(mu, prop, axis=-2)  # each sample's own proposal mean

    lse_k, G, F = key_side(ks, v, w)  # (..., n), (..., n, L_k), (..., n, d_v)
    log_p = C.log_xi(qs, w) + lse_k[..., None, :]  # log p~_n(w_s): (..., L_q, n)
    own = xp.sum(w * mu_s, axis=-1) - xp.sum(mu_s * mu_s, axis=-1) / 2  # log q_c(s)(w_s)
    log_mix = C.logsumexp(C.log_xi(mu, w), axis=-2)  # log Σ_c q_c(w_s): (..., n)
    log_ratio = log_p - own[..., None, :]
    alpha_bh = xp.exp(own - log_mix)[..., None, :]  # (..., 1, n)
    log_w = None
    if mis == "bh":
        alpha = xp.broadcast_to(alpha_bh, log_ratio.shape)
        log_w = log_p - log_mix[..., None, :]
    elif mis == "biased":
        alpha_c = C.softmax(qs @ C.transpose(mu), axis=-1)  # softmax_c(μ_c·q_n)
        alpha = xp.take(alpha_c, prop, axis=-1)
        log_w = xp.log(alpha) + log_p - log_mix[..., None, :]
    else:  # "opt": balance heuristic + λ (t_nc − mean_c t_nc), t normalised over queries
        tq = C.softmax(qs @ C.transpose(qbar), axis=-2)  # (..., L_q, C)
        corr = tq - xp.mean(tq, axis=-1, keepdims=True)
        alpha = alpha_bh + lam * xp.take(corr, prop, axis=-1)
        if alpha_floor is not None:
            log_w = xp.log(xp.maximum(alpha, xp.full_like(alpha, alpha_floor))) + log_ratio
    if log_w is not None:
        weights = C.softmax(log_w, axis=-1)
    else:  # signed α: shift log ρ by its row max, multiply, normalise (no epsilon)
        shift = xp.max(log_ratio, axis=-1, keepdims=True)
        raw = alpha * xp.exp(log_ratio - shift)
        den = xp.sum(raw, axis=-1, keepdims=True)
        bad = int(xp.sum(xp.astype(den <= 0, xp.int64)))
        if bad:
            warnings.warn(
                f"{bad} LARA normalizer(s) are <= 0: mis='opt' with alpha_coeff="
                f"{lam} gave negative MIS weights; lower alpha_coeff or pass alpha_floor",
                NormalizerWarning, stacklevel=3,
            )
        weights = raw / den
    return LaraParts(
        output=None if F is None else weights @ F, weights=weights, alpha=alpha,
        log_ratio=log_ratio, values=F, key_weights=G, samples=w, means=mu,
        proposal=proposal,
    )


def lara(
    q: Any,
    k: Any,
    v: Any,
    *,
    num_landmarks: int,
    landmarks: str = "segment-mean",
    mis: str = "opt",
    alpha_coeff: float = 1.0,
    antithetic: bool = False,
    deterministic: bool = False,
    seed: Any = None,
    noise_scale: float = 1.0,
    alpha_floor: float | str | None = "auto",
    grid_shape: tuple[int, int] | None = None,
    noise: Any = None,
    scale: float | None = None,
    backend: str = "auto",
    check_finite: bool = True,
) -> Any:
    """Linear randomized attention (LARA, Zheng et al. 2022), in the log domain.

    ``C`` Gaussian proposals ``q_c(w) = N(w; μ_c, I)`` centred at pooled landmarks
    ``μ_c = q̄_c + k̄_c`` (scaled space) get one sample each, ``w_c = μ_c + σ ε_c``
    (``w_c = μ_c`` when ``deterministic``), shared by all queries.  With the target
    ``p̃_n(w) = ξ(q_n, w) Σ_m ξ(k_m, w)`` and ``ρ_nc = p̃_n(w_c) / q_c(w_c)``
    (the ``N(w; 0, I)`` factors cancel)::

        y_n = Σ_c α_nc ρ_nc f(w_c) / Σ_c α_nc ρ_nc,   f(w) = softmax_m(w·k_m − |k_m|²/2) V.

    ``f(w_c)`` is shared by all queries, so the cost is linear in ``L``; only the weights
    ``α ρ`` depend on the query.  Everything is formed from log-sum-exps and softmaxes:
    no epsilon.

    Parameters
    ----------
    q : array, shape (..., L_q, d)
    k : array, shape (..., L_k, d)
    v : array, shape (..., L_k, d_v)
        numpy arrays or torch tensors (float32/float64, one device).
    num_landmarks : int
        Number of proposals ``C`` (``<= min(L_q, L_k)``).
    landmarks : {"segment-mean", "adaptive-2d"}
        How ``q̄``, ``k̄`` are pooled (see :func:`pooling_matrix`).
    mis : {"opt", "bh", "biased"}
        MIS weights ``α``: ``"bh"`` the balance heuristic ``q_c(w)/Σ_c' q_c'(w)``
        (query-independent); ``"opt"`` (default) the balance heuristic plus
        ``alpha_coeff·(t_nc − mean_c' t_nc')`` with ``t_nc = softmax_n(q̄_c·q_n)``
        (normalised over queries, as in the reference code); ``"biased"``
        ``α_nc ∝ exp(μ_c·q_n)`` with the mixture density as denominator.
    alpha_coeff : float, default 1.0
        ``λ >= 0`` of ``mis="opt"`` (the ImageNet recipes use 2.0).
    antithetic : bool, default False
        Two samples ``μ_c ± σ ε_c`` per proposal (``2C`` samples).
    deterministic : bool, default False
        ``w_c = μ_c`` (the reference code's evaluation mode); reproducible without a seed.
    seed : int or numpy.random.Generator, optional
        Source of ``ε`` (``(..., C, d)`` standard normals); required unless
        ``deterministic`` or ``noise`` is given.
    noise_scale : float, default 1.0
        ``σ``, the proposal spread in the scaled space (the paper's value).  The released
        code's temperature handling amounts to ``σ = d**-0.25``: pass that for parity.
    alpha_floor : float, None or "auto", default "auto"
        ``mis="opt"`` adds a zero-sum correction to the balance heuristic, so ``α`` can
        become negative, while the estimator is defined for ``α >= 0`` (its log-domain
        weights take ``log α``).  ``"auto"``: ``α`` is clamped at ``ALPHA_FLOOR = 1e-8``
        before the log for ``mis="opt"`` (what the spec and the released code do) and
        unused otherwise; a float sets the floor (``mis="opt"`` only); None uses the
        signed ``α`` as the formula gives them (self-normalised, no epsilon; a
        non-positive normaliser raises a :class:`~structattn.NormalizerWarning`: at
        realistic sizes, e.g. ``L = 196, C = 49``, every run has one).
    grid_shape : (int, int), optional
        Token grid ``(H, W)`` for ``landmarks="adaptive-2d"``.
    noise : array, shape (..., C, d), optional
        Explicit ``ε`` draws.
    scale : float, optional
        Softmax scale; default ``d**-0.5``.
    backend : {"auto", "numpy", "numba", "torch"}
        No hot loop: numpy and numba run the same numpy code.
    check_finite : bool, default True

    Returns
    -------
    array, shape (..., L_q, d_v)

    Notes
    -----
    ``O(L·C·(d + d_v) + C²·d)`` time, ``O(L·C)`` memory.  There is no causal variant
    (the authors' README says so; their causal successor is EVA).  All intermediates:
    :func:`lara_parts`.

    Examples
    --------
    >>> import numpy as np
    >>> from structattn.estimators import lara
    >>> x = np.random.default_rng(0).standard_normal((2, 16, 8))
    >>> lara(x, x, x, num_landmarks=4, seed=0).shape
    (2, 16, 8)
    """
    out = lara_parts(
        q, k, v, num_landmarks=num_landmarks, landmarks=landmarks, mis=mis,
        alpha_coeff=alpha_coeff, antithetic=antithetic, deterministic=deterministic,
        seed=seed, noise_scale=noise_scale, alpha_floor=alpha_floor, grid_shape=grid_shape,
        noise=noise, scale=scale, backend=backend, check_finite=check_finite,
    ).output
    return C.checked_output(out, "lara", check_finite, q)

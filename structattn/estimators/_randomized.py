"""Randomized attention (RA): an unbiased, quadratic Monte-Carlo estimate of softmax attention."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import as_generator, as_like, index_like, is_torch, namespace
from ..backends import resolve_backend
from . import _common as C

__all__ = ["RA_MODES", "randomized_attention"]

#: Proposal modes of :func:`randomized_attention`.
RA_MODES = ("one-sample", "mixture-mean", "key-mean")

# query rows per block: bounds the (rows x L_k) temporaries to ~2**21 entries
_BLOCK_ENTRIES = 1 << 21


def _visible(r0: int, r1: int, L_k: int, like: Any) -> Any:
    """Boolean ``(r1 - r0, L_k)`` causal pattern ``j <= i`` for query rows ``r0 … r1-1``."""
    rows = index_like(np.arange(r0, r1), like)[:, None]
    cols = index_like(np.arange(L_k), like)[None, :]
    return cols <= rows


def _first_true(mask: Any) -> Any:
    """Index of the first True along the last axis (int64), numpy and torch."""
    if is_torch(mask):
        import torch

        return torch.argmax(mask.to(dtype=torch.uint8), dim=-1)
    return np.argmax(mask, axis=-1)  # numpy's bool argmax stops at the first True


def ra_core(q, k, v, *, num_samples, seed, mode, causal, noise_scale, deterministic,
            scale, noise, components, return_samples, backend, check_finite):
    """RA output (``v`` given) or its implied matrix (``v`` None); see the public function."""
    vv = k[..., :0] if v is None else v
    batch, L_q, L_k, d, _ = C.validated(q, k, vv, check_finite, values=v is not None)
    resolve_backend(backend, q, k, v)
    S = C.check_int(num_samples, "num_samples")
    mode = C.check_choice(mode, "mode", RA_MODES)
    causal = C.check_bool(causal, "causal")
    empty = C.empty_result(q, k, v)
    if empty is not None:
        return empty
    deterministic = C.check_bool(deterministic, "deterministic")
    C.check_bool(return_samples, "return_samples")
    sigma = C.check_real(noise_scale, "noise_scale", minimum=0.0)
    if causal and L_q != L_k:
        raise ValueError(f"causal=True needs L_q == L_k, got L_q={L_q} and L_k={L_k}")
    t = C.temperature(scale, d)

    # --- draws (numpy, explicit generator): uniforms for the components, then noise
    need_components = mode == "one-sample" and components is None
    need_noise = not deterministic and sigma > 0 and noise is None
    rng = as_generator(seed) if (need_components or need_noise) else None
    if mode == "one-sample":
        if components is not None:
            comp = C.check_draw("components", components, (S, *batch, L_q)).astype(np.int64)
            if comp.min(initial=0) < 0 or comp.max(initial=0) >= L_k:
                raise ValueError(f"components must lie in [0, {L_k - 1}]")
            if causal and np.any(comp > np.arange(L_q)):
                raise ValueError("causal=True: components[..., i] must be <= i (no future key)")
            uniforms = None
        else:
            comp, uniforms = None, rng.random((S, *batch, L_q))
    elif components is not None:
        raise ValueError(f"components= is only used with mode='one-sample', got mode={mode!r}")
    else:
        comp = uniforms = None
    eps = None
    if not deterministic and sigma > 0:
        shape = (S, *batch, L_q, d)
        eps = (C.check_draw("noise", noise, shape).astype(np.float64) if noise is not None
               else rng.standard_normal(shape))
    elif noise is not None:
        raise ValueError("noise= given but deterministic=True or noise_scale=0 use no noise")

    xp = namespace(q, k)
    qs, ks = C.scaled(q, t), C.scaled(k, t)
    hk = C.transpose(C.half_sq(ks))  # (..., 1, L_k)
    neg_inf = as_like(np.array(-np.inf), q)
    if mode == "key-mean":
        if causal:
            counts = as_like(np.arange(1, L_k + 1, dtype=np.float64)[:, None], q)
            key_mean = xp.cumulative_sum(ks, axis=-2) / counts
        else:
            key_mean = xp.mean(ks, axis=-2, keepdims=True)
    block = max(1, _BLOCK_ENTRIES // max(1, L_k))
    pieces = []
    for r0 in range(0, L_q, block):
        r1 = min(L_q, r0 + block)
        qb = qs[..., r0:r1, :]
        keep = _visible(r0, r1, L_k, q) if causal else None
        if (mode == "one-sample" and comp is None) or mode == "mixture-mean":
            scores = qb @ C.transpose(ks)
            if causal:
                scores = xp.where(keep, scores, neg_inf)
            # unnormalised exp(s - rowmax): the row max is finite (key 0 is always visible)
            e = xp.exp(scores - xp.max(scores, axis=-1, keepdims=True))
            del scores
        if mode == "mixture-mean":
            center = qb + (e @ ks) / xp.sum(e, axis=-1, keepdims=True)
        elif mode == "key-mean":
            center = qb + (key_mean[..., r0:r1, :] if causal else key_mean)
        elif comp is None:  # inverse CDF of pi_n: the first m with cdf_m >= u · total
            cdf = xp.cumulative_sum(e, axis=-1)
            total = cdf[..., -1:]
            del e
        samples = []
        for s in range(S):
            if mode == "one-sample":
                if comp is None:
                    u = as_like(uniforms[s, ..., r0:r1, None], q) * total
                    idx = _first_true(cdf >= u)  # exists: cdf[-1] = total >= u · total
                else:
                    idx = index_like(comp[s, ..., r0:r1], q)
                idx = xp.broadcast_to(idx[..., None], (*batch, r1 - r0, d))
                center = qb + xp.take_along_axis(ks, idx, axis=-2)
            w = center if eps is None else center + sigma * as_like(eps[s, ..., r0:r1, :], q)
            logits = w @ C.transpose(ks) - hk
            if causal:
                logits = xp.where(keep, logits, neg_inf)
            g = xp.exp(logits - xp.max(logits, axis=-1, keepdims=True))
            del logits
            z = xp.sum(g, axis=-1, keepdims=True)
            samples.append(g / z if v is None else (g @ v) / z)  # normalise after @ v
        pieces.append(xp.stack(samples, axis=0))
    out = pieces[0] if len(pieces) == 1 else xp.concat(pieces, axis=-2)
    return out if return_samples else xp.mean(out, axis=0)


def randomized_attention(
    q: Any,
    k: Any,
    v: Any,
    *,
    num_samples: int,
    seed: Any = None,
    mode: str = "one-sample",
    causal: bool = False,
    noise_scale: float = 1.0,
    deterministic: bool = False,
    scale: float | None = None,
    noise: Any = None,
    components: Any = None,
    return_samples: bool = False,
    backend: str = "auto",
    check_finite: bool = True,
) -> Any:
    """Randomized attention (RA, Zheng et al. 2022): unbiased Monte-Carlo softmax attention.

    In the scaled space (``q_s = q·scale^{1/2}``, ``k_s = k·scale^{1/2}``) exact attention
    is ``y_n = E_{w ~ p_n}[f(w)]`` with the per-query Gaussian mixture
    ``p_n(w) = Σ_m π_nm N(w; q_n + k_m, I)`` (``π_n`` = the exact attention row) and the
    integrand ``f(w) = softmax_m(w·k_m − |k_m|²/2) V`` shared by all queries.  RA draws,
    for every query and each of ``num_samples`` draws, a component ``m* ~ π_n`` and
    ``w = q_n + k_{m*} + noise_scale·ε`` (``ε ~ N(0, I)``), and averages ``f(w)``.
    With ``noise_scale = 1`` (the paper's estimator, default) the estimate is unbiased
    for the whole output; its variance is at most ``max|v|² / num_samples``.

    Parameters
    ----------
    q : array, shape (..., L_q, d)
    k : array, shape (..., L_k, d)
    v : array, shape (..., L_k, d_v)
        numpy arrays or torch tensors (float32/float64, one device).
    num_samples : int
        Draws ``S`` per query (averaged).
    seed : int or numpy.random.Generator, optional
        Source of the draws: first ``S·(...)·L_q`` uniforms (component choice), then
        ``S·(...)·L_q·d`` standard normals (noise).  Required unless every draw is given
        or the mode is deterministic.
    mode : {"one-sample", "mixture-mean", "key-mean"}
        ``"one-sample"``: the unbiased RA above (one mixture sample per query and draw).
        ``"mixture-mean"``: a single Gaussian at the mixture mean
        ``q_n + Σ_m π_nm k_m``; ``"key-mean"``: at ``q_n + mean_m k_m`` (causal: the mean
        over visible keys).  Both are biased, cheaper proposals of the reference code
        (its ``num_samples = -1`` and ``0``).
    causal : bool, default False
        Query ``i`` sees keys ``j <= i`` only (mixture, integrand and key mean are
        restricted to them; still unbiased).  Needs ``L_q == L_k``.
    noise_scale : float, default 1.0
        Standard deviation of the proposal noise in the scaled space.  The released code
        applies the temperature to unscaled coordinates, which amounts to
        ``noise_scale = d**-0.25`` (narrower spread, biased); pass that for parity.
    deterministic : bool, default False
        No noise (``w`` = the proposal centre): the reference code's evaluation mode.
    scale : float, optional
        Softmax scale; default ``d**-0.5``.
    noise : array, shape (S, ..., L_q, d), optional
        Explicit standard-normal draws ``ε`` (multiplied by ``noise_scale``).
    components : int array, shape (S, ..., L_q), optional
        Explicit component indices ``m*`` (``"one-sample"`` mode; causal: ``<= i``).
    return_samples : bool, default False
        Return the ``S`` per-draw estimates, shape ``(S, ..., L_q, d_v)``, not their mean.
    backend : {"auto", "numpy", "numba", "torch"}
        No hot loop: numpy and numba run the same numpy code.
    check_finite : bool, default True

    Returns
    -------
    array, shape (..., L_q, d_v)
        (or ``(S, ..., L_q, d_v)`` with ``return_samples``).  Autograd flows through
        ``q``, ``k``, ``v`` for the drawn components (a discrete choice has no gradient).

    Notes
    -----
    ``O(S·L_q·L_k·(d + d_v))`` time; memory ``O(S·L_q·d_v)`` plus ``O(B·L_k)`` for
    blocks of ``B ≈ 2²¹/L_k`` query rows.  A high-fidelity reference for studies, not a
    speed method.

    Examples
    --------
    >>> import numpy as np
    >>> from structattn.estimators import randomized_attention
    >>> x = np.random.default_rng(0).standard_normal((2, 16, 8))
    >>> randomized_attention(x, x, x, num_samples=4, seed=0).shape
    (2, 16, 8)
    """
    out = ra_core(q, k, v, num_samples=num_samples, seed=seed, mode=mode, causal=causal,
                  noise_scale=noise_scale, deterministic=deterministic, scale=scale,
                  noise=noise, components=components, return_samples=return_samples,
                  backend=backend, check_finite=check_finite)
    return C.checked_output(out, "randomized_attention", check_finite, q)


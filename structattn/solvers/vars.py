"""VARS: attention as recurrent sparse reconstruction (solvers.md §3).

Per head, the value tokens ``V`` are reconstructed from a dictionary of templates ``D``::

    Z* = argmin_Z ½||V - D Z||_F² + λ||Z||₁ ,    output  Y = D_read Z*

Implemented here: dynamic templates (built from the current input) with

``features="exact_kernel"`` (λ = 0 only)
    Templates are the keys in the feature space of ``k(q, k) = exp(qᵀk · scale)``, readout
    with the queries.  ``T`` unit-normalized Richardson/ISTA steps from ``Z = 0`` with step
    ``1/L`` kernelize (§3.4)::

        W_{t+1} = W_t + (V - G_KK W_t)/L ,   Y = G_QK W_T      (W_0 = 0)

    so ``Y_T = G_QK Σ_{s<T} (I - G_KK/L)^s V / L``; one step is ``G_QK V / L`` and with
    row normalization (``(G_QK W)⊘(G_QK W_1)``, the same operator applied to a column of
    ones) it is exactly softmax attention.
``features="random"``
    VARS-D: queries L2-normalized per token, positive random features
    ``φ(u) = exp(Wᵀu - ||u||²/2)/√m`` with a frozen Gaussian ``W`` drawn from ``seed``,
    each feature column L2-normalized over tokens → ``D`` (keys tied to queries); then
    ``steps`` ISTA steps of :func:`structattn.solvers.lasso` from ``init="one_step"``
    with ``L = "rowsum"`` and readout ``Y = D Z``.  ``feature_map="kernel"`` instead uses
    the unnormalized features of the exponential kernel, ``φ(u√s)`` with
    ``E[φ(q√s)ᵀφ(k√s)] = exp(s qᵀk)`` (templates ``φ(K√s)``, readout ``φ(Q√s)``, the
    exact-kernel path's step sizes): the Monte-Carlo version of the exact kernel,
    ``O(1/√m)`` from it.  (VARS-D's normalizations change the kernel, so its large-``m``
    limit is *not* the exponential-kernel result.)

``templates="static"`` (VARS-S)
    Input-independent convolution templates: per value channel ``c`` a bank of ``P``
    kernels ``h_{c,p}`` of length ``N`` (circular convolution over the token axis, each
    kernel scaled to unit norm so that every column of the circulant dictionary
    ``D_c = [C(h_{c,1}) … C(h_{c,P})] ∈ R^{N x PN}`` has unit norm).  Applied by FFT:
    ``D_c z = irfft(Σ_p ĥ_p ẑ_p)``, ``D_cᵀ r = irfft(conj(ĥ_p) r̂)``; ``D_cᵀD_c`` is
    block diagonal in frequency with the rank-one ``P x P`` blocks ``conj(ĥ(ω)) ĥ(ω)ᵀ``,
    so ``||D_cᵀD_c||₂ = max_ω Σ_p |ĥ_p(ω)|²`` exactly (used as ``L``; the released code
    tracks it by an EMA).  ``steps`` ISTA steps from ``init="one_step"`` with the
    exact soft threshold; output ``Y = D Z`` (queries and keys are not used).
``templates="both"`` (VARS-SD)
    Column concatenation of the dynamic random-feature templates (``features="random"``)
    and a given input-independent ``N x m_s`` template ``bank`` (columns scaled to unit
    norm); then the same solver as the dynamic path.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .. import _fft
from .._array import (
    as_generator,
    as_like,
    device_of,
    namespace,
    validate_attention_inputs,
    validate_float_array,
    validate_same_kind,
)
from .._validate import check_int, empty_attention, reject_unknown, renamed_keyword
from ..backends import resolve_backend
from .lasso import lasso, soft_threshold

__all__ = ["vars_attention"]

_TEMPLATES = ("dynamic", "static", "both")
_FEATURE_MAPS = ("vars", "kernel")
_FEATURES = ("exact_kernel", "random")


def _exact_kernel(q: Any, k: Any, v: Any, n_steps: int, scale: float, normalize: bool) -> Any:
    xp = namespace(q, k, v)
    S_qk = (q @ xp.matrix_transpose(k)) * scale
    if normalize:
        # row shifts of G_QK cancel in the normalization
        S_qk = S_qk - xp.max(S_qk, axis=-1, keepdims=True)
    G_qk = xp.exp(S_qk)
    ones = xp.ones((*v.shape[:-1], 1), dtype=v.dtype, device=device_of(v))
    R = xp.concat([v, ones], axis=-1) if normalize else v
    if n_steps == 1:
        W = R  # unit step (L = 1) from W = 0
    else:
        S_kk = (k @ xp.matrix_transpose(k)) * scale
        if normalize:
            # one global shift per batch element keeps G_KK a Gram matrix; with L scaling
            # alike, (I - G_KK/L) is unchanged and the output scale cancels
            S_kk = S_kk - xp.max(xp.max(S_kk, axis=-1, keepdims=True), axis=-2, keepdims=True)
        G_kk = xp.exp(S_kk)
        L = xp.max(xp.sum(G_kk, axis=-1, keepdims=True), axis=-2, keepdims=True)
        if hasattr(L, "detach"):
            L = L.detach()
        W = xp.zeros_like(R)
        for _ in range(n_steps):
            W = W + (R - G_kk @ W) / L
    Y = G_qk @ W
    if not normalize:
        return Y
    num, den = Y[..., :-1], Y[..., -1:]
    return num / den


def _kernel_features(q: Any, k: Any, v: Any, m: int, seed: Any, lam: float, n_steps: int,
                     scale: float, normalize: bool) -> Any:
    """Random-feature estimate of the exact-kernel path (same steps, features explicit)."""
    xp = namespace(q, k, v)
    d = q.shape[-1]
    W = as_like(as_generator(seed).standard_normal((d, m)), q)
    rs = math.sqrt(scale)

    def phi(u: Any) -> Any:
        u = u * rs
        return xp.exp(u @ W - 0.5 * xp.sum(u * u, axis=-1, keepdims=True)) / math.sqrt(m)

    Dk, Dq = phi(k), phi(q)
    ones = xp.ones((*v.shape[:-1], 1), dtype=v.dtype, device=device_of(v))
    R = xp.concat([v, ones], axis=-1) if normalize else v
    if n_steps == 1:
        L = 1.0
    else:  # largest row sum of the (positive) token Gram D Dᵀ, as the exact path
        L = xp.max(Dk @ xp.sum(xp.matrix_transpose(Dk), axis=-1, keepdims=True), axis=-2,
                   keepdims=True)
        if hasattr(L, "detach"):
            L = L.detach()
    Dt = xp.matrix_transpose(Dk)
    Z = xp.zeros((*Dk.shape[:-2], m, R.shape[-1]), dtype=v.dtype, device=device_of(v))
    for _ in range(n_steps):
        Z = soft_threshold(Z + Dt @ (R - Dk @ Z) / L, lam / L)
    Y = Dq @ Z
    if not normalize:
        return Y
    return Y[..., :-1] / Y[..., -1:]


def _static(v: Any, kernels: Any, lam: float, n_steps: int) -> Any:
    """VARS-S: ISTA on circulant (FFT) templates, per value channel."""
    xp = namespace(v)
    N = v.shape[-2]
    h = kernels / xp.linalg.vector_norm(kernels, axis=-1, keepdims=True)  # (..., C, P, N)
    H = _fft.rfft(h, N, axis=-1)  # (..., C, P, F)
    Hc = xp.conj(H)
    L = xp.max(xp.sum(xp.real(H * Hc), axis=-2, keepdims=True), axis=-1, keepdims=True)
    if hasattr(L, "detach"):
        L = L.detach()
    x = xp.matrix_transpose(v)[..., None, :]  # (..., C, 1, N)
    Xf = _fft.rfft(x, N, axis=-1)

    def DT(rf: Any) -> Any:  # Dᵀ r from r̂ (..., C, 1, F) -> (..., C, P, N)
        return _fft.irfft(Hc * rf, N, axis=-1)

    def Dz(z: Any) -> Any:  # (..., C, P, N) -> (..., C, 1, N)
        return _fft.irfft(xp.sum(H * _fft.rfft(z, N, axis=-1), axis=-2, keepdims=True), N,
                          axis=-1)

    z = soft_threshold(DT(Xf) / L, lam / L)  # init="one_step"
    for _ in range(n_steps):
        z = soft_threshold(z + DT(_fft.rfft(x - Dz(z), N, axis=-1)) / L, lam / L)
    return xp.matrix_transpose(Dz(z)[..., 0, :])


def _random_templates(q: Any, m: int, seed: Any) -> Any:
    xp = namespace(q)
    d = q.shape[-1]
    W = as_like(as_generator(seed).standard_normal((d, m)), q)
    u = q / xp.clip(xp.linalg.vector_norm(q, axis=-1, keepdims=True), min=1e-30)
    phi = xp.exp(u @ W - 0.5 * xp.sum(u * u, axis=-1, keepdims=True)) / math.sqrt(m)
    return phi / xp.linalg.vector_norm(phi, axis=-2, keepdims=True)


def vars_attention(
    q: Any,
    k: Any,
    v: Any,
    *,
    templates: str = "dynamic",
    features: str = "exact_kernel",
    lam: float = 0.0,
    steps: int = 1,
    normalize_rows: bool = True,
    scale: float | None = None,
    num_features: int | None = None,
    seed: Any = None,
    feature_map: str = "vars",
    kernels: Any = None,
    bank: Any = None,
    backend: str = "auto",
    check_finite: bool = True,
    **deprecated: Any,
) -> Any:
    """VARS attention: the reconstruction of ``v`` from input-dependent templates.

    Parameters
    ----------
    q : array, shape (..., L_q, d)
    k : array, shape (..., L_k, d)
    v : array, shape (..., L_k, d_v)
        numpy arrays or torch tensors of one dtype and device, identical leading
        (batch, head) dimensions, as in ``scaled_dot_product_attention``.  For
        ``features="random"`` the keys are tied to the queries (``k`` is only validated;
        ``L_q == L_k`` is required).
    templates : {"dynamic", "static", "both"}
        Dynamic (VARS-D, built from the queries), static (VARS-S, convolution
        ``kernels`` applied by FFT) or both (VARS-SD, dynamic random features plus the
        fixed ``bank``); module docstring.
    features : {"exact_kernel", "random"}
        Exact exponential-kernel form (λ = 0 only) or positive random features.
    lam : float
        ``λ >= 0``.  ``λ > 0`` needs explicit features (``features="random"``): the ℓ1
        penalty is not rotation invariant and does not kernelize.
    steps : int, default 1
        Number of unrolled solver steps (``>= 1``): a fixed count, not a convergence
        budget (that is ``max_iter`` in the solvers).  The older name ``n_steps=`` still
        works, with a ``DeprecationWarning``.
    normalize_rows : bool, default True
        Exact-kernel path: divide each output row by the same operator applied to a
        column of ones (with ``lam=0, steps=1`` this is softmax attention).  Ignored by
        the random-feature path.
    scale : float, optional
        Score scale of the exact kernel, default ``d**-0.5``.
    num_features : int, optional
        Number of random features (default ``2 d``).
    seed : int, SeedSequence or Generator
        Required for ``features="random"``.
    feature_map : {"vars", "kernel"}
        Random features of VARS-D (normalized; default) or the unnormalized
        exponential-kernel features (Monte-Carlo estimate of the exact-kernel path,
        honours ``scale``, ``normalize_rows``, untied keys).
    kernels : array, shape (..., d_v, P, L_k) or (P, L_k)
        ``templates="static"``: ``P`` convolution kernels per value channel (nonzero).
    bank : array, shape (..., L_k, m_s)
        ``templates="both"``: fixed templates (nonzero columns).
    backend : {"auto", "numpy", "numba", "torch"}
    check_finite : bool, default True

    Returns
    -------
    array, shape (..., L_q, d_v)

    Raises
    ------
    TypeError, ValueError
        Invalid inputs (named), ``lam > 0`` with the exact kernel, unknown options.

    Notes
    -----
    Exact kernel: ``O(L_q L_k (d + d_v))`` for one step, plus ``O(L_k² (d + d_v T))`` for
    ``T = steps > 1`` (step ``1/L`` with ``L`` the largest row sum of ``G_KK``, a bound
    on its spectral norm, gradient stopped).  Without ``normalize_rows`` no score shift
    is applied (exp overflow is the caller's concern).  Random features:
    ``O(L m (d + m + d_v))`` per step — linear in ``L``.  On torch, gradients flow
    through the unrolled steps.
    """
    steps = renamed_keyword(deprecated, "n_steps", "steps", steps, 1, "vars_attention")
    reject_unknown(deprecated, "vars_attention")
    _, L_q, L_k, d, _ = validate_attention_inputs(q, k, v, check_finite=check_finite)
    resolve_backend(backend, q, k, v)
    empty = empty_attention(q, k, v, L_q, L_k)
    if empty is not None:  # degenerate lengths (docs/reliability.rst)
        return empty
    if templates not in _TEMPLATES:
        raise ValueError(f"templates must be one of {_TEMPLATES}, got {templates!r}")
    if feature_map not in _FEATURE_MAPS:
        raise ValueError(f"feature_map must be one of {_FEATURE_MAPS}, got {feature_map!r}")
    if features not in _FEATURES:
        raise ValueError(f"features must be one of {_FEATURES}, got {features!r}")
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real):
        raise TypeError(f"lam must be a real number, got {lam!r}")
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    n_steps = check_int(steps, "steps", minimum=1)
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    elif isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(
        scale
    ):
        raise ValueError(f"scale must be a finite real number or None, got {scale!r}")
    if templates == "static":
        if kernels is None:
            raise TypeError("templates='static' needs kernels of shape (..., d_v, P, L_k)")
        validate_float_array(kernels, "kernels", min_ndim=2, check_finite=check_finite)
        validate_same_kind({"v": v, "kernels": kernels})
        if kernels.shape[-1] != L_k:
            raise ValueError(f"kernels must have length L_k={L_k}, got {tuple(kernels.shape)}")
        xp = namespace(v)
        if bool(xp.any(xp.linalg.vector_norm(kernels, axis=-1) == 0)):
            raise ValueError("kernels contains an all-zero kernel")
        return _static(v, kernels, float(lam), int(n_steps))
    if templates == "both" and features != "random":
        raise ValueError("templates='both' combines random-feature templates with bank: "
                         "use features='random'")
    if features == "exact_kernel":
        if lam != 0:
            raise ValueError(
                f"lam={lam} > 0 needs explicit features: the l1 penalty does not kernelize; "
                "use features='random' (with num_features and seed)"
            )
        return _exact_kernel(q, k, v, int(n_steps), float(scale), bool(normalize_rows))
    if L_q != L_k and feature_map == "vars":
        raise ValueError(
            f"features='random' ties keys to queries and needs L_q == L_k, got {L_q}, {L_k}"
        )
    if seed is None:
        raise TypeError("features='random' needs an explicit seed (int, SeedSequence, Generator)")
    m = 2 * d if num_features is None else num_features
    if isinstance(m, bool) or not isinstance(m, (numbers.Integral, np.integer)) or m < 1:
        raise ValueError(f"num_features must be a positive int, got {m!r}")
    if feature_map == "kernel":
        if templates != "dynamic":
            raise ValueError("feature_map='kernel' is for templates='dynamic' only")
        if normalize_rows and lam != 0:
            raise ValueError("feature_map='kernel' with normalize_rows needs lam=0")
        return _kernel_features(q, k, v, int(m), seed, float(lam), int(n_steps),
                                float(scale), bool(normalize_rows))
    D = _random_templates(q, int(m), seed)
    if templates == "both":
        if bank is None:
            raise TypeError("templates='both' needs bank of shape (..., L_k, m_s)")
        validate_float_array(bank, "bank", min_ndim=2, check_finite=check_finite)
        validate_same_kind({"q": q, "bank": bank})
        if bank.shape[-2] != L_k:
            raise ValueError(f"bank must have L_k={L_k} rows, got {tuple(bank.shape)}")
        xp = namespace(q)
        nb = xp.linalg.vector_norm(bank, axis=-2, keepdims=True)
        if bool(xp.any(nb == 0)):
            raise ValueError("bank has an all-zero column")
        bk = xp.broadcast_to(bank / nb, (*D.shape[:-1], bank.shape[-1]))
        D = xp.concat([D, bk], axis=-1)
    res = lasso(
        D, v, float(lam), method="ista", max_iter=int(n_steps), tol=0.0, L="rowsum",
        init="one_step", warn=False, backend=backend, check_finite=False,
    )
    return res.recon

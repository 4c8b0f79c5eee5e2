"""Adaptive context pooling (ContextPool; Huang, Talbott, Jaitly, Susskind, ICML 2022).

Two light predictors on ``X`` (a 1-D convolution over the sequence) give every token a
pooling weight ``m_j = sigmoid(a_j) ∈ (0, 1)`` and a support ``σ_i = σ_max ·
sigmoid(r_i) ∈ (0, σ_max)``.  The pooled features are

    y_i = Σ_j P_ij x_j,   P_ij = m_j g_i(j) / Σ_j' m_j' g_i(j'),   g_i(j) = exp(-(i-j)²/(2σ_i²)),

a row-stochastic smoothing operator that keeps the ``T`` tokens (attention then runs on
``Y``).  Causal mode zeroes ``g_i(j)`` for ``j > i`` (a one-sided window) and uses a
left-padded (causal) predictor convolution.

**Banded truncation.**  With ``truncation = k`` only offsets ``|i - j| <= w``,
``w = ceil(k σ_max)``, are kept (``O(T w d)`` instead of ``O(T² d)``).  Because
``σ_i < σ_max`` the truncated mass of row ``i`` is at most
``τ_i = max_j m_j · n_s Σ_{δ > w} exp(-δ²/(2σ_i²)) <= max_j m_j · n_s σ_i √(π/2)
erfc(w / (√2 σ_i))`` (``n_s = 2`` sides, 1 when causal), and the banded row differs
from the dense one by ``‖P_i - P̃_i‖_1 = 2 (S_i - S̃_i)/S_i <= 2 τ_i / S̃_i``, where
``S̃_i`` is the banded normalizer (``<= S_i``).  :meth:`ContextPool.tail_bound` returns
this computable bound; ``|y_i - ỹ_i|_∞ <= bound_i · max_j |x_j|_∞``.

All weights are formed in the log domain (``log m_j - (i-j)²/(2σ_i²)``, then a softmax
over ``j``), so no weight over- or underflows into a NaN, and ``σ_i → 0`` gives exactly
``P = I``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .._array import describe_array
from .._debug import resolve_check_finite
from ._common import check_input, check_positive_float, check_positive_int

__all__ = ["ContextPool", "gaussian_pooling", "gaussian_pooling_matrix"]


def _check_pool_args(x: Any, log_weights: Any, sigma: Any) -> None:
    for name, a in (("x", x), ("log_weights", log_weights), ("sigma", sigma)):
        if not isinstance(a, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(a).__name__}")
        if a.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"{name} must be float32 or float64, got {a.dtype}")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (..., T, d), got {tuple(x.shape)}")
    expect = tuple(x.shape[:-1])
    for name, a in (("log_weights", log_weights), ("sigma", sigma)):
        if tuple(a.shape) != expect:
            raise ValueError(
                f"{name} must have shape (..., T) = {expect} (x without its last "
                f"dimension), got {tuple(a.shape)}"
            )
        if a.dtype != x.dtype or a.device != x.device:
            raise TypeError(f"{name} must have x's dtype and device ({x.dtype}, {x.device})")


#: Supports below this act as this value: every off-centre log-weight is then at most
#: ``-1/(2·0.01²) = -5000``, whose exponential is exactly 0 in float32 and float64, so
#: ``σ → 0`` gives the identity pooling with finite gradients (no ``0/0`` anywhere).
SIGMA_FLOOR = 0.01


def _log_gauss(offset: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``-offset² / (2 max(σ, SIGMA_FLOOR)²)``, ``offset`` broadcast against ``σ[..., None]``.

    Exactly 0 at ``offset = 0`` whatever ``σ``; the floor keeps the forward and the
    backward finite for ``σ = 0`` (an underflowed sigmoid) — a ``torch.where`` around
    ``0/0`` would leak NaN into the gradient.
    """
    s = torch.clamp(sigma, min=SIGMA_FLOOR)
    return -torch.square(offset) / (2 * torch.square(s)[..., None])


def _check_pool_values(x: Any, log_weights: Any, sigma: Any, check_finite: Any) -> None:
    """Data-dependent checks (numpy-free: only when asked or inside ``debug()``)."""
    if not resolve_check_finite(check_finite, x):
        return
    if not bool(torch.isfinite(sigma).all()) or bool((sigma < 0).any()):
        raise ValueError(
            f"sigma must be finite and >= 0, got min {float(sigma.min())} (values below "
            f"{SIGMA_FLOOR} act as {SIGMA_FLOOR})"
        )
    if bool(torch.isnan(log_weights).any()) or bool((log_weights == math.inf).any()):
        raise ValueError("log_weights must be finite or -inf (an excluded token)")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"x contains NaN or Inf values ({describe_array(x)})")


def gaussian_pooling_matrix(log_weights: torch.Tensor, sigma: torch.Tensor, *,
                            half_width: int | None = None,
                            causal: bool = False,
                            check_finite: bool | None = None) -> torch.Tensor:
    """The dense pooling matrix ``P`` (``P_ij ∝ m_j exp(-(i-j)²/(2σ_i²))``).

    Parameters
    ----------
    log_weights : torch.Tensor, shape (..., T)
        ``log m_j`` (``-inf`` excludes token ``j``, e.g. padding).
    sigma : torch.Tensor, shape (..., T)
        Supports ``σ_i >= 0`` (values below ``SIGMA_FLOOR = 0.01`` act as 0.01: the
        identity up to ``exp(-5000)``).
    half_width : int, optional
        Keep only ``|i - j| <= half_width`` (the banded operator); None keeps all.
    causal : bool, default False
        Keep only ``j <= i``.
    check_finite : bool, optional
        Refuse NaN/Inf and ``σ < 0`` (default: only inside ``structattn.debug()``; the
        check synchronizes with the device).

    Returns
    -------
    torch.Tensor, shape (..., T, T)
        Row-stochastic (rows whose every weight is excluded are zero).

    Notes
    -----
    ``O(T²)`` time and memory.
    """
    if not isinstance(sigma, torch.Tensor):
        raise TypeError(f"sigma must be a torch.Tensor, got {type(sigma).__name__}")
    _check_pool_args(sigma[..., None], log_weights, sigma)
    _check_pool_values(sigma, log_weights, sigma, check_finite)
    T = sigma.shape[-1]
    i = torch.arange(T, device=sigma.device)
    off = (i[:, None] - i[None, :]).to(sigma.dtype)  # i - j
    logits = log_weights[..., None, :] + _log_gauss(off, sigma)
    keep = torch.ones(T, T, dtype=torch.bool, device=sigma.device)
    if causal:
        keep = keep & (off >= 0)
    if half_width is not None:
        keep = keep & (off.abs() <= half_width)
    return _masked_softmax(logits, keep)


def _masked_softmax(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    neg = torch.tensor(-math.inf, dtype=logits.dtype, device=logits.device)
    logits = torch.where(keep, logits, neg)
    top = logits.amax(dim=-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top)).detach()
    w = torch.exp(logits - top)
    den = w.sum(dim=-1, keepdim=True)
    return w / torch.where(den > 0, den, torch.ones_like(den))


def _band_logits(log_weights: torch.Tensor, sigma: torch.Tensor, half_width: Any,
                 causal: bool) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Banded log-weights ``(..., T, n_off)`` over the offsets ``δ = i - j``
    (``-w..w``; causal ``0..w``), the mask of in-range keys, and the offsets as ints."""
    if isinstance(half_width, bool) or not isinstance(half_width, int) or half_width < 0:
        raise ValueError(f"half_width must be an int >= 0 or None, got {half_width!r}")
    T = sigma.shape[-1]
    w = min(half_width, T - 1)
    lo = 0 if causal else -w
    offsets = torch.arange(lo, w + 1, device=sigma.device)  # δ = i - j
    i = torch.arange(T, device=sigma.device)
    j = i[:, None] - offsets[None, :]  # (T, n_off)
    inside = (j >= 0) & (j < T)
    logits = log_weights[..., j.clamp(0, T - 1)] + _log_gauss(offsets.to(sigma.dtype), sigma)
    return logits, inside, list(range(lo, w + 1))


def gaussian_pooling(x: torch.Tensor, log_weights: torch.Tensor, sigma: torch.Tensor, *,
                     half_width: int | None = None, causal: bool = False,
                     check_finite: bool | None = None) -> torch.Tensor:
    """Gaussian context pooling ``Y = P X`` without forming ``P`` when banded.

    Parameters
    ----------
    x : torch.Tensor, shape (..., T, d)
        Features to pool.
    log_weights : torch.Tensor, shape (..., T)
        ``log m_j``; ``-inf`` excludes a token.
    sigma : torch.Tensor, shape (..., T)
        Supports ``σ_i >= 0`` (below ``SIGMA_FLOOR = 0.01``: as 0.01, the identity).
    half_width : int, optional
        Band half-width ``w``: only offsets ``|i - j| <= w`` are summed, in
        ``O(T w d)`` time and ``O(T w + T d)`` memory.  None: the dense ``O(T² d)``
        product with :func:`gaussian_pooling_matrix`.
    causal : bool, default False
        Only ``j <= i``.
    check_finite : bool, optional
        Refuse NaN/Inf in ``x``, ``σ`` and NaN/+inf in ``log_weights``, and ``σ < 0``
        (default: only inside ``structattn.debug()``).

    Returns
    -------
    torch.Tensor, shape (..., T, d)
        ``gaussian_pooling_matrix(log_weights, sigma, half_width=..., causal=...) @ x``
        up to rounding.
    """
    _check_pool_args(x, log_weights, sigma)
    _check_pool_values(x, log_weights, sigma, check_finite)
    if half_width is None:
        return gaussian_pooling_matrix(log_weights, sigma, causal=causal,
                                       check_finite=False) @ x
    T = x.shape[-2]
    logits, inside, offsets = _band_logits(log_weights, sigma, half_width, causal)
    P = _masked_softmax(logits, inside)  # (..., T, n_off)
    out = torch.zeros_like(x)
    for c, d in enumerate(offsets):  # token i takes x_{i - d}
        lo, hi = max(0, d), min(T, T + d)
        if lo >= hi:
            continue
        out = out + nn.functional.pad(
            P[..., lo:hi, c, None] * x[..., lo - d:hi - d, :], (0, 0, lo, T - hi))
    return out


class ContextPool(nn.Module):
    """Adaptive context pooling: predicted per-token weights and Gaussian supports.

    Parameters
    ----------
    d_model : int
        Feature size (last dimension of the input).
    max_sigma : float, default 8.0
        Upper bound ``σ_max`` of the supports (``σ_i = σ_max · sigmoid(r_i)``).
    truncation : float or None, default 4.0
        ``k`` of the banded truncation, half-width ``w = ceil(k · σ_max)``; None for the
        dense ``O(T²)`` operator.
    kernel_size : int, default 3
        Width of the predictor convolution (odd when not causal; causal convolutions
        see the current and ``kernel_size - 1`` previous tokens).
    causal : bool, default False
        One-sided Gaussian window (``j <= i``) and causal predictors.
    check_finite : bool, optional
        Reject NaN/Inf inputs.  Default: only inside :func:`structattn.debug` (the scan
        is a host synchronization).

    Notes
    -----
    Time ``O(T w d)`` banded, ``O(T² d)`` dense; the predictors cost
    ``O(T d · kernel_size)``.  Input ``(..., T, d_model)``, output of the same shape.
    The predictors start at ``a = 0`` (``m = 1/2``) and ``r = 0``
    (``σ = σ_max / 2``) plus a small random component.

    Examples
    --------
    >>> import torch
    >>> from structattn.layers import ContextPool
    >>> pool = ContextPool(8, max_sigma=2.0, truncation=4.0)
    >>> x = torch.randn(3, 20, 8)
    >>> P = pool.pooling_matrix(x)
    >>> bool(torch.allclose(P.sum(-1), torch.ones(3, 20)))
    True
    >>> bool(torch.allclose(pool(x), P @ x, atol=1e-6))
    True
    """

    def __init__(self, d_model: int, *, max_sigma: float = 8.0,
                 truncation: float | None = 4.0, kernel_size: int = 3,
                 causal: bool = False, check_finite: bool | None = None) -> None:
        super().__init__()
        self.d_model = check_positive_int(d_model, "d_model")
        self.max_sigma = check_positive_float(max_sigma, "max_sigma")
        self.truncation = (None if truncation is None
                           else check_positive_float(truncation, "truncation"))
        self.kernel_size = check_positive_int(kernel_size, "kernel_size")
        if check_finite is not None and not isinstance(check_finite, bool):
            raise TypeError(f"check_finite must be a bool or None, got {check_finite!r}")
        for name, flag in (("causal", causal),):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        if not causal and self.kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be odd when causal=False (a centred window), got "
                f"{self.kernel_size}"
            )
        self.causal, self.check_finite = causal, check_finite
        self.predictor = nn.Conv1d(self.d_model, 2, self.kernel_size)
        nn.init.normal_(self.predictor.weight, std=0.02)
        nn.init.zeros_(self.predictor.bias)

    @property
    def half_width(self) -> int | None:
        """Band half-width ``w = ceil(k · σ_max)``, or None when dense."""
        if self.truncation is None:
            return None
        return math.ceil(self.truncation * self.max_sigma)

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted ``log m`` and ``σ``.

        Parameters
        ----------
        x : torch.Tensor, shape (..., T, d_model)

        Returns
        -------
        log_weights, sigma : torch.Tensor, shape (..., T)
        """
        check_input(x, "x", self.d_model, check_finite=self.check_finite, like=self)
        lead, T = x.shape[:-2], x.shape[-2]
        h = x.reshape(-1, T, self.d_model).transpose(1, 2)
        k = self.kernel_size
        left = k - 1 if self.causal else (k - 1) // 2
        h = nn.functional.pad(h, (left, k - 1 - left))
        a, r = self.predictor(h).unbind(dim=1)
        log_m = nn.functional.logsigmoid(a).reshape(*lead, T)
        sigma = (self.max_sigma * torch.sigmoid(r)).reshape(*lead, T)
        return log_m, sigma

    def pooling_matrix(self, x: torch.Tensor, *, banded: bool | None = None) -> torch.Tensor:
        """The ``(..., T, T)`` pooling operator ``P`` (the dense operator of the layer).

        Parameters
        ----------
        x : torch.Tensor, shape (..., T, d_model)
        banded : bool, optional
            True: the banded operator :meth:`forward` applies; False: the untruncated
            one.  Default: the one :meth:`forward` applies.

        Returns
        -------
        torch.Tensor, shape (..., T, T)
        """
        log_m, sigma = self.predict(x)
        banded = self.truncation is not None if banded is None else banded
        if banded and self.truncation is None:
            raise ValueError("banded=True needs truncation (this layer is dense)")
        w = self.half_width if banded else None
        return gaussian_pooling_matrix(log_m, sigma, half_width=w, causal=self.causal)

    dense_operator = pooling_matrix

    def tail_bound(self, x: torch.Tensor) -> torch.Tensor:
        """Per-row bound on ``‖P_i - P̃_i‖_1`` (dense vs banded rows).

        Parameters
        ----------
        x : torch.Tensor, shape (..., T, d_model)

        Returns
        -------
        torch.Tensor, shape (..., T)
            ``2 τ_i / S̃_i`` with ``τ_i = max_j m_j · n_s σ_i √(π/2) erfc(w/(√2 σ_i))``
            (module docstring); zeros for a dense layer.
        """
        log_m, sigma = self.predict(x)
        if self.truncation is None:
            return torch.zeros_like(sigma)
        w = self.half_width
        logits, inside, _ = _band_logits(log_m, sigma, w, self.causal)
        neg = torch.tensor(-math.inf, dtype=x.dtype, device=x.device)
        log_sb = torch.logsumexp(torch.where(inside, logits, neg), dim=-1)
        sides = 1.0 if self.causal else 2.0
        log_m_max = log_m.amax(dim=-1, keepdim=True)
        sigma = torch.clamp(sigma, min=SIGMA_FLOOR)
        tail = sides * sigma * math.sqrt(math.pi / 2) * torch.special.erfc(
            w / (math.sqrt(2.0) * sigma))
        return 2 * tail * torch.exp(log_m_max - log_sb)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool ``x``: ``Y = P X``.

        Parameters
        ----------
        x : torch.Tensor, shape (..., T, d_model)

        Returns
        -------
        torch.Tensor, shape (..., T, d_model)
        """
        log_m, sigma = self.predict(x)
        return gaussian_pooling(x, log_m, sigma, half_width=self.half_width,
                                causal=self.causal)

"""Recurrent (RNN-mode) causal linear attention with a fixed-size state cache.

Causal kernel attention with a (decayed) causal mask is a linear recurrence.  For the
mask ``M[i, j] = Σ_r a_r γ_r^{i-j}`` (``j <= i``) the output of token ``t`` is

.. math::

    S^{(r)}_t = γ_r S^{(r)}_{t-1} + φ(k_t) [v_t, 1]^T, \\qquad
    y_t = \\frac{φ(q_t) Σ_r a_r S^{(r)}_t[:, :d_v]}{φ(q_t) Σ_r a_r S^{(r)}_t[:, d_v]},

so generating a token costs ``O(m·d_v)`` time per term and the cache is the
``m x (d_v + 1)`` state per term, independent of the position — instead of the
``O(t·d)`` KV cache of softmax attention.  :class:`LinearAttentionCache` holds that state;
every ``step`` equals the matching row of
``kernel_attention(q, k, v, feature_map, mask=..., causal=True)`` on the whole sequence
(same features and stabilizers; tested for 1,000 steps).

Masks: ``None`` or :class:`~structattn.masks.Causal` (``γ = 1``),
:class:`~structattn.masks.DecayedCausal` (also ``exclusive=True``), and the exact
exponential-decay masks :class:`~structattn.masks.ExponentialDecay` (with
``gamma_right = 0``) and :class:`~structattn.masks.SumOfExponentials` (left terms only).
A mask's length ``L`` is ignored: the recurrence runs for any number of tokens.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._array import as_like, dtype_name, is_torch, namespace, validate_attention_inputs
from ._debug import resolve_check_finite
from ._inputs import HALF_DTYPES
from .backends import resolve_backend
from .backends.scan import causal_masked_matmul as _scan
from .features import KEY_LOG_HEADROOM, FeatureMap, PositiveRandomFeatures
from .masks import Causal, DecayedCausal, Mask
from .masks.toeplitz import _ExponentialSymbol

__all__ = ["LinearAttentionCache"]


def _mask_terms(mask: Any) -> tuple[list[tuple[float, float]], bool]:
    """``([(a_r, γ_r)], exclusive)`` of a causal exponential mask, or TypeError."""
    if mask is None:
        return [(1.0, 1.0)], False
    if isinstance(mask, Causal):
        return [(1.0, 1.0)], bool(mask.exclusive)
    if isinstance(mask, DecayedCausal):
        return [(1.0, float(mask.gamma))], bool(mask.exclusive)
    if isinstance(mask, _ExponentialSymbol):
        left, right = mask._terms()
        if right:
            raise ValueError(
                f"{type(mask).__name__} has terms towards later keys (not causal): "
                "recurrent decoding needs gamma_right = 0 / no right terms"
            )
        return [(float(a), float(g)) for a, g in left], False
    raise TypeError(
        "mask must be None, Causal, DecayedCausal, ExponentialDecay (gamma_right=0) or a "
        f"left-only SumOfExponentials; got {type(mask).__name__}"
        if isinstance(mask, Mask) else f"mask must be a structattn Mask or None, got "
        f"{type(mask).__name__}"
    )


class LinearAttentionCache:
    """Fixed-size state for token-by-token causal kernel attention.

    Parameters
    ----------
    feature_map : FeatureMap
        ``φ``, as given to :func:`~structattn.kernel_attention`.
    mask : Mask, optional
        ``None``/:class:`~structattn.masks.Causal`, :class:`~structattn.masks.DecayedCausal`,
        :class:`~structattn.masks.ExponentialDecay` (``gamma_right = 0``) or a left-only
        :class:`~structattn.masks.SumOfExponentials`.

    Attributes
    ----------
    position : int
        Number of tokens consumed so far.
    state_nbytes : int
        Bytes of the cache (independent of :attr:`position`).

    Notes
    -----
    ``prefill`` on ``L`` tokens costs what ``kernel_attention`` costs (a chunked causal
    scan, ``O(L·m·d_v)``); each ``step`` costs ``O(m·d + T·m·d_v)`` time for ``T`` mask
    terms and keeps ``T·m·(d_v + 1)`` numbers plus the key stabilizer (``m``), whatever
    the position.  Inputs are numpy arrays or torch tensors ``(..., L, d)`` as for
    :func:`~structattn.kernel_attention` (a step is ``L = 1``); float16/bfloat16 tensors
    are computed in float32 (the state is float32) and returned in their dtype.  The
    torch path never synchronizes with the host.

    Key stabilizers follow :func:`~structattn.kernel_attention` with ``causal=True``:
    they depend on the first key only.  For
    :class:`~structattn.features.PositiveRandomFeatures`, if a later key's
    log-features exceed the first key's by more than the headroom ``H``, the
    full-sequence computation switches to a data-independent cap for *all* keys; the
    cache then rescales its state to that cap (an exact change of stabilizer), so
    outputs still agree up to rounding.

    Examples
    --------
    >>> import numpy as np
    >>> import structattn as sa
    >>> from structattn.decoding import LinearAttentionCache
    >>> phi = sa.PositiveRandomFeatures(4, 16, seed=0)
    >>> q, k, v = np.random.default_rng(0).standard_normal((3, 1, 6, 4))
    >>> cache = LinearAttentionCache(phi)
    >>> y0 = cache.prefill(q[:, :4], k[:, :4], v[:, :4])
    >>> y4 = cache.step(q[:, 4:5], k[:, 4:5], v[:, 4:5])
    >>> full = sa.kernel_attention(q, k, v, phi, causal=True)
    >>> bool(np.allclose(y4, full[:, 4:5]))
    True
    """

    def __init__(self, feature_map: FeatureMap, mask: Mask | None = None) -> None:
        if not isinstance(feature_map, FeatureMap):
            raise TypeError(
                f"feature_map must be a structattn FeatureMap, got {type(feature_map).__name__}"
            )
        self.feature_map = feature_map
        self.mask = mask
        terms, self.exclusive = _mask_terms(mask)
        self._amplitudes = [a for a, _ in terms]
        self._gammas = [g for _, g in terms]
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget every token (the next call must be ``prefill`` or ``step``)."""
        self._S = None  # (T, ..., m, d_v + 1)
        self._first = None  # first key: PRF log-features (..., 1, m) or the key itself
        self._shift = None  # PRF: current per-feature key shift (..., 1, m)
        self._meta = None  # (batch, d, d_v, kind, dtype, device)
        self._gam = None
        self.position = 0

    @property
    def state_nbytes(self) -> int:
        """Bytes held by the cache (state and key stabilizer)."""
        total = 0
        for a in (self._S, self._first, self._shift):
            if a is not None:
                size = a.element_size() if is_torch(a) else a.itemsize
                total += int(math.prod(a.shape)) * int(size)
        return total

    # --------------------------------------------------------------- features
    def _prf(self) -> bool:
        return isinstance(self.feature_map, PositiveRandomFeatures)

    def _init_stabilizer(self, k: Any) -> None:
        """Record what the key stabilizer depends on: the first key."""
        fm = self.feature_map
        if self._prf():
            xp = namespace(k)
            lk = fm._log_features(k)
            self._first = lk[..., :1, :]
            bound = as_like(fm._feature_bounds(dtype_name(k)), k)
            self._bound = xp.where(self._first > bound, self._first, bound)
            self._shift = self._first
        else:
            self._first = k[..., :1, :]

    def _features(self, q: Any, k: Any) -> tuple[Any, Any, Any]:
        """Query/key features of ``q, k (..., L, d)`` with the cache's stabilizer.

        Returns ``(phi_q, phi_k, rescale)``: ``rescale (..., m, 1)`` multiplies the old
        state when the stabilizer changed (PRF cap), else None.
        """
        fm = self.feature_map
        xp = namespace(q, k)
        if not self._prf():
            if fm.attention_features.__func__ is not FeatureMap.attention_features:
                phi_q = fm.attention_features(q, self._first, causal=True)[0]
            else:
                phi_q = fm.queries(q)
            # causal key features depend on the first key only: prepend it
            both = xp.concat([self._first, k], axis=-2)
            return phi_q, fm.keys(both, causal=True)[..., 1:, :], None
        lk, lq = fm._log_features(k), fm._log_features(q)
        headroom = KEY_LOG_HEADROOM[dtype_name(k)]
        fits = xp.all(lk - self._first <= headroom, axis=(-2, -1), keepdims=True)
        old = self._shift
        # once capped, always capped (the full computation caps every key)
        capped_now = xp.logical_or(xp.logical_not(fits), xp.any(old != self._first,
                                                                 axis=-1, keepdims=True))
        shift = xp.where(capped_now, self._bound, self._first)
        self._shift = shift
        rescale = xp.exp(old - shift)  # 1 unless the stabilizer changed
        rescale = xp.reshape(rescale, (*rescale.shape[:-2], rescale.shape[-1], 1))
        lq = lq + shift
        phi_q = fm._stabilized(lq, xp.max(lq, axis=-1, keepdims=True))
        return phi_q, fm._stabilized(lk, shift), rescale

    # ---------------------------------------------------------------- checks
    def _prepare(self, q: Any, k: Any, v: Any, what: str) -> tuple[Any, Any, Any, Any]:
        checks = resolve_check_finite(None, q, k, v)
        out_dtype = None
        if all(is_torch(a) for a in (q, k, v)) and {dtype_name(a) for a in (q, k, v)} == {
                dtype_name(q)} and dtype_name(q) in HALF_DTYPES:
            out_dtype = q.dtype
            q, k, v = q.float(), k.float(), v.float()
        batch, L_q, L_k, d, dv = validate_attention_inputs(q, k, v, check_finite=checks)
        if L_q != L_k:
            raise ValueError(f"{what} needs q and k of the same length, got {L_q} and {L_k}")
        if what == "step" and L_q != 1:
            raise ValueError(
                f"step takes one token: q, k, v of shape (..., 1, d); got q.shape="
                f"{tuple(q.shape)} (use prefill for a prompt)"
            )
        resolve_backend("auto", q, k, v)
        meta = (batch, d, dv, is_torch(q), dtype_name(q), str(getattr(q, "device", "cpu")))
        if self._meta is not None and meta != self._meta:
            raise ValueError(
                f"{what}: inputs (batch {batch}, d={d}, d_v={dv}, {meta[4]} on {meta[5]}) "
                f"do not match the cache (batch {self._meta[0]}, d={self._meta[1]}, "
                f"d_v={self._meta[2]}, {self._meta[4]} on {self._meta[5]}); call reset()"
            )
        self._meta = meta
        return q, k, v, out_dtype

    def _gamma_like(self, like: Any) -> Any:
        """The decays ``(T, 1, …, 1)`` on ``like``'s device (converted once)."""
        key = (like.ndim, dtype_name(like), str(getattr(like, "device", "cpu")))
        if self._gam is None or self._gam[0] != key:
            g = np.asarray(self._gammas, dtype=np.float64)
            self._gam = (key, as_like(g.reshape((len(g),) + (1,) * like.ndim), like))
        return self._gam[1]

    def _combine(self, phi_q: Any, S: Any) -> Any:
        """``Σ_r a_r φ(q) S_r`` then the normalized output ``(..., L, d_v)``."""
        out = None
        for r, a in enumerate(self._amplitudes):
            part = phi_q @ S[r]
            part = part if a == 1.0 else part * a
            out = part if out is None else out + part
        num, den = out[..., :-1], out[..., -1:]
        xp = namespace(num)
        nonzero = den != 0
        return xp.where(nonzero, num / xp.where(nonzero, den, xp.ones_like(den)),
                        xp.zeros_like(num))

    # ----------------------------------------------------------------- public
    def prefill(self, q: Any, k: Any, v: Any) -> Any:
        """Consume a prompt and return its causal attention output.

        Parameters
        ----------
        q, k : array, shape (..., L, d)
        v : array, shape (..., L, d_v)

        Returns
        -------
        array, shape (..., L, d_v)
            Equal to ``kernel_attention(q, k, v, feature_map, mask=..., causal=True)``
            (on an empty cache; after earlier tokens, the rows that follow them).

        Notes
        -----
        ``O(L·m·(d + d_v))`` time; the state update is one ``m x L`` by
        ``L x (d_v + 1)`` product per mask term.
        """
        q, k, v, out_dtype = self._prepare(q, k, v, "prefill")
        if self.position > 0:  # continue an existing cache token by token
            ys = [self.step(q[..., t:t + 1, :], k[..., t:t + 1, :], v[..., t:t + 1, :])
                  for t in range(q.shape[-2])]
            y = namespace(q).concat(ys, axis=-2)
            return y if out_dtype is None else y.to(out_dtype)
        self._init_stabilizer(k)
        phi_q, phi_k, _ = self._features(q, k)
        xp = namespace(q, k, v)
        v1 = xp.concat([v, xp.ones_like(v[..., :1])], axis=-1)
        L = int(q.shape[-2])
        outs, states = None, []
        for a, g in zip(self._amplitudes, self._gammas, strict=True):
            part = _scan(phi_q, phi_k, v1, gamma=g, exclusive=self.exclusive)
            part = part if a == 1.0 else part * a
            outs = part if outs is None else outs + part
            with np.errstate(under="ignore"):
                w = as_like(g ** np.arange(L - 1, -1, -1, dtype=np.float64)[:, None], phi_k)
            states.append(xp.matrix_transpose(phi_k * w) @ v1)
        self._S = xp.stack(states, axis=0)
        self.position = L
        num, den = outs[..., :-1], outs[..., -1:]
        nonzero = den != 0
        y = xp.where(nonzero, num / xp.where(nonzero, den, xp.ones_like(den)),
                     xp.zeros_like(num))
        return y if out_dtype is None else y.to(out_dtype)

    def step(self, q_t: Any, k_t: Any, v_t: Any) -> Any:
        """Consume one token and return its output.

        Parameters
        ----------
        q_t, k_t : array, shape (..., 1, d)
        v_t : array, shape (..., 1, d_v)

        Returns
        -------
        array, shape (..., 1, d_v)
            Row ``position`` of the full-sequence ``kernel_attention(..., causal=True)``.

        Notes
        -----
        ``O(m·d + T·m·d_v)`` time and no allocation that grows with the position.
        """
        q, k, v, out_dtype = self._prepare(q_t, k_t, v_t, "step")
        xp = namespace(q, k, v)
        if self._S is None:
            self._init_stabilizer(k)
        phi_q, phi_k, rescale = self._features(q, k)
        v1 = xp.concat([v, xp.ones_like(v[..., :1])], axis=-1)
        update = xp.matrix_transpose(phi_k) @ v1  # (..., m, d_v + 1)
        if self._S is None:
            S_prev = xp.zeros_like(xp.stack([update] * len(self._gammas), axis=0))
        else:
            S_prev = self._S if rescale is None else self._S * rescale
        gam = self._gamma_like(update)
        S_new = gam * S_prev + update
        y = self._combine(phi_q, gam * S_prev if self.exclusive else S_new)
        self._S = S_new
        self.position += 1
        return y if out_dtype is None else y.to(out_dtype)

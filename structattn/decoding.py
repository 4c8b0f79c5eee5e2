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
from ._debug import debug_enabled, resolve_check_finite
from ._inputs import HALF_DTYPES
from ._underflow import (
    recompute_underflowed_rows,
    report_underflowed_rows,
    underflow_threshold,
)
from .attention import _safe_divide
from .backends import resolve_backend
from .backends.scan import causal_masked_matmul as _scan
from .features import KEY_LOG_HEADROOM, FeatureMap, PositiveRandomFeatures
from .masks import Causal, DecayedCausal, Mask
from .masks.toeplitz import _ExponentialSymbol

__all__ = ["LinearAttentionCache"]


def _host_checks(x: Any) -> bool:
    """Data-dependent checks run: numpy, or torch inside :func:`structattn.debug`."""
    return not is_torch(x) or debug_enabled()


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
    log-features exceed the first key's by more than the headroom ``H``, the cache
    raises the scale of the features concerned to that key's log-feature and rescales
    the state's rows (an exact change of stabilizer that drops only terms below
    ``e^-H`` times another term of the same feature), so a step's normalizer does not
    underflow and outputs agree with the full computation (whose underflowed rows are
    recomputed in the log domain) up to rounding.  With decaying masks a normalizer
    can still underflow after many steps of decay; on numpy (and on torch inside
    :func:`structattn.debug`) such rows raise a
    :class:`~structattn.attention.NormalizerWarning` and are returned as zeros.

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
        self._sig = None  # fast-path signature of a step's inputs (see _arm_fast)
        self._outer = None  # numpy: preallocated rank-one update of the fast step
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
        state when the stabilizer changed (PRF: a key would overflow), else None.
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
        old = self._shift
        shift = self._raised_shift(lk, old)
        self._shift = shift
        rescale = xp.exp(old - shift)  # 1 unless the stabilizer changed
        rescale = xp.reshape(rescale, (*rescale.shape[:-2], rescale.shape[-1], 1))
        lq = lq + shift
        phi_q = fm._stabilized(lq, xp.max(lq, axis=-1, keepdims=True))
        return phi_q, fm._stabilized(lk, shift), rescale

    def _raised_shift(self, lk: Any, shift: Any) -> Any:
        """The state's per-feature scale after keys ``lk (..., L, m)``.

        Feature ``r`` keeps its scale ``c_r`` (at first the first key's log-feature)
        while every key stays within the headroom ``H`` above it; a key beyond raises
        ``c_r`` to the largest such log-feature.  The state's row ``r`` is then
        multiplied by ``exp(c_old - c_new)``: a contribution this drops is below
        ``e^-H`` times the new key's contribution *to the same feature*, so it is
        negligible for every query — the state never loses a term that matters and a
        step's normalizer never underflows (without decay).
        """
        xp = namespace(lk)
        top = xp.max(lk, axis=-2, keepdims=True)
        return xp.where(top - shift > KEY_LOG_HEADROOM[dtype_name(lk)], top, shift)

    def _prompt_features(self, q: Any, k: Any) -> tuple[Any, Any, Any]:
        """``(phi_q, phi_k, phi_k_state)`` of a prompt.

        The rows are those of the full computation (``kernel_attention`` with
        ``causal=True``: the first key's shift, or the data-independent cap when a key
        would overflow it); the state is built with the cache's own per-feature scale
        (:meth:`_raised_shift`), the same features unless some key exceeds the first
        by more than ``H``.
        """
        fm = self.feature_map
        xp = namespace(q, k)
        lk, lq = fm._log_features(k), fm._log_features(q)
        first = self._first
        fits = xp.all(lk - first <= KEY_LOG_HEADROOM[dtype_name(k)], axis=(-2, -1),
                      keepdims=True)
        shift = xp.where(fits, first, self._bound)
        lq = lq + shift
        phi_q = fm._stabilized(lq, xp.max(lq, axis=-1, keepdims=True))
        phi_k = fm._stabilized(lk, shift)
        self._shift = self._raised_shift(lk, first)
        if not is_torch(k) and bool(np.all(fits)):
            return phi_q, phi_k, phi_k  # the same shift: the same features
        return phi_q, phi_k, fm._stabilized(lk, self._shift)

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
        if _host_checks(den) and not (self.exclusive and self.position == 0) and (
                float(den.min()) < underflow_threshold(den)):
            report_underflowed_rows(den, "a decoding step")
        return _safe_divide(num, den)

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
        if self._prf():
            phi_q, phi_k, phi_state = self._prompt_features(q, k)
        else:
            phi_q, phi_k, _ = self._features(q, k)
            phi_state = phi_k
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
            states.append(xp.matrix_transpose(phi_state * w) @ v1)
        self._S = xp.stack(states, axis=0)
        self.position = L
        self._arm_fast(q, v, out_dtype)
        num, den = outs[..., :-1], outs[..., -1:]
        y = _safe_divide(num, den)
        if _host_checks(den):
            # rows whose normalizer underflowed: recomputed as kernel_attention does
            y = recompute_underflowed_rows(y, den, q, k, v, self.feature_map,
                                           self._prefill_mask(L))
        return y if out_dtype is None else y.to(out_dtype)

    def _prefill_mask(self, L: int) -> Mask:
        """The ``L x L`` mask of a prompt (the recomputation of underflowed rows)."""
        if self.mask is None or isinstance(self.mask, Causal):
            return Causal(L, exclusive=self.exclusive)
        if isinstance(self.mask, DecayedCausal):
            return DecayedCausal(L, self.mask.gamma, exclusive=self.exclusive)
        return self.mask

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
        if self._fast_inputs(q_t, k_t, v_t):
            return self._step_fast(q_t, k_t, v_t)
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
        self._arm_fast(q, v, out_dtype)
        return y if out_dtype is None else y.to(out_dtype)

    # -------------------------------------------------------------- fast step
    def _arm_fast(self, q: Any, v: Any, out_dtype: Any) -> None:
        """After a validated call: what a step needs, converted once per cache.

        The signature (kind, one-token shapes, dtype, device) of the inputs already
        validated; the decays; for positive random features the scaled projection
        ``(√t W)ᵀ``, ``t/2`` and ``log F^{-1/2}``, and (numpy) whether the key
        stabilizer is capped — a host flag, as a numpy comparison costs no sync.
        """
        if out_dtype is not None or self._S is None:
            self._sig = None  # half precision: the general path casts every step
            return
        torch_in = is_torch(q)
        shape_q = (*q.shape[:-2], 1, q.shape[-1])
        shape_v = (*v.shape[:-2], 1, v.shape[-1])
        self._sig = (type(q), shape_q, shape_v, q.dtype, getattr(q, "device", None))
        self._decays = [(i, g) for i, g in enumerate(self._gammas) if g != 1.0]
        self._torch = torch_in
        if self._prf():
            fm = self.feature_map
            W = fm.projection * math.sqrt(fm.temperature)
            if fm.hyperbolic:
                W = np.concatenate([W, -W])
            self._wt = as_like(np.ascontiguousarray(W.T), q)
            self._t_half = fm.temperature / 2
            self._log_norm = math.log(fm._norm())
            self._headroom = KEY_LOG_HEADROOM[dtype_name(q)]
        if not torch_in:
            d = int(q.shape[-1])
            self._range_limit = float(np.finfo(q.dtype).max) / 16 / d

    def _fast_inputs(self, q: Any, k: Any, v: Any) -> bool:
        """True when ``q, k, v`` match the validated signature and pass the checks.

        numpy (checked by default): one ``max |x|`` reduction per input gives the NaN/Inf
        scan and the score-range check of the first call; any failure goes to the general
        path, which raises the precise error.  torch: only outside
        :func:`structattn.debug` and when autograd does not record (in-place updates).
        """
        sig = self._sig
        if sig is None:
            return False
        kind, shape_q, shape_v, dtype, device = sig
        if not (type(q) is kind and type(k) is kind and type(v) is kind):
            return False
        if q.shape != shape_q or k.shape != shape_q or v.shape != shape_v:
            return False
        if q.dtype != dtype or k.dtype != dtype or v.dtype != dtype:
            return False
        if self._torch:
            import torch

            from ._debug import debug_enabled

            if q.device != device or k.device != device or v.device != device:
                return False
            tracked = torch.is_grad_enabled() and (
                q.requires_grad or k.requires_grad or v.requires_grad or self._S.requires_grad)
            return not tracked and not debug_enabled()
        big = max(float(np.max(np.abs(q))), float(np.max(np.abs(k))))
        return big * big < self._range_limit and bool(np.isfinite(np.max(np.abs(v))))

    def _step_fast(self, q: Any, k: Any, v: Any) -> Any:
        """:meth:`step` on inputs matching the cache: in place, no validation repeated.

        Same arithmetic as the general step (features, stabilizer, decay, update) on the
        preallocated state: ``S ← γ S`` and ``S[..., :d_v] += φ(k)ᵀ v``,
        ``S[..., d_v] += φ(k)`` in place, the query-side ``-|q|²/2`` skipped (a per-row
        constant removed by the row maximum).
        """
        S = self._S
        dv = S.shape[-1] - 1
        if self._prf():
            phi_q, phi_k = (self._prf_torch if self._torch else self._prf_numpy)(q, k)
        else:
            phi_q, phi_k, rescale = self._features(q, k)
            if rescale is not None:
                S *= rescale
        for r, g in self._decays:
            S[r] *= g
        if self.exclusive:
            y = self._combine(phi_q, S)
        if self._torch:
            phi_kt = phi_k.transpose(-1, -2)
            outer = phi_kt * v  # (..., m, d_v): the rank-one update (caching allocator)
        else:
            phi_kt = np.swapaxes(phi_k, -1, -2)
            # preallocated: no per-step allocation of the m x d_v update block
            shape = (*S.shape[1:-1], dv)
            if self._outer is None or self._outer.shape != shape:
                self._outer = np.empty(shape, dtype=S.dtype)
            outer = np.multiply(phi_kt, v, out=self._outer)
        S[..., :dv] += outer
        S[..., dv:] += phi_kt
        if not self.exclusive:
            y = self._combine(phi_q, S)
        self.position += 1
        return y

    def _prf_numpy(self, q: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positive random features of one token, the key stabilizer as a host branch."""
        lk = k @ self._wt
        lk -= self._t_half * np.sum(k * k, axis=-1, keepdims=True)
        shift = self._shift
        if bool(np.any(lk - shift > self._headroom)):  # a key would overflow: raise
            new = self._raised_shift(lk, shift)
            self._S *= np.swapaxes(np.exp(shift - new), -1, -2)
            self._shift = shift = new
        lq = q @ self._wt
        lq += shift
        lq -= np.max(lq, axis=-1, keepdims=True) - self._log_norm
        lk -= shift - self._log_norm
        return np.exp(lq, out=lq), np.exp(lk, out=lk)

    def _prf_torch(self, q: Any, k: Any) -> tuple[Any, Any]:
        """Positive random features of one token; the stabilizer without host sync."""
        import torch

        lk = k @ self._wt
        lk -= self._t_half * (k * k).sum(-1, keepdim=True)
        old = self._shift
        shift = torch.where(lk - old > self._headroom, lk, old)  # raised where needed
        self._S *= torch.exp(old - shift).transpose(-1, -2)  # 1 unless raised just now
        self._shift = shift
        lq = q @ self._wt
        lq += shift
        lq -= lq.amax(-1, keepdim=True) - self._log_norm
        lk -= shift - self._log_norm
        return lq.exp_(), lk.exp_()

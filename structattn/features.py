"""Feature maps ``φ`` for kernelized (linear) attention.

A feature map turns queries and keys of shape ``(..., L, d)`` into features of shape
``(..., L, F)`` so that ``φ(q)·φ(k)`` is (an estimate of) a kernel ``κ(q, k)``.
Random maps estimate the softmax kernel ``exp(q·k·scale)`` (``scale = d**-0.5`` by
default, so that ``kernel_attention(q, k, v, φ)`` approximates
``softmax_attention(q, k, v)``):

* :class:`PositiveRandomFeatures` — FAVOR+ (Performer), strictly positive, optional
  hyperbolic (antithetic) variant;
* :class:`TrigonometricRandomFeatures` — random Fourier features (RFA); unbiased but
  signed, so attention normalizers can cross zero;
* :class:`EluFeatures`, :class:`ReluFeatures` — deterministic maps of linear attention
  (they define their own kernel and do not approximate softmax).

Each map has three entry points:

``map(x)``
    the raw features, for which ``E[map(q)·map(k)] = κ(q, k)``;
``map.queries(x)`` / ``map.keys(x, causal=...)``
    the features used inside attention, with stabilizers that cancel in the
    row-normalized output (kernels.md §1.3): a per-row shift for queries, one shift per
    batch element for keys (the max over all keys; with ``causal=True`` the first key's
    max, which every row sees, so no future key can change an earlier output, not even
    in the last bit; a data-independent cap takes over only if a later key would
    overflow — see :class:`PositiveRandomFeatures`).

Randomness only ever comes from an explicit ``seed`` (int or numpy Generator);
:meth:`RandomFeatureMap.redraw` returns a new map with fresh draws and is never called
implicitly.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._array import (
    as_generator,
    as_like,
    dtype_name,
    is_numpy,
    is_torch,
    namespace,
    validate_float_array,
)
from ._debug import resolve_check_finite
from ._validate import check_int, check_real, check_scale

__all__ = [
    "EluFeatures",
    "FeatureMap",
    "PositiveRandomFeatures",
    "RandomFeatureMap",
    "ReluFeatures",
    "TrigonometricRandomFeatures",
    "gaussian_projection",
    "orthogonal_gaussian",
]


#: Headroom ``H`` of causal positive key features: their log-features are at most ``H``
#: (small enough that ``L · e^H · |v|`` sums stay far from overflow).
KEY_LOG_HEADROOM: dict[str, float] = {"float32": 60.0, "float64": 600.0}


# --------------------------------------------------------------------------- draws
def orthogonal_gaussian(
    num_rows: int,
    dim: int,
    seed: Any,
    *,
    scaling: str = "chi",
    sign_fix: bool = True,
) -> np.ndarray:
    """Orthogonal random features: blocks of ``dim`` orthogonal rows with Gaussian norms.

    Each block is the ``Q`` factor of a ``dim x dim`` standard Gaussian matrix.  With
    ``sign_fix`` the columns of ``Q`` are multiplied by ``sign(diag(R))``, which makes
    ``Q`` Haar-distributed (Householder QR leaves data-dependent signs on ``diag(R)``;
    without the fix the first row of every block has a fixed-sign first coordinate).
    Rows are then rescaled so each is marginally ``N(0, I)``.

    Parameters
    ----------
    num_rows : int
        Number of rows ``m`` (blocks are stacked and the last one truncated).
    dim : int
        Dimension ``d``.
    seed : int or numpy.random.Generator
    scaling : {"chi", "sqrt_d"}
        ``"chi"``: each row's norm is that of an independent ``N(0, I_d)`` vector
        (unbiased estimators); ``"sqrt_d"``: every row has norm ``sqrt(d)``
        (deterministic norms, slightly biased).
    sign_fix : bool
        Apply the QR sign fix (keep True; False exists to demonstrate the bias).

    Returns
    -------
    numpy.ndarray, shape (num_rows, dim), float64

    Notes
    -----
    ``O(ceil(m/d) · d³)`` time for the QR factorizations.
    """
    _check_positive_int(num_rows, "num_rows")
    _check_positive_int(dim, "dim")
    if scaling not in ("chi", "sqrt_d"):
        raise ValueError(f"scaling must be 'chi' or 'sqrt_d', got {scaling!r}")
    rng = as_generator(seed)
    blocks = []
    for _ in range(math.ceil(num_rows / dim)):
        Q, R = np.linalg.qr(rng.standard_normal((dim, dim)))
        if sign_fix:
            Q = Q * np.where(np.diag(R) < 0, -1.0, 1.0)[None, :]
        blocks.append(Q.T)
    W = np.concatenate(blocks, axis=0)[:num_rows]
    if scaling == "chi":
        norms = np.linalg.norm(rng.standard_normal((num_rows, dim)), axis=1)
    else:
        norms = np.full(num_rows, math.sqrt(dim))
    return W * norms[:, None]


def gaussian_projection(num_rows: int, dim: int, seed: Any) -> np.ndarray:
    """I.i.d. standard Gaussian projection, shape ``(num_rows, dim)``, float64."""
    _check_positive_int(num_rows, "num_rows")
    _check_positive_int(dim, "dim")
    return as_generator(seed).standard_normal((num_rows, dim))


def _check_positive_int(value: Any, name: str) -> int:
    return check_int(value, name, minimum=1)


# --------------------------------------------------------------------- base classes
class FeatureMap(abc.ABC):
    """Base class of feature maps ``φ: (..., L, d) -> (..., L, F)``.

    Attributes
    ----------
    nonnegative : bool
        True when features are ``>= 0`` (positive normalizers with a nonnegative mask).
    approximates_softmax : bool
        True when ``φ(q)·φ(k)`` estimates ``exp(q·k·scale)``.
    """

    nonnegative: bool = True
    approximates_softmax: bool = False

    @abc.abstractmethod
    def feature_dim(self, d: int) -> int:
        """Number of output features ``F`` for inputs of size ``d``."""

    @abc.abstractmethod
    def _features(self, x: Any) -> Any:
        """Raw features of a validated input."""

    def _check(self, x: Any, name: str) -> None:
        validate_float_array(x, name, min_ndim=2, check_finite=False)

    def __call__(self, x: Any, *, check_finite: bool | None = None) -> Any:
        """Raw features ``φ(x)``, shape ``(..., L, F)``: ``E[φ(q)·φ(k)] = κ(q, k)``.

        ``check_finite`` (default: numpy inputs, or torch inside ``structattn.debug()``)
        refuses NaN/Inf in ``x`` with a ``ValueError``.
        """
        self._check(x, "x")
        if resolve_check_finite(check_finite, x):
            validate_float_array(x, "x", min_ndim=2, check_finite=True)
        return self._features(x)

    def attention_features(self, q: Any, k: Any, *, causal: bool = False) -> tuple[Any, Any]:
        """``(queries(q), keys(k, causal=causal))``: the pair attention multiplies.

        Maps whose stabilizers can be balanced between the two sides (moving a
        per-feature factor from the keys to the queries, which cancels exactly in
        ``φ(q)·φ(k)``) override this; see :class:`PositiveRandomFeatures`.
        """
        return self.queries(q), self.keys(k, causal=causal)

    def queries(self, x: Any) -> Any:
        """Query features for attention, shape ``(..., L_q, F)`` (row scaling cancels)."""
        self._check(x, "q")
        return self._features(x)

    def keys(self, x: Any, *, causal: bool = False) -> Any:
        """Key features for attention, shape ``(..., L_k, F)``.

        ``causal=True`` promises that no key's features depend on later keys.
        """
        self._check(x, "k")
        return self._features(x)


@dataclass(frozen=True, eq=False)
class RandomFeatureMap(FeatureMap):
    """Shared machinery of random-projection feature maps of the softmax kernel.

    Parameters
    ----------
    dim : int
        Input size ``d`` (the head dimension).
    num_features : int
        Number of random projections ``m`` (``F`` may be ``2m``, see subclasses).
    seed : int or numpy.random.Generator, optional
        Source of the draws; required unless ``projection`` is given.
    orthogonal : bool, default True
        Orthogonal blocks (lower variance) instead of i.i.d. Gaussian rows.
    scale : float, optional
        Softmax temperature; ``exp(q·k·scale)`` is estimated.  Default ``dim**-0.5``.
    projection : array, shape (num_features, dim), optional
        Use these projection rows instead of drawing (tests, sharing draws).
    """

    dim: int
    num_features: int = 256
    seed: Any = None
    orthogonal: bool = True
    scale: float | None = None
    projection: Any = None
    _cache: dict = field(default_factory=dict, init=False, repr=False)

    approximates_softmax = True

    def __post_init__(self) -> None:
        _check_positive_int(self.dim, "dim")
        _check_positive_int(self.num_features, "num_features")
        check_scale(self.scale)
        if self.projection is None:
            if self.seed is None:
                raise TypeError(
                    f"{type(self).__name__} needs an explicit seed= (int or numpy "
                    "Generator) or a projection= array"
                )
            draw = orthogonal_gaussian if self.orthogonal else gaussian_projection
            W = draw(self.num_features, self.dim, self.seed)
        else:
            W = np.asarray(self.projection, dtype=np.float64)
            if W.shape != (self.num_features, self.dim):
                raise ValueError(
                    f"projection must have shape (num_features, dim) = "
                    f"({self.num_features}, {self.dim}), got {W.shape}"
                )
            if not np.all(np.isfinite(W)):
                raise ValueError("projection contains NaN or Inf values")
        object.__setattr__(self, "projection", W)

    @property
    def temperature(self) -> float:
        """The softmax scale actually used (``dim**-0.5`` unless given)."""
        return self.dim**-0.5 if self.scale is None else float(self.scale)

    def redraw(self, seed: Any) -> RandomFeatureMap:
        """A new feature map with fresh projections drawn from ``seed``.

        The map itself is immutable; redrawing is always explicit.
        """
        return dataclasses.replace(self, seed=seed, projection=None)

    def _check(self, x: Any, name: str) -> None:
        super()._check(x, name)
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"{name}.shape[-1] must equal the feature map's dim={self.dim}, "
                f"got {name}.shape={tuple(x.shape)}"
            )

    def _weights(self, like: Any) -> Any:
        """The projection on ``like``'s kind/dtype/device (cached per device and dtype)."""
        if not is_torch(like):
            return self.projection.astype(like.dtype, copy=False)
        key = (str(like.device), str(like.dtype))
        if key not in self._cache:
            self._cache[key] = as_like(self.projection, like)
        return self._cache[key]

    def _projected(self, x: Any) -> tuple[Any, Any]:
        """``(x_s Wᵀ, |x_s|²/2)`` with ``x_s = x · scale**0.5``."""
        xp = namespace(x)
        xs = x * math.sqrt(self.temperature)
        proj = xs @ xp.matrix_transpose(self._weights(x))
        half_sq = xp.sum(xs * xs, axis=-1, keepdims=True) / 2
        return proj, half_sq


# ------------------------------------------------------------------- random features
@dataclass(frozen=True, eq=False)
class PositiveRandomFeatures(RandomFeatureMap):
    """FAVOR+ positive random features of the softmax kernel (Performer).

    ``φ(x) = m^{-1/2} exp(W x_s - |x_s|²/2)`` with ``x_s = x·scale^{1/2}`` and rows
    ``w_r ~ N(0, I)``: ``E[φ(q)·φ(k)] = exp(q·k·scale)``, and every feature is positive.
    The hyperbolic variant uses ``(2m)^{-1/2} exp(-|x_s|²/2) [exp(W x_s), exp(-W x_s)]``
    (``2m`` features from ``m`` draws, lower variance).

    Parameters
    ----------
    dim, num_features, seed, orthogonal, scale, projection
        See :class:`RandomFeatureMap`.
    hyperbolic : bool, default False
        Use the antithetic ``[exp(Wx), exp(-Wx)]`` features.
    eps : float, default 0.0
        Added to every stabilized attention feature.  The reference implementations
        add 1e-4 or 1e-6; any ``eps > 0`` biases the estimate by a data-dependent
        amount, so the default is 0.

    Notes
    -----
    Features cost ``O(L·m·d)``.  Stabilizers inside attention (scalar shifts that
    cancel exactly in the row-normalized output): query log-features get their per-row
    max subtracted; key log-features get one shift per batch element — the max over all
    keys and features when not causal; when causal, the *first* key's max (every row
    sees the first key, so no later key changes an earlier output, not even in the last
    bit).  If a later key would then overflow (its log-features exceed the first key's
    by more than the exponent range), the shift is raised to at least
    ``max_r |w_r|²/2 - H`` (``H`` = ``KEY_LOG_HEADROOM``: 60 in float32, 600 in
    float64), which caps every key log-feature at ``H`` because
    ``w_r·k - |k|²/2 <= |w_r|²/2`` for any key; only in that pathological case do later
    keys influence the stabilizer.  Entry MSE grows like ``exp(|q_s + k_s|²)/m``: large-norm
    inputs need many features.

    Examples
    --------
    >>> import numpy as np
    >>> from structattn import PositiveRandomFeatures
    >>> phi = PositiveRandomFeatures(dim=4, num_features=8, seed=0)
    >>> phi(np.zeros((1, 3, 4))).shape
    (1, 3, 8)
    """

    hyperbolic: bool = False
    eps: float = 0.0

    nonnegative = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_real(self.eps, "eps", minimum=0.0)

    def feature_dim(self, d: int) -> int:
        return 2 * self.num_features if self.hyperbolic else self.num_features

    def _log_features(self, x: Any) -> Any:
        xp = namespace(x)
        proj, half_sq = self._projected(x)
        logits = xp.concat([proj, -proj], axis=-1) if self.hyperbolic else proj
        return logits - half_sq

    def _norm(self) -> float:
        return 1.0 / math.sqrt(self.feature_dim(self.dim))

    def _key_bound(self, like: Any) -> float:
        """``max_r |w_r|²/2 - H``: key log-features minus it are at most ``H``."""
        half_sq = 0.5 * float(np.max(np.sum(self.projection**2, axis=-1)))
        return half_sq - KEY_LOG_HEADROOM[dtype_name(like)]

    def _features(self, x: Any) -> Any:
        return namespace(x).exp(self._log_features(x)) * self._norm()

    def _stabilized(self, logf: Any, shift: Any) -> Any:
        """``exp(logf - shift) · m^{-1/2} + eps`` in one exponential pass."""
        feats = namespace(logf).exp(logf - (shift - math.log(self._norm())))
        return feats + self.eps if self.eps else feats

    def queries(self, x: Any) -> Any:
        self._check(x, "q")
        logf = self._log_features(x)
        return self._stabilized(logf, namespace(x).max(logf, axis=-1, keepdims=True))

    def attention_features(self, q: Any, k: Any, *, causal: bool = False) -> tuple[Any, Any]:
        """Query and key features with a balanced, per-feature stabilizer.

        Every key feature ``r`` is shifted by its own ``c_r`` and ``c_r`` is added to
        the query log-features before their per-row max is subtracted; the shifts cancel
        exactly in ``φ(q)·φ(k)``.  Non-causal: ``c_r = max_j log φ_r(k_j)``, so for every
        query the largest term of its normalizer is exactly ``1/F`` — the normalizer
        cannot underflow, whatever the input magnitudes.  Causal: ``c_r`` is the first
        key's ``log φ_r(k_1)`` (every row sees it, so the same guarantee holds and no key
        after ``i`` changes row ``i``); only if a later key's log-features would exceed
        it by more than ``H`` (``KEY_LOG_HEADROOM``) is ``c_r`` raised to at least
        ``|w_r|²/2 - H`` (then no key overflows).  The choice is an array ``where``, not
        a Python branch: no host synchronization on torch.

        Returns
        -------
        (array (..., L_q, F), array (..., L_k, F))
        """
        self._check(q, "q")
        self._check(k, "k")
        if k.shape[-2] == 0:
            return self.queries(q), self.keys(k, causal=causal)
        # the fused kernels implement this class's projection; a subclass with its own
        # (e.g. the population's stacked per-member projections) takes the generic path
        if type(self)._projected is RandomFeatureMap._projected:
            if _fused_applies(q, k):
                return self._fused_attention_features(q, k, causal)
            if is_torch(q) and is_torch(k):
                from .backends.torch import features as tkernels

                W = self._weights(q)  # the cached device copy (a layer's buffer)
                if tkernels.applies(q, k, W):  # no autograd: one tensor per side, in place
                    key = ("torch-bounds", str(q.device), str(q.dtype))
                    if key not in self._cache:
                        self._cache[key] = as_like(self._feature_bounds(dtype_name(q)), q)
                    wt = tkernels.scaled_weights_t(W, math.sqrt(self.temperature),
                                                   self.hyperbolic)
                    return tkernels.attention_features(
                        q, k, wt, half_temp=self.temperature / 2,
                        log_norm=math.log(self._norm()), bound=self._cache[key],
                        headroom=KEY_LOG_HEADROOM[dtype_name(k)], causal=causal,
                        eps=self.eps)
        xp = namespace(q, k)
        lq, lk = self._log_features(q), self._log_features(k)
        if causal:
            first = lk[..., :1, :]
            bound = as_like(self._feature_bounds(dtype_name(k)), k)
            capped = xp.where(first > bound, first, bound)
            # the first key's shift unless a later key would exceed it by more than H
            # (a 0-d flag per batch element, selected without a host synchronization)
            headroom = KEY_LOG_HEADROOM[dtype_name(k)]
            fits = xp.all(lk - first <= headroom, axis=(-2, -1), keepdims=True)
            shift = xp.where(fits, first, capped)
        else:
            shift = xp.max(lk, axis=-2, keepdims=True)
        lq = lq + shift
        phi_q = self._stabilized(lq, xp.max(lq, axis=-1, keepdims=True))
        return phi_q, self._stabilized(lk, shift)

    def _scaled_weights_t(self, dtype: np.dtype) -> np.ndarray:
        """``(scale^{1/2} W)ᵀ`` (``[W; -W]`` when hyperbolic), shape ``(d, F)``, cached."""
        key = ("scaled_t", np.dtype(dtype).str)
        if key not in self._cache:
            W = self.projection * math.sqrt(self.temperature)
            if self.hyperbolic:
                W = np.concatenate([W, -W])
            self._cache[key] = np.ascontiguousarray(W.T, dtype=dtype)
        return self._cache[key]

    def _fused_attention_features(self, q: np.ndarray, k: np.ndarray, causal: bool
                                  ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`attention_features` on numpy arrays with the fused numba kernels.

        Same stabilizers, fewer passes: the scale is folded into the projection, the
        GEMM and the row terms run blockwise in cache, the key column maxima (the
        non-causal shift and the causal headroom test ``max_j l_jr - l_1r <= H``, equal
        to the elementwise test because rounded subtraction is monotone) come out of the
        same pass, and the exponentials are numpy's, in place.  Query log-features skip
        ``-|q_s|²/2``: a per-row constant, removed exactly by the row maximum (and
        skipping it avoids its rounding).  ``2·(L_q + L_k)·d·F`` flops, about five
        passes over the ``(L_q + L_k) x F`` outputs, no float64 temporaries.
        """
        from .backends.numba import features as kernels

        dt = q.dtype
        batch, d = q.shape[:-2], q.shape[-1]
        L_q, L_k = q.shape[-2], k.shape[-2]
        qf = np.ascontiguousarray(q.reshape((-1, L_q, d)))
        kf = np.ascontiguousarray(k.reshape((-1, L_k, d)))
        wt = self._scaled_weights_t(dt)
        F = wt.shape[1]
        log_norm = math.log(self._norm())
        lk, colmax = kernels.key_log_features(kf, wt, self.temperature / 2)
        if causal:
            first = lk[:, 0, :]
            bound = self._feature_bounds(dtype_name(k)).astype(dt)
            capped = np.where(first > bound, first, bound)
            headroom = KEY_LOG_HEADROOM[dtype_name(k)]
            fits = np.all(colmax - first <= headroom, axis=-1, keepdims=True)
            shift = np.where(fits, first, capped)
        else:
            shift = colmax
        phi_q = kernels.query_log_features(qf, wt, shift, log_norm)
        np.exp(phi_q, out=phi_q)
        kernels.subtract_columns(lk, shift - dt.type(log_norm))
        np.exp(lk, out=lk)
        if self.eps:
            phi_q += dt.type(self.eps)
            lk += dt.type(self.eps)
        return phi_q.reshape((*batch, L_q, F)), lk.reshape((*batch, L_k, F))

    def _feature_bounds(self, dtype: str) -> np.ndarray:
        """``|w_r|²/2 - H`` per feature (float64, shape ``(F,)``), see ``_key_bound``.

        Key log-features satisfy ``w_r·k_s - |k_s|²/2 <= |w_r|²/2``, so shifting feature
        ``r`` by at least this bound keeps every stabilized key feature ``<= e^H``.
        """
        half_sq = 0.5 * np.sum(self.projection**2, axis=-1)
        if self.hyperbolic:
            half_sq = np.concatenate([half_sq, half_sq])
        return half_sq - KEY_LOG_HEADROOM[dtype]

    def keys(self, x: Any, *, causal: bool = False) -> Any:
        self._check(x, "k")
        xp = namespace(x)
        logf = self._log_features(x)
        if not causal:
            return self._stabilized(logf, xp.max(logf, axis=(-2, -1), keepdims=True))
        # every row sees the first key, so shifting by its max is causal
        shift = xp.max(logf[..., :1, :], axis=(-2, -1), keepdims=True)
        with np.errstate(over="ignore"):
            feats = self._stabilized(logf, shift)
        if not bool(xp.all(xp.isfinite(feats))):
            # a later key exceeds the first by more than the exponent range: use the
            # data-independent cap  w_r·k - |k|²/2 <= |w_r|²/2  (log-features <= H)
            bound = as_like(np.array(self._key_bound(x)), x)
            feats = self._stabilized(logf, xp.where(shift > bound, shift, bound))
        return feats


@dataclass(frozen=True, eq=False)
class TrigonometricRandomFeatures(RandomFeatureMap):
    """Random Fourier (trigonometric) features of the softmax kernel (RFA).

    ``φ(x) = m^{-1/2} exp(|x_s|²/2) [sin(W x_s), cos(W x_s)]`` (``2m`` features):
    unbiased for ``exp(q·k·scale)`` but features are signed, so an attention
    normalizer can be near zero or negative (reported with a
    :class:`~structattn.attention.NormalizerWarning`, never clamped silently).

    Notes
    -----
    Inside attention the per-query factor ``exp(|q_s|²/2)`` is dropped (row scaling
    cancels).  Keys keep ``exp(|k_s|²/2 - c)`` with ``c`` the max over keys of
    ``|k_s|²/2`` per batch element; with ``causal=True`` ``c`` is the first key's
    ``|k_s|²/2`` (every row sees the first key, so no future key influences an earlier
    output) and a key whose factor then overflows raises ``ValueError``.
    """

    nonnegative = False

    def feature_dim(self, d: int) -> int:
        return 2 * self.num_features

    def _trig(self, x: Any) -> tuple[Any, Any]:
        xp = namespace(x)
        proj, half_sq = self._projected(x)
        feats = xp.concat([xp.sin(proj), xp.cos(proj)], axis=-1) / math.sqrt(self.num_features)
        return feats, half_sq

    def _features(self, x: Any) -> Any:
        feats, half_sq = self._trig(x)
        return feats * namespace(x).exp(half_sq)

    def queries(self, x: Any) -> Any:
        self._check(x, "q")
        return self._trig(x)[0]

    def keys(self, x: Any, *, causal: bool = False) -> Any:
        self._check(x, "k")
        xp = namespace(x)
        feats, half_sq = self._trig(x)
        # non-causal: the max over keys; causal: the first key's (every row sees it)
        ref = half_sq if not causal else half_sq[..., :1, :]
        with np.errstate(over="ignore"):  # overflow is detected and reported below
            factor = xp.exp(half_sq - xp.max(ref, axis=(-2, -1), keepdims=True))
        if causal and not bool(xp.all(xp.isfinite(factor))):
            raise ValueError(
                "causal trigonometric features overflow: some |k|²·scale/2 exceeds the "
                f"first key's by more than the exponent range of {x.dtype}; normalize the "
                "keys or use float64"
            )
        return feats * factor


def _fused_applies(q: Any, k: Any) -> bool:
    """The fused numba feature kernels serve numpy ``q, k`` of one batch shape."""
    if not (is_numpy(q) and is_numpy(k)) or q.dtype != k.dtype:
        return False
    if q.shape[:-2] != k.shape[:-2] or q.shape[-2] == 0 or q.size == 0:
        return False
    from .backends import numba_available

    return numba_available()


# --------------------------------------------------------------- deterministic maps
@dataclass(frozen=True, eq=False)
class EluFeatures(FeatureMap):
    """``φ(x) = elu(x) + 1`` (Katharopoulos et al. linear attention); positive.

    Defines its own kernel ``φ(q)·φ(k)``; it does not approximate softmax.  ``F = d``,
    ``O(L·d)`` time.
    """

    def feature_dim(self, d: int) -> int:
        return d

    def _features(self, x: Any) -> Any:
        xp = namespace(x)
        return xp.where(x > 0, x + 1, xp.exp(xp.minimum(x, xp.zeros_like(x))))


@dataclass(frozen=True, eq=False)
class ReluFeatures(FeatureMap):
    """``φ(x) = relu(x) + eps``; nonnegative, ``F = d``.

    Parameters
    ----------
    eps : float, default 0.0
        Added to every feature; with ``eps = 0`` a query orthogonal to the positive
        orthant of every key gets a zero normalizer and a zero output row.
    """

    eps: float = 0.0

    def __post_init__(self) -> None:
        check_real(self.eps, "eps", minimum=0.0)

    def feature_dim(self, d: int) -> int:
        return d

    def _features(self, x: Any) -> Any:
        xp = namespace(x)
        return xp.maximum(x, xp.zeros_like(x)) + self.eps

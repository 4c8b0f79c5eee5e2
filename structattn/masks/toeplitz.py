"""1-D relative-position (Toeplitz) masks: ``M[i, j] = c[i - j]``.

* :class:`Toeplitz` — any coefficients over offsets ``-(L-1) … (L-1)``; products by
  circulant embedding and real FFTs (``O(L log L)`` per column) or, for small ``L``, by
  the dense Toeplitz matrix; the choice follows :meth:`Toeplitz.cost`.
* :class:`ExponentialDecay` and :class:`SumOfExponentials` — exponential symbols, applied
  by exact linear recurrences (sums of decayed causal scans, ``O(L)`` per column, no FFT
  roundoff).

Index convention (also printed in :class:`Toeplitz`): ``coeffs[k + L - 1]`` is the value
on the diagonal of offset ``k = i - j``; ``k > 0`` (keys before the query) below the
main diagonal, ``k < 0`` (keys after the query) above it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _fft
from .._array import (
    as_like,
    describe_array,
    dtype_name,
    is_numpy,
    is_torch,
    namespace,
)
from .._validate import frozen_array
from .base import CostDispatch, Mask
from .causal import DecayedCausal
from .composition import Scaled, Sum

__all__ = ["FFT_COST_FACTOR", "ExponentialDecay", "SumOfExponentials", "Toeplitz"]

#: Cost of one real-FFT flop relative to one dense-product flop.  Measured with
#: ``python benchmarks/bench_rpe.py --calibrate`` on the project's 2-core CPU (scipy.fft
#: vs OpenBLAS, float32, L = 16…1024, F = 64…4160 columns): the implied factor at the
#: measured dense/FFT crossover (L ≈ 512–1024 for F ≥ 1040) is 9–14.
FFT_COST_FACTOR = 10.0

_METHODS = ("auto", "fft", "dense")


def _offsets(L: int) -> np.ndarray:
    return np.arange(-(L - 1), L)


def _dense_index(L: int) -> np.ndarray:
    """``idx[i, j] = i - j + L - 1``: position of ``M[i, j]`` in the coefficient vector."""
    i = np.arange(L)
    return i[:, None] - i[None, :] + (L - 1)


@dataclass(frozen=True, eq=False)
class Toeplitz(CostDispatch, Mask):
    """A Toeplitz mask ``M[i, j] = c_{i-j}`` from ``2L - 1`` coefficients.

    Parameters
    ----------
    coeffs : array, shape (..., 2L - 1)
        numpy array or torch tensor (float32/float64); ``coeffs[..., k + L - 1]`` is
        ``c_k`` for offsets ``k = i - j`` in ``-(L-1) … (L-1)``.  Leading dimensions are
        batch (e.g. one mask per head).  A torch tensor with ``requires_grad`` receives
        gradients through the FFT path (learnable relative-position masks).
    log : bool, default False
        The coefficients are log-values ``b``: the mask is ``exp(b)`` (positive, the
        stable parameterisation of :meth:`from_log`).
    method : {"auto", "fft", "dense"}
        Product algorithm; ``"auto"`` takes the cheaper one by :meth:`cost`.

    Notes
    -----
    FFT path: circulant embedding of size ``P = next_fast_length(2L - 1)``; one real FFT
    of the coefficients, and per ``F`` columns an rfft, a pointwise product and an irfft:
    ``O(F·P log P)`` time, ``O(P·F)`` memory.  Its error is normwise,
    ``~u·log P·‖c‖·‖x‖``, so rows whose result is tiny next to the largest entries of
    ``M`` lose relative accuracy (keep the range of ``exp(b)`` moderate).  Dense path:
    ``O(L²·F)``.  ``Mᵀ`` is the Toeplitz mask of the reversed coefficients.  A causal
    Toeplitz mask is the same object with ``c_k = 0`` for ``k < 0``.

    Examples
    --------
    Offsets ``-3 … 3`` for ``L = 4``; row ``i``, column ``j`` holds ``c_{i-j}``:

    >>> import numpy as np
    >>> from structattn.masks import Toeplitz
    >>> Toeplitz(np.arange(-3.0, 4.0)).to_dense()
    array([[ 0., -1., -2., -3.],
           [ 1.,  0., -1., -2.],
           [ 2.,  1.,  0., -1.],
           [ 3.,  2.,  1.,  0.]])
    """

    coeffs: Any
    log: bool = False
    method: str = "auto"

    def __post_init__(self) -> None:
        c = self.coeffs
        if not (is_numpy(c) or is_torch(c)):
            raise TypeError(
                f"coeffs must be a numpy.ndarray or torch.Tensor, got {type(c).__name__}"
            )
        if dtype_name(c) not in ("float32", "float64"):
            raise TypeError(f"coeffs must be float32 or float64, got {dtype_name(c)}")
        if c.ndim < 1 or c.shape[-1] % 2 != 1:
            raise ValueError(
                "coeffs must have an odd length 2L - 1 along its last axis (offsets "
                f"-(L-1) … L-1), got {describe_array(c)}"
            )
        xp = namespace(c)
        # log-coefficients may be -inf (a zero mask entry, e.g. a causal RPE mask)
        finite = xp.isfinite(c) | (c == -math.inf) if self.log else xp.isfinite(c)
        if not bool(xp.all(finite)):
            what = "NaN or +Inf" if self.log else "NaN or Inf"
            raise ValueError(f"coeffs contains {what} values ({describe_array(c)})")
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {self.method!r}")
        if not isinstance(self.log, (bool, np.bool_)):
            raise TypeError(f"log must be a bool, got {self.log!r}")
        # a read-only copy: mutating the caller's array later cannot change the mask
        object.__setattr__(self, "coeffs", frozen_array(c))

    # ----------------------------------------------------------------- builders
    @classmethod
    def from_function(
        cls, f: Callable[[np.ndarray], Any], L: int, *, method: str = "auto"
    ) -> Toeplitz:
        """Build ``c_k = f(k)`` for ``k = -(L-1) … L-1`` (``f`` takes an int array).

        Raises
        ------
        ValueError
            If ``f`` does not return ``2L - 1`` finite values.
        """
        if isinstance(L, bool) or not isinstance(L, (int, np.integer)) or L < 1:
            raise ValueError(f"L must be a positive integer, got {L!r}")
        values = np.asarray(f(_offsets(int(L))), dtype=np.float64)
        if values.shape[-1:] != (2 * L - 1,):
            raise ValueError(
                f"f must return one value per offset, shape (..., {2 * L - 1}); got "
                f"shape {values.shape}"
            )
        return cls(values, method=method)

    @classmethod
    def from_log(cls, b: Any, *, method: str = "auto") -> Toeplitz:
        """The positive mask ``exp(b)`` from log-coefficients ``b`` of shape (..., 2L-1).

        ``b`` is the bias a softmax relative-position encoding would add to the logits;
        multiplying by ``exp(b)`` is the same thing for kernel attention.  ``-inf``
        entries are allowed (zero mask entries, e.g. a causal mask); NaN and ``+inf``
        are not.
        """
        return cls(b, log=True, method=method)

    # ---------------------------------------------------------------- structure
    @property
    def L(self) -> int:
        """Sequence length."""
        return (int(self.coeffs.shape[-1]) + 1) // 2

    @property
    def shape(self) -> tuple[int, int]:
        return (self.L, self.L)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.coeffs.shape[:-1])

    @property
    def nonnegative(self) -> bool:  # type: ignore[override]
        return bool(self.log) or bool(namespace(self.coeffs).all(self.coeffs >= 0))

    @property
    def lower_triangular(self) -> bool:  # type: ignore[override]
        if self.L == 1:
            return True
        upper = self.coeffs[..., : self.L - 1]  # offsets k < 0
        return bool(namespace(upper).all(upper == (-math.inf if self.log else 0)))

    def _parameters(self) -> tuple[Any, ...]:
        return (self.coeffs,)

    def _coefficients(self, like: Any) -> Any:
        c = self._param_like("coeffs", self.coeffs, like)
        return namespace(c).exp(c) if self.log else c

    def _normalized(self) -> Mask:
        if not self.log:
            return self
        xp = namespace(self.coeffs)
        b = self.coeffs - xp.max(self.coeffs, axis=-1, keepdims=True)
        return Toeplitz(b, log=True, method=self.method)

    def _hadamard_fused(self, other: Mask) -> Mask | None:
        """Toeplitz ⊙ (decayed) causal = Toeplitz with the causal weights folded in."""
        from .causal import _CausalBase

        if not isinstance(other, _CausalBase) or other.L != self.L:
            return None
        k = np.arange(-(self.L - 1), self.L)
        keep = k > 0 if other.exclusive else k >= 0
        xp = namespace(self.coeffs)
        with np.errstate(divide="ignore"):
            log_w = np.where(keep, np.maximum(k, 0) * math.log(other.gamma), -np.inf)
        if self.log:
            b = self.coeffs + as_like(log_w, self.coeffs)
            return Toeplitz(b, log=True, method=self.method)
        w = as_like(np.exp(log_w), self.coeffs)
        return Toeplitz(xp.where(w > 0, self.coeffs * w, xp.zeros_like(self.coeffs)),
                        method=self.method)

    @property
    def T(self) -> Toeplitz:
        """``Mᵀ``: the Toeplitz mask of the reversed coefficients ``c_{-k}``."""
        return self._transposed()

    def _transposed(self) -> Toeplitz:
        return Toeplitz(namespace(self.coeffs).flip(self.coeffs, axis=-1), log=self.log,
                        method=self.method)

    # ------------------------------------------------------------------ cost
    def _fft_length(self) -> int:
        cache = self._state_cache()
        if "fft_length" not in cache:  # computed once (scipy call; not traceable)
            cache["fft_length"] = _fft.next_fast_length(2 * self.L - 1)
        return cache["fft_length"]

    def _costs(self, F: int) -> dict[str, float]:
        L, P = self.L, self._fft_length()
        batch = max(1, math.prod(self.batch_shape))
        fft = FFT_COST_FACTOR * (F * (5.0 * P * math.log2(max(P, 2)) + 4.0 * P)
                                 + batch * 2.5 * P * math.log2(max(P, 2)))
        return {"fft": fft, "dense": 2.0 * L * L * F * batch}

    def cost(self, F: int) -> float:
        """Estimated flops of one product with ``F`` columns (the dispatched method)."""
        return self._costs(F)[self._choose(F)]

    # --------------------------------------------------------------- products
    def _matmat(self, X: Any, backend: str) -> Any:
        c = self._coefficients(X)
        if self._choose(int(X.shape[-1])) == "dense":
            return self._dense_from(c, X) @ X
        return self._fft_apply(c, X)

    def _rmatmat(self, X: Any, backend: str) -> Any:
        return self._transposed()._matmat(X, backend)

    def _fft_apply(self, c: Any, X: Any) -> Any:
        """``M X`` by circulant embedding: zero-pad to ``P``, multiply spectra, crop."""
        xp = namespace(X)
        L, P = self.L, self._fft_length()
        pad = xp.zeros((*c.shape[:-1], P - 2 * L + 1), dtype=c.dtype,
                       device=getattr(c, "device", None) if is_torch(c) else None)
        g = xp.concat([c[..., L - 1:], pad, c[..., : L - 1]], axis=-1)  # g[k mod P] = c_k
        spectrum = _fft.rfft(g, P, axis=-1)[..., :, None]
        Y = _fft.irfft(spectrum * _fft.rfft(X, P, axis=-2), P, axis=-2)
        return Y[..., :L, :]

    def _dense_from(self, c: Any, like: Any) -> Any:
        xp = namespace(like)
        L = self.L
        idx = self._index_like("dense_index", lambda: _dense_index(L).reshape(-1), like)
        return xp.reshape(xp.take(c, idx, axis=-1), (*c.shape[:-1], L, L))

    def _to_dense(self, like: Any) -> Any:
        return self._dense_from(self._coefficients(like), like)

    def _structure(self) -> str:
        what = "exp(log-coefficients)" if self.log else "coefficients"
        return (f"Toeplitz ({what}): circulant FFT, P={self._fft_length()}, or dense for "
                "small L (by cost)")


# ------------------------------------------------------------ exponential symbols
def _check_gammas(values: Any, name: str, allow_zero: bool) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    lo_ok = (arr >= 0) if allow_zero else (arr > 0)
    if arr.ndim != 1 or not np.all(np.isfinite(arr) & lo_ok & (arr <= 1)):
        bound = "0 <= gamma <= 1" if allow_zero else "0 < gamma <= 1"
        raise ValueError(f"{name} must be a 1-D sequence with {bound}, got {values!r}")
    return arr


class _ExponentialSymbol(Mask):
    """``c_k = Σ_r a_r γ_r^k`` (``k >= 0``) and ``Σ_r a'_r γ'_r^{-k}`` (``k < 0``).

    Applied as a :class:`~structattn.masks.Sum` of scaled decayed causal masks (lower
    part, inclusive) and transposed strictly-causal ones (upper part): every product is
    a set of exact linear recurrences.
    """

    L: int

    def _terms(self) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        raise AssertionError("subclasses define _terms()")  # pragma: no cover

    @property
    def shape(self) -> tuple[int, int]:
        return (self.L, self.L)

    @property
    def nonnegative(self) -> bool:  # type: ignore[override]
        left, right = self._terms()
        return all(a >= 0 for a, _ in left + right)

    @property
    def lower_triangular(self) -> bool:  # type: ignore[override]
        return not self._terms()[1]

    def _as_sum(self) -> Mask:
        left, right = self._terms()
        parts: list[Mask] = [Scaled(DecayedCausal(self.L, g), a) for a, g in left]
        parts += [Scaled(DecayedCausal(self.L, g, exclusive=True).T, a) for a, g in right]
        total = parts[0]
        for p in parts[1:]:
            total = Sum(total, p)
        return total

    def coefficients(self) -> np.ndarray:
        """The equivalent :class:`Toeplitz` coefficients (float64, length ``2L - 1``)."""
        L = self.L
        k = np.arange(L, dtype=np.float64)
        left, right = self._terms()
        c = np.zeros(2 * L - 1)
        with np.errstate(under="ignore"):
            for a, g in left:
                c[L - 1:] += a * g**k
            for a, g in right:
                c[: L - 1] += (a * g ** k[1:])[::-1]
        return c

    def _hadamard_fused(self, other: Mask) -> Mask | None:
        """⊙ a (decayed) causal mask: drop the upper terms, multiply the lower decays."""
        from .causal import _CausalBase

        if not isinstance(other, _CausalBase) or other.L != self.L:
            return None
        if other.exclusive:  # zero diagonal: not a sum of exponentials from k = 0
            return self.to_toeplitz().hadamard(other)
        left, _ = self._terms()
        return SumOfExponentials(self.L, [a for a, _ in left],
                                 [g * other.gamma for _, g in left])

    def to_toeplitz(self, *, method: str = "auto") -> Toeplitz:
        """The same mask as a generic (FFT) :class:`Toeplitz`."""
        return Toeplitz(self.coefficients(), method=method)

    def _matmat(self, X: Any, backend: str) -> Any:
        return self._as_sum()._matmat(X, backend)

    def _rmatmat(self, X: Any, backend: str) -> Any:
        return self._as_sum()._rmatmat(X, backend)

    def _masked_matmul(self, A: Any, B: Any, V: Any, backend: str) -> Any:
        return self._as_sum()._masked_matmul(A, B, V, backend)

    def _rmasked_matmul(self, A: Any, B: Any, V: Any, backend: str) -> Any:
        return self._as_sum()._rmasked_matmul(A, B, V, backend)

    def _to_dense(self, like: Any) -> Any:
        return self.to_toeplitz(method="dense")._to_dense(like)

    def cost(self, F: int) -> float:
        return self._as_sum().cost(F)

    def _structure(self) -> str:
        left, right = self._terms()
        return (f"exponential symbol ({len(left)} + {len(right)} terms): exact decayed "
                "scans, O(L) per column per term")


@dataclass(frozen=True, eq=False)
class ExponentialDecay(_ExponentialSymbol):
    """Two-sided exponential decay ``M[i, j] = γ_l^{i-j}`` (``j <= i``), ``γ_r^{j-i}`` (``j > i``).

    Parameters
    ----------
    L : int
        Sequence length.
    gamma_left : float
        Decay towards earlier keys, ``0 < gamma_left <= 1``.
    gamma_right : float, default 0.0
        Decay towards later keys, ``0 <= gamma_right <= 1``; 0 gives a causal mask.

    Notes
    -----
    Exact ``O(L·m·d_v)`` masked products by two decayed scans (no FFT roundoff); the
    diagonal is 1.

    Examples
    --------
    >>> from structattn.masks import ExponentialDecay
    >>> ExponentialDecay(3, gamma_left=0.5, gamma_right=0.25).to_dense()
    array([[1.    , 0.25  , 0.0625],
           [0.5   , 1.    , 0.25  ],
           [0.25  , 0.5   , 1.    ]])
    """

    L: int
    gamma_left: float
    gamma_right: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.L, bool) or not isinstance(self.L, (int, np.integer)) or self.L < 1:
            raise ValueError(f"L must be a positive integer, got {self.L!r}")
        _check_gammas(self.gamma_left, "gamma_left", allow_zero=False)
        _check_gammas(self.gamma_right, "gamma_right", allow_zero=True)

    def _terms(self):
        right = [(1.0, float(self.gamma_right))] if self.gamma_right > 0 else []
        return [(1.0, float(self.gamma_left))], right


@dataclass(frozen=True, eq=False)
class SumOfExponentials(_ExponentialSymbol):
    """Toeplitz mask with ``c_k = Σ_r a_r γ_r^k`` (``k >= 0``), ``Σ_s a'_s γ'_s^{-k}`` (``k < 0``).

    Parameters
    ----------
    L : int
        Sequence length.
    left_amplitudes, left_gammas : sequences of float
        Terms of the lower part (offsets ``k >= 0``); ``0 < γ <= 1``.
    right_amplitudes, right_gammas : sequences of float, optional
        Terms of the strictly upper part (``k < 0``); empty for a causal mask.

    Notes
    -----
    ``O(r·L·m·d_v)`` for ``r`` terms, exact recurrences.  Any completely monotone
    decay is well approximated by a few exponentials.
    """

    L: int
    left_amplitudes: Sequence[float]
    left_gammas: Sequence[float]
    right_amplitudes: Sequence[float] = ()
    right_gammas: Sequence[float] = ()

    def __post_init__(self) -> None:
        if isinstance(self.L, bool) or not isinstance(self.L, (int, np.integer)) or self.L < 1:
            raise ValueError(f"L must be a positive integer, got {self.L!r}")
        for side in ("left", "right"):
            amps = np.atleast_1d(np.asarray(getattr(self, f"{side}_amplitudes"), dtype=float))
            gammas = getattr(self, f"{side}_gammas")
            gammas = (_check_gammas(gammas, f"{side}_gammas", allow_zero=False)
                      if len(np.atleast_1d(gammas)) else np.zeros(0))
            if amps.shape != gammas.shape or not np.all(np.isfinite(amps)):
                raise ValueError(
                    f"{side}_amplitudes must be finite and match {side}_gammas in length; "
                    f"got {amps.shape[0]} amplitudes and {gammas.shape[0]} gammas"
                )
        if not len(np.atleast_1d(self.left_gammas)):
            raise ValueError("left_gammas must hold at least one term")

    def _terms(self):
        def pairs(a, g):
            return [(float(x), float(y)) for x, y in zip(np.atleast_1d(a), np.atleast_1d(g),
                                                        strict=True)]

        return (pairs(self.left_amplitudes, self.left_gammas),
                pairs(self.right_amplitudes, self.right_gammas))

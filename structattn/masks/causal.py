"""Causal masks: plain (prefix sums) and exponentially decayed (retention-style)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._array import as_like, is_torch, namespace
from ..backends import kernel
from .base import Mask
from .basic import _check_length

__all__ = ["BottomRightCausal", "Causal", "DecayedCausal"]


class _CausalBase(Mask):
    """Shared algorithms of ``M[i, j] = gamma**(i-j) [j <= i]`` (``j < i`` if exclusive).

    ``Mᵀ = J M J`` with ``J`` the row reversal, so every adjoint product is a flipped
    forward product.
    """

    L: int
    gamma: float
    exclusive: bool
    lower_triangular = True

    @property
    def shape(self) -> tuple[int, int]:
        return (self.L, self.L)

    def _matmat(self, X: Any, backend: str) -> Any:
        xp = namespace(X)
        if self.gamma == 1.0:
            total = xp.cumsum(X, axis=-2)
            return total - X if self.exclusive else total
        ones = as_like(np.ones((self.L, 1)), X)
        ones = xp.broadcast_to(ones, (*X.shape[:-2], self.L, 1))
        return self._masked_matmul(ones, ones, X, backend)

    def _rmatmat(self, X: Any, backend: str) -> Any:
        return _flip(self._matmat(_flip(X), backend))

    def _masked_matmul(self, A: Any, B: Any, V: Any, backend: str) -> Any:
        run = _causal_kernel(backend)
        return run(A, B, V, gamma=self.gamma, exclusive=self.exclusive)

    def _rmasked_matmul(self, A: Any, B: Any, V: Any, backend: str) -> Any:
        return _flip(self._masked_matmul(_flip(A), _flip(B), _flip(V), backend))

    def _masked_matmul_normalized(self, A: Any, B: Any, V: Any, backend: str
                                  ) -> tuple[Any, Any]:
        """``((M ⊙ A Bᵀ) V, (M ⊙ A Bᵀ) 1)``: numerator and normalizer of attention.

        Bit for bit the columns of ``masked_matmul(A, B, [V | 1])``, but the ones
        column is built per chunk (or group of chunks) inside the scan, never as an
        ``(..., L, d_v + 1)`` copy of ``V``.  For resolved ``backend`` and inputs
        already validated, of one batch shape ``(..., L, ·)``.

        Returns
        -------
        (array (..., L, d_v), array (..., L, 1))
        """
        run = _causal_kernel(backend)
        return run(A, B, V, gamma=self.gamma, exclusive=self.exclusive, normalizer=True)

    def _to_dense(self, like: Any) -> Any:
        if is_torch(like):  # built on the device (no host copy; traceable by compile)
            from ..backends.scan import _torch_tables

            return _torch_tables(self.gamma, bool(self.exclusive), self.L, like)[0]
        i = np.arange(self.L)
        diff = i[:, None] - i[None, :]
        keep = diff > 0 if self.exclusive else diff >= 0
        with np.errstate(under="ignore"):
            dense = np.where(keep, self.gamma ** np.maximum(diff, 0), 0.0)
        return as_like(dense, like)

    def cost(self, F: int) -> float:
        return 2.0 * self.L * F

    def _hadamard_fused(self, other: Mask) -> Mask | None:
        """(decayed) causal ⊙ (decayed) causal = decayed causal with the decays multiplied."""
        if not isinstance(other, _CausalBase) or other.L != self.L:
            return None
        gamma = self.gamma * other.gamma
        exclusive = bool(self.exclusive or other.exclusive)
        if gamma == 1.0:
            return Causal(self.L, exclusive=exclusive)
        return DecayedCausal(self.L, gamma, exclusive=exclusive)

    def _structure(self) -> str:
        return "prefix-sum scan with an m x d_v running state: O(L·m·d_v) time"


def _causal_kernel(backend: str) -> Any:
    """The causal scan kernel of ``backend``.

    The torch kernel is imported by an import statement rather than through the
    registry's ``importlib`` call, which ``torch.compile`` cannot trace.
    """
    if backend == "torch":
        from ..backends.torch.causal import causal_masked_matmul

        return causal_masked_matmul
    return kernel("causal_masked_matmul", backend)


def _flip(x: Any) -> Any:
    return namespace(x).flip(x, axis=-2)


@dataclass(frozen=True, eq=False)
class Causal(_CausalBase):
    """The causal mask ``M[i, j] = 1`` for ``j <= i`` (``j < i`` when ``exclusive``).

    Parameters
    ----------
    L : int
        Sequence length (the mask is ``L x L``; causal alignment is top-left).
    exclusive : bool, default False
        Exclude the diagonal (a token does not attend to itself).

    Notes
    -----
    ``masked_matmul(A, B, V)`` runs the prefix-sum recurrence
    ``S_i = S_{i-1} + B_i V_iᵀ``, output ``A_i S_i``, as a chunked scan on every
    backend: chunks of ``C`` tokens (``C`` from
    :func:`~structattn.backends.scan.choose_chunk_size`) do dense GEMMs
    ``((A_c B_cᵀ) ⊙ D) V_c`` inside and carry one ``m x d_v`` state across:
    ``2·L·C·(m + d_v) + 4·L·m·d_v`` flops, ``O(m·d_v)`` state per batch element (numba:
    BLAS GEMMs issued in parallel per chunk; torch: an autograd Function that saves only
    the inputs).  ``matmat`` is a cumulative sum.

    Examples
    --------
    >>> from structattn.masks import Causal
    >>> Causal(3).to_dense()
    array([[1., 0., 0.],
           [1., 1., 0.],
           [1., 1., 1.]])
    """

    L: int
    exclusive: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "L", _check_length(self.L, "L"))
        if not isinstance(self.exclusive, (bool, np.bool_)):
            raise TypeError(f"exclusive must be a bool, got {self.exclusive!r}")

    @property
    def gamma(self) -> float:  # type: ignore[override]
        """Always 1: no decay."""
        return 1.0


@dataclass(frozen=True, eq=False)
class DecayedCausal(_CausalBase):
    """Exponentially decayed causal mask ``M[i, j] = gamma**(i - j)`` for ``j <= i``.

    Simultaneously Toeplitz and semiseparable; the recurrence is
    ``S_i = gamma S_{i-1} + B_i V_iᵀ``.

    Parameters
    ----------
    L : int
        Sequence length.
    gamma : float
        Decay per step, ``0 < gamma <= 1`` (``gamma = 1`` is :class:`Causal`).
    exclusive : bool, default False
        Exclude the diagonal: ``M[i, j] = gamma**(i - j)`` for ``j < i``.

    Notes
    -----
    Same cost as :class:`Causal`: ``O(L·m·d_v)`` time, ``O(m·d_v)`` state; in the
    chunked scan the decay enters as per-chunk scalings (``gamma**(t+1)`` on a chunk's
    rows against the carried state, ``gamma**(C-1-s)`` on its keys' contribution,
    ``gamma**C`` on the state).  Powers of ``gamma`` are only ever formed with
    non-negative exponents, so nothing overflows; contributions older than
    ``log(tiny)/log(gamma)`` steps underflow to zero.

    Examples
    --------
    >>> from structattn.masks import DecayedCausal
    >>> DecayedCausal(3, gamma=0.5).to_dense()
    array([[1.  , 0.  , 0.  ],
           [0.5 , 1.  , 0.  ],
           [0.25, 0.5 , 1.  ]])
    """

    L: int
    gamma: float
    exclusive: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "L", _check_length(self.L, "L"))
        g = self.gamma
        if isinstance(g, bool) or not isinstance(g, (int, float, np.floating, np.integer)):
            raise TypeError(f"gamma must be a real number, got {g!r}")
        if not (math.isfinite(float(g)) and 0.0 < float(g) <= 1.0):
            raise ValueError(f"gamma must satisfy 0 < gamma <= 1, got {g!r}")
        object.__setattr__(self, "gamma", float(g))
        if not isinstance(self.exclusive, (bool, np.bool_)):
            raise TypeError(f"exclusive must be a bool, got {self.exclusive!r}")


@dataclass(frozen=True, eq=False)
class BottomRightCausal(Mask):
    """Causal mask aligned to the bottom-right corner: ``M[i, j] = 1`` for ``j <= i + L_k - L_q``.

    The convention of decoding with a KV cache (and of ``flash_attn`` for
    ``L_q != L_k``): the ``L_q`` queries are the *last* ``L_q`` positions of a sequence
    whose keys are ``0 … L_k - 1``, so the last query sees every key.  For
    ``L_q == L_k`` it is :class:`Causal`.  When ``L_q > L_k`` the first ``L_q - L_k``
    rows are empty (they attend to nothing; attention returns zeros there).

    Parameters
    ----------
    L_q : int
        Number of queries (rows).
    L_k : int
        Number of keys (columns).

    Notes
    -----
    ``masked_matmul`` runs the causal scan of :class:`Causal` on zero-padded factors
    (query features padded at the front when ``L_q < L_k``, key features and values
    when ``L_q > L_k``): ``O(max(L_q, L_k)·m·d_v)`` time, ``O(m·d_v)`` state.  Its
    rows never depend on later keys, so attention uses causal key stabilizers.

    Examples
    --------
    >>> from structattn.masks.causal import BottomRightCausal
    >>> BottomRightCausal(2, 4).to_dense()
    array([[1., 1., 1., 0.],
           [1., 1., 1., 1.]])
    """

    L_q: int
    L_k: int

    causal_keys = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "L_q", _check_length(self.L_q, "L_q"))
        object.__setattr__(self, "L_k", _check_length(self.L_k, "L_k"))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.L_q, self.L_k)

    @property
    def offset(self) -> int:
        """``L_k - L_q``: row ``i`` sees keys ``j <= i + offset``."""
        return self.L_k - self.L_q

    @property
    def lower_triangular(self) -> bool:  # type: ignore[override]
        return self.offset <= 0

    def _keep(self) -> np.ndarray:
        i = np.arange(self.L_q)[:, None]
        j = np.arange(self.L_k)[None, :]
        return j <= i + self.offset

    def _to_dense(self, like: Any) -> Any:
        if is_torch(like):
            import torch

            i = torch.arange(self.L_q, device=like.device)[:, None]
            j = torch.arange(self.L_k, device=like.device)[None, :]
            return (j <= i + self.offset).to(like.dtype)
        return as_like(self._keep().astype(np.float64), like)

    def _matmat(self, X: Any, backend: str) -> Any:
        xp = namespace(X)
        total = xp.cumsum(X, axis=-2)  # row r: sum of keys 0..r
        off = self.offset
        if off >= 0:
            return total[..., off:, :]
        zeros = xp.zeros_like(total[..., :1, :])
        zeros = xp.broadcast_to(zeros, (*total.shape[:-2], -off, total.shape[-1]))
        return xp.concat([zeros, total], axis=-2)

    def _rmatmat(self, X: Any, backend: str) -> Any:
        # column j collects rows i >= j - offset: a reversed cumulative sum
        xp = namespace(X)
        rev = _flip(xp.cumsum(_flip(X), axis=-2))  # row r: sum of rows r..L_q-1
        off = self.offset
        if off <= 0:
            return rev[..., -off:, :]
        first = xp.broadcast_to(rev[..., :1, :], (*rev.shape[:-2], off, rev.shape[-1]))
        return xp.concat([first, rev], axis=-2)

    def _masked_matmul(self, A: Any, B: Any, V: Any, backend: str) -> Any:
        xp = namespace(A, B, V)
        off = self.offset
        run = _causal_kernel(backend)

        def pad(x: Any, n: int) -> Any:
            z = xp.zeros_like(x[..., :1, :])
            z = xp.broadcast_to(z, (*x.shape[:-2], n, x.shape[-1]))
            return xp.concat([z, x], axis=-2)

        if off == 0:
            return run(A, B, V, gamma=1.0, exclusive=False)
        if off > 0:  # queries are the last L_q positions of the L_k keys
            return run(pad(A, off), B, V, gamma=1.0, exclusive=False)[..., off:, :]
        return run(A, pad(B, -off), pad(V, -off), gamma=1.0, exclusive=False)

    def cost(self, F: int) -> float:
        return 2.0 * max(self.L_q, self.L_k) * F

    def _structure(self) -> str:
        return ("bottom-right aligned causal scan (zero-padded factors): "
                "O(max(L_q, L_k)·m·d_v) time")

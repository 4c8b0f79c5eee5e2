"""Attention with a regularized-argmax simplex map: softmax, sparsemax or α-entmax rows.

``SimplexAttention`` computes the dense scores ``S = Q Kᵀ · scale`` and maps every row
onto the probability simplex with :func:`~structattn.solvers.softmax`,
:func:`~structattn.solvers.sparsemax` or :func:`~structattn.solvers.entmax`::

    P = map(S)   (row-wise),     Y = P V

With ``causal=True`` the future keys (``j > i``) are excluded from each row before the map
(as if their score were ``-inf``): they get exactly zero weight and the remaining
weights still sum to one.  ``mapping="softmax"`` is :func:`~structattn.softmax_attention`.
Gradients on torch tensors are the closed-form Jacobians of the simplex maps.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._array import is_torch, namespace, validate_attention_inputs, validate_float_array
from .simplex import entmax, softmax, sparsemax

__all__ = ["SimplexAttention"]

_MAPPINGS = ("softmax", "sparsemax", "entmax")
#: Gap (in score units) between a row's smallest score and the fill of excluded keys.
#: exp(-1e4) underflows to 0 in float32 and float64, and sparsemax/entmax thresholds lie
#: within 1/(α-1) of the row maximum, so filled entries get exactly zero weight.
_FILL_GAP = 1e4


def _causal_keep(L_q: int, L_k: int, like: Any) -> Any:
    keep = np.tril(np.ones((L_q, L_k), dtype=bool))
    if is_torch(like):
        import torch

        return torch.as_tensor(keep, device=like.device)
    return keep


@dataclass(frozen=True, eq=False)
class SimplexAttention:
    """Dense attention whose rows are a simplex map of the scores, as an operator object.

    Parameters
    ----------
    mapping : {"sparsemax", "entmax", "softmax"}
        Row map: sparse Euclidean projection, α-entmax (Tsallis entropy) or softmax.
    alpha : float, default 1.5
        Tsallis parameter of ``mapping="entmax"`` (``>= 1``; 1.5 and 2 use exact
        sort-based thresholds, other values bisection).  Ignored by the other maps.
    causal : bool, default False
        Exclude keys ``j > i`` (needs ``L_q == L_k``).
    scale : float, optional
        Score scale, default ``d**-0.5``.

    Notes
    -----
    ``O(L_q·L_k·(d + d_v))`` time (plus a sort per row for sparsemax/entmax) and
    ``O(L_q·L_k)`` memory per batch element; the ``L_q x L_k`` matrix is formed.

    Examples
    --------
    >>> import numpy as np
    >>> from structattn.solvers.attention_maps import SimplexAttention
    >>> x = np.random.default_rng(0).standard_normal((1, 4, 2)) * 3
    >>> P = SimplexAttention("sparsemax", causal=True).matrix(x, x)
    >>> bool(np.allclose(P.sum(-1), 1.0)), bool((np.triu(P[0], 1) == 0).all())
    (True, True)
    """

    mapping: str = "sparsemax"
    alpha: float = 1.5
    causal: bool = False
    scale: float | None = None

    def __post_init__(self) -> None:
        if self.mapping not in _MAPPINGS:
            raise ValueError(f"mapping must be one of {_MAPPINGS}, got {self.mapping!r}")
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, numbers.Real):
            raise TypeError(f"alpha must be a real number, got {a!r}")
        if not (math.isfinite(a) and a >= 1.0):
            raise ValueError(f"alpha must be a finite number >= 1, got {a!r}")
        if not isinstance(self.causal, (bool, np.bool_)):
            raise TypeError(f"causal must be a bool, got {self.causal!r}")
        s = self.scale
        if s is not None and (
            isinstance(s, bool) or not isinstance(s, numbers.Real) or not math.isfinite(s)
        ):
            raise ValueError(f"scale must be a finite real number or None, got {s!r}")

    # ------------------------------------------------------------------ internals
    def _map(self, S: Any) -> Any:
        if self.mapping == "softmax":
            return softmax(S, axis=-1, check_finite=False)
        if self.mapping == "sparsemax":
            return sparsemax(S, axis=-1, check_finite=False)
        return entmax(S, alpha=float(self.alpha), axis=-1, check_finite=False)

    def _matrix(self, q: Any, k: Any) -> Any:
        xp = namespace(q, k)
        L_q, L_k, d = q.shape[-2], k.shape[-2], q.shape[-1]
        scale = 1.0 / math.sqrt(d) if self.scale is None else float(self.scale)
        S = (q @ xp.matrix_transpose(k)) * scale
        if not self.causal:
            return self._map(S)
        if L_q != L_k:
            raise ValueError(
                f"causal=True needs L_q == L_k (top-left aligned square mask), got "
                f"L_q={L_q} and L_k={L_k}"
            )
        keep = _causal_keep(L_q, L_k, S)
        S_const = S.detach() if is_torch(S) else S
        fill = xp.min(S_const, axis=-1, keepdims=True) - _FILL_GAP
        P = self._map(xp.where(keep, S, fill))
        # excluded keys are already exact zeros; make that independent of rounding
        return xp.where(keep, P, xp.zeros_like(P))

    # ------------------------------------------------------------------ public API
    def __call__(self, q: Any, k: Any, v: Any) -> Any:
        """Output ``(..., L_q, d_v) = P V`` with ``P = matrix(q, k)``."""
        validate_attention_inputs(q, k, v)
        return self._matrix(q, k) @ v

    def matrix(self, q: Any, k: Any) -> Any:
        """The row-stochastic attention matrix ``(..., L_q, L_k)``."""
        for name, a in (("q", q), ("k", k)):
            validate_float_array(a, name, min_ndim=2)
        validate_attention_inputs(q, k, k[..., :0], check_finite=False, values=False)
        return self._matrix(q, k)

    @property
    def reference(self) -> Any:
        """Exact softmax attention with the same causal flag and scale."""
        from ..attention import SoftmaxAttention

        return SoftmaxAttention(causal=bool(self.causal), scale=self.scale)

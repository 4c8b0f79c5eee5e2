"""The MRA approximation object: selection, coarse core and dense forms of one ``(q, k)``.

:class:`MRAApproximation` is built by :meth:`structattn.mra.MRAAttention.approximate`;
its dense forms (``O(L² d)``) are for analysis and tests, :meth:`~MRAApproximation.__call__`
runs the fast path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from .._array import (
    as_like,
    describe_array,
    detach,
    is_torch,
    namespace,
    validate_float_array,
    validate_same_kind,
)
from ._core import _gather_tiles, _run, _segment_max
from ._layout import _block_sums, _Blocks
from .selection import BlockSelection

__all__ = ["MRAApproximation"]

@dataclass(frozen=True, eq=False)
class MRAApproximation:
    """The MRA approximation of one ``(q, k)`` pair: selection, coarse part, dense forms.

    Built by :meth:`MRAAttention.approximate`.  Shapes use ``n_b = ceil(L / b)`` block
    rows; the dense forms are ``L x L`` (padding removed).

    Attributes
    ----------
    selection : BlockSelection
        The selected (exactly computed) blocks, BSR order.
    mode : str
        ``"full"`` (MRA-2) or ``"sparse"`` (MRA-2-s).
    backend : str
        Resolved backend of the fast path used by :meth:`__call__`.
    """

    _blk: _Blocks
    selection: BlockSelection
    mode: str
    backend: str

    # ---------------------------------------------------------------- structure
    @property
    def selected_blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """BSR ``(indptr (*batch, n_b + 1), indices (*batch, k))`` of the selected blocks."""
        return self.selection.indptr, self.selection.indices

    @property
    def selected_mask(self) -> np.ndarray:
        """Boolean ``M``, shape ``(*batch, n_b, n_b)``."""
        return self.selection.mask

    @property
    def block_scores(self) -> Any:
        """Coarse scores ``Ŝ = Q̄ K̄ᵀ · scale``, shape ``(*batch, n_b, n_b)``."""
        blk = self._blk
        return namespace(blk.scores).reshape(blk.scores, (*blk.batch, blk.n, blk.n))

    @property
    def shift(self) -> Any:
        """Per-block-row shift ``s_I`` of :attr:`C` and :meth:`to_dense`, ``(*batch, n_b)``.

        The maximum logit of block row ``I`` over the entries the approximation uses
        (unselected coarse scores and exact scores of selected blocks); ``0`` for an
        empty row.  Cost ``O(k b² d)``.
        """
        blk = self._blk
        xp = namespace(blk.qb)
        B, n, b, k = math.prod(blk.batch), blk.n, blk.b, self.selection.num_blocks
        T, flat_rows, _ = _gather_tiles(blk, self.selection)
        if blk.masked:  # padded rows do not count
            rv = xp.take(xp.reshape(blk.valid, (B * n, b)), flat_rows, axis=0)
            neg = xp.full_like(xp.reshape(T, (B * k, b, b)), -math.inf)
            T = xp.where(rv[:, :, None], xp.reshape(T, (B * k, b, b)), neg)
        tmax = xp.reshape(xp.max(xp.reshape(detach(T), (B * k, b * b)), axis=-1), (B * k, 1))
        fine = xp.reshape(_segment_max(tmax, flat_rows, B * n), (B, n))
        s = fine
        if self.mode == "full":
            mask = self._mask()
            rv = blk.counts > 0
            keep = xp.logical_and(xp.logical_and(xp.logical_not(mask), rv[:, None, :]),
                                  rv[:, :, None])
            coarse = xp.max(xp.where(keep, detach(blk.scores),
                                     xp.full_like(blk.scores, -math.inf)), axis=-1)
            s = xp.maximum(fine, coarse)
        s = xp.where(xp.isfinite(s), s, xp.zeros_like(s))
        return xp.reshape(s, (*blk.batch, n))

    def _mask(self) -> Any:
        blk = self._blk
        B = math.prod(blk.batch)
        mask = as_like(self.selection.mask.reshape(B, blk.n, blk.n), blk.scores)
        return mask > 0.5 if not is_torch(mask) else mask.bool()

    @property
    def U(self) -> Any:
        """Block indicator ``U``, shape ``(*batch, L, n_b)``: ``U[i, I] = 1`` if token ``i``
        is a valid token of block ``I`` (padded tokens have a zero row)."""
        blk = self._blk
        xp = namespace(blk.qb)
        B, n, b = math.prod(blk.batch), blk.n, blk.b
        eye = as_like(np.kron(np.eye(n), np.ones((b, 1))), blk.scores)  # (n b, n)
        U = xp.reshape(xp.astype(blk.valid, blk.scores.dtype), (B, n * b))[..., None] * eye
        return xp.reshape(U[:, : blk.L, :], (*blk.batch, blk.L, n))

    @property
    def C(self) -> Any:
        """Coarse core ``C = exp(Ŝ - s) ∘ (1 - M)`` on valid pairs, ``(*batch, n_b, n_b)``.

        ``s`` is :attr:`shift` (per block row); zero in ``"sparse"`` mode.  The
        unnormalised kernel is ``U C Uᵀ + B`` with ``B`` the exact selected blocks.
        """
        blk = self._blk
        xp = namespace(blk.qb)
        if self.mode == "sparse":
            return xp.zeros_like(self.block_scores)
        B, n = math.prod(blk.batch), blk.n
        s = xp.reshape(self.shift, (B, n))
        rv = blk.counts > 0
        keep = xp.logical_and(xp.logical_and(xp.logical_not(self._mask()), rv[:, None, :]),
                              rv[:, :, None])
        C = xp.exp(xp.where(keep, blk.scores - s[..., None],
                            xp.full_like(blk.scores, -math.inf)))
        return xp.reshape(C, (*blk.batch, n, n))

    def _mixed_logits(self) -> tuple[Any, Any]:
        """Dense mixed logits (padded size) and the expanded validity, ``(B, Lp, Lp)``."""
        blk = self._blk
        xp = namespace(blk.qb)
        B, n, b = math.prod(blk.batch), blk.n, blk.b
        d = int(blk.qb.shape[-1])
        q = xp.reshape(blk.qb, (B, n * b, d))
        k = xp.reshape(blk.kb, (B, n * b, d))
        S = (q @ xp.matrix_transpose(k)) * blk.scale
        M = self._mask()
        Mx = xp.reshape(xp.broadcast_to(M[:, :, None, :, None], (B, n, b, n, b)),
                        (B, n * b, n * b))
        if self.mode == "full":
            Sh = xp.reshape(xp.broadcast_to(blk.scores[:, :, None, :, None], (B, n, b, n, b)),
                            (B, n * b, n * b))
            X = xp.where(Mx, S, Sh)
            keep = xp.ones_like(Mx)
        else:
            X, keep = S, Mx
        v = xp.reshape(blk.valid, (B, n * b))
        keep = xp.logical_and(xp.logical_and(keep, v[:, None, :]), v[:, :, None])
        return X, keep

    def to_dense(self) -> Any:
        """Unnormalised approximate kernel ``Ê = U C Uᵀ + B``, shape ``(*batch, L, L)``.

        Row block ``I`` is referenced to :attr:`shift` ``s_I``.  ``O(L² d)``.
        """
        blk = self._blk
        xp = namespace(blk.qb)
        B, n, b = math.prod(blk.batch), blk.n, blk.b
        X, keep = self._mixed_logits()
        s = xp.reshape(xp.broadcast_to(xp.reshape(self.shift, (B, n))[:, :, None], (B, n, b)),
                       (B, n * b))
        E = xp.exp(xp.where(keep, X - s[..., None], xp.full_like(X, -math.inf)))
        return xp.reshape(E[:, : blk.L, : blk.L], (*blk.batch, blk.L, blk.L))

    def matrix(self) -> Any:
        """Approximate attention ``Â = diag(Ê 1)⁻¹ Ê``, shape ``(*batch, L, L)``.

        Rows of padded tokens (and empty rows in ``"sparse"`` mode) are zero.
        """
        xp = namespace(self._blk.qb)
        E = self.to_dense()
        den = xp.sum(E, axis=-1, keepdims=True)
        ok = den > 0
        return xp.where(ok, E / xp.where(ok, den, xp.ones_like(den)), xp.zeros_like(E))

    def __call__(self, v: Any) -> Any:
        """Approximate output ``Â v`` for values ``v (..., L, d_v)`` by the fast path."""
        blk = self._blk
        validate_float_array(v, "v", min_ndim=2)
        validate_same_kind({"q": blk.qb, "v": v})
        if tuple(v.shape[:-1]) != (*blk.batch, blk.L):
            raise ValueError(
                f"v must be a {'torch' if is_torch(blk.qb) else 'numpy'} array of shape "
                f"(*batch, L, d_v) = {(*blk.batch, blk.L)} + (d_v,), got {describe_array(v)}"
            )
        xp = namespace(blk.qb)
        B, n, b = math.prod(blk.batch), blk.n, blk.b
        Lp = n * b
        vf = xp.reshape(v, (B, blk.L, int(v.shape[-1])))
        if Lp > blk.L:
            vf = xp.concat([vf, xp.zeros((B, Lp - blk.L, int(v.shape[-1])), dtype=vf.dtype,
                                         device=array_api_compat.device(vf))], axis=1)
        vb = xp.reshape(vf, (B, n, b, int(v.shape[-1])))
        if blk.masked:
            vb = vb * xp.astype(blk.valid, vb.dtype)[..., None]
        new = _Blocks(blk.qb, blk.kb, vb, blk.valid, blk.counts, blk.scores,
                      _block_sums(vb), blk.batch, blk.L, b, n, blk.scale, blk.masked)
        return _run(new, self.selection, self.mode, self.backend)

    matvec = __call__

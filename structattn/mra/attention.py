"""MRA-2 and MRA-2-s: multi-resolution approximation of softmax attention (mra.md §1.4–§2.1).

One head, ``L = n_b·b`` (after padding), block indicator ``U = I_{n_b} ⊗ 1_b``, coarse
scores ``Ŝ = Q̄ K̄ᵀ/√d`` and selected blocks ``M`` (:func:`~structattn.mra.select_blocks`).
MRA-2 (``mode="full"``) approximates the softmax kernel by

    Ê = U (exp(Ŝ) ∘ (1 - M)) Uᵀ + (U M Uᵀ) ∘ exp(S),       Ŷ = diag(Ê 1)⁻¹ Ê V,

a block-constant coarse part plus exact ``b x b`` blocks where ``M`` is set; MRA-2-s
(``mode="sparse"``) keeps only the exact blocks.  Equivalently, ``Ŷ`` is the softmax of
the *mixed logits* ``S`` (selected blocks) / ``Ŝ_IJ`` (other blocks), which is how the
dense matrices (:meth:`MRAApproximation.to_dense`) are built.

Computation (per batch x head)
------------------------------
1. pad ``L`` to a multiple of ``b`` (padded tokens masked), zero padded tokens;
2. block sums and means of ``Q, K, V`` (``O(L d)``), ``Ŝ`` (BLAS, ``O(n_b² d)``);
3. selection (``O(n_b²)``, no gradient): on the host for numpy, on the device for torch
   (static shapes, no host synchronization; the same blocks);
4. coarse part ``C = exp(Ŝ - m̂) ∘ (1 - M)`` weighted by valid-token counts, its
   numerator ``C (Uᵀ V)`` and denominator ``C (Uᵀ 1)`` (BLAS);
5. fine part over the ``k`` selected blocks (``O(k b² d)``): tile, exact row max,
   ``exp``, tile @ V, row sums — the ``"mra_block_sparse"`` numba kernel
   (row-block parallel) or the array-API gather / ``index_add`` core (numpy without
   numba, torch with autograd);
6. log-sum-exp merge of the two parts per row, division, padded rows set to zero.

Stabilisation differs from the official code in two places, neither changing the
mathematics: the coarse part is referenced to the maximum of the *unselected* coarse
scores (so both parts hold an entry ``exp(0)`` and the denominator of a valid row is at
least 1), and there is no ``+1e-6`` in denominators (a row with nothing to attend to,
possible only in ``"sparse"`` mode below coverage, outputs exactly 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._array import validate_attention_inputs
from .._validate import empty_attention
from ..backends import BACKENDS
from ._core import _run
from ._prepare import MODES, _check_mode, _check_prior, _check_scale, _prepare
from .approximation import MRAApproximation
from .selection import BlockSelection, check_block_size

__all__ = ["MODES", "MRAApproximation", "MRAAttention", "mra_attention"]

def mra_attention(
    q: Any,
    k: Any,
    v: Any,
    *,
    block_size: int = 32,
    blocks_per_row: int = 8,
    num_blocks: int | None = None,
    mode: str = "full",
    prior_first: int = 0,
    prior_diag: int = 0,
    key_padding_mask: Any = None,
    scale: float | None = None,
    selection: BlockSelection | None = None,
    backend: str = "auto",
    check_finite: bool | None = None,
    key_mask: Any = None,
) -> Any:
    """Multi-resolution (MRA-2 / MRA-2-s) approximation of softmax self-attention.

    Parameters
    ----------
    q, k : array, shape (..., L, d)
        Queries and keys (numpy or torch, float32/float64); ``L_q = L_k`` (self-attention).
    v : array, shape (..., L, d_v)
        Values.
    block_size : int, default 32
        ``b``, any power of two.  ``L`` need not be a multiple of ``b``: the inputs are
        padded internally and the padding is masked.
    blocks_per_row : int, default 8
        Budget ``k = n_b · blocks_per_row`` exactly computed ``b x b`` blocks per head,
        ``1 <= blocks_per_row <= n_b`` (``n_b = ceil(L / b)``).
    num_blocks : int, optional
        Total budget ``k`` per head in ``[1, n_b²]``; overrides ``blocks_per_row``.
    mode : {"full", "sparse"}, default "full"
        ``"full"``: MRA-2, coarse block means plus exact blocks; ``"sparse"``: MRA-2-s,
        exact blocks only.
    prior_first, prior_diag : int, default 0
        Always refine the first ``prior_first`` block rows/columns and the diagonal band
        ``|I - J| <= prior_diag // 2`` (after coverage; see
        :mod:`structattn.mra.selection`).
    key_padding_mask : bool array, shape (..., L), optional
        Deprecated (``DeprecationWarning``): True marks padding, as in
        ``torch.nn.MultiheadAttention``; use ``key_mask=~key_padding_mask``.
    scale : float, optional
        Logit scale; default ``1/sqrt(d)``.
    selection : BlockSelection, optional
        Use these blocks instead of selecting (e.g. the ``selection`` of an
        :class:`MRAApproximation`, to compare backends on one selection).
    backend : {"auto", "numpy", "numba", "torch"}, default "auto"
    check_finite : bool, optional
        Reject NaN/Inf inputs and scores that may overflow.  Default (None): checked for
        numpy inputs; for torch tensors only inside :func:`structattn.debug` (the checks
        synchronize with the host).
    key_mask : bool array, shape (..., L), optional
        True = a real token (the package convention: True = attend); must broadcast to
        ``(*batch, L)``.  Masked keys get zero weight, masked query rows output zero.

    Returns
    -------
    array, shape (..., L, d_v)
        Same kind, dtype and device as ``q``.

    Notes
    -----
    Cost per head: ``O(L d + n_b² d)`` for block means, coarse scores and the coarse
    product, ``O(n_b²)`` for the selection and ``O(k b² d)`` for the exact blocks, i.e.
    ``O(r L b d)`` with ``r`` blocks per row.  Extra memory ``O(n_b² + L d)`` on the
    numba backend; the torch/numpy core also holds the ``k`` tiles (``O(k b²)``).
    With ``num_blocks = n_b²`` the result equals exact softmax attention (both modes).
    torch: gradients flow through the exact blocks and, in ``"full"`` mode, through the
    block means of ``q, k, v``; the selection has no gradient and is made on the device
    (two stable sorts of the ``n_b²`` coarse scores, static shapes), so a default forward
    and backward never synchronizes with the host; it selects the same blocks as the
    numpy path.

    Examples
    --------
    >>> import numpy as np
    >>> from structattn.mra import mra_attention
    >>> x = np.random.default_rng(0).standard_normal((2, 100, 16))
    >>> mra_attention(x, x, x, block_size=16, blocks_per_row=2).shape
    (2, 100, 16)
    """
    _, L_q, L_k, _, _ = validate_attention_inputs(q, k, v, check_finite=False)
    if L_q == 0 and L_k == 0:  # degenerate length: empty result (docs/reliability.rst)
        return empty_attention(q, k, v, L_q, L_k)
    blk, sel, mode, be = _prepare(
        q, k, v, block_size=block_size, blocks_per_row=blocks_per_row, num_blocks=num_blocks,
        mode=mode, prior_first=prior_first, prior_diag=prior_diag,
        key_padding_mask=key_padding_mask, scale=scale, selection=selection, backend=backend,
        check_finite=check_finite, key_mask=key_mask, device_selection=True,
    )
    return _run(blk, sel, mode, be)

@dataclass(frozen=True, eq=False)
class MRAAttention:
    """MRA-2 / MRA-2-s attention as an operator object (see :func:`mra_attention`).

    Parameters
    ----------
    block_size : int, default 32
    blocks_per_row : int, default 8
    num_blocks : int, optional
    mode : {"full", "sparse"}, default "full"
    prior_first, prior_diag : int, default 0
    scale : float, optional
    backend : str, default "auto"

    Examples
    --------
    >>> import numpy as np
    >>> from structattn.mra import MRAAttention
    >>> x = np.random.default_rng(0).standard_normal((64, 8))
    >>> op = MRAAttention(block_size=16, blocks_per_row=2)
    >>> approx = op.approximate(x, x)
    >>> approx.selected_blocks[1].shape, approx.C.shape, approx.matrix().shape
    ((8,), (4, 4), (64, 64))
    >>> bool(np.allclose(approx(x), op(x, x, x)))
    True
    """

    block_size: int = 32
    blocks_per_row: int = 8
    num_blocks: int | None = None
    mode: str = "full"
    prior_first: int = 0
    prior_diag: int = 0
    scale: float | None = None
    backend: str = "auto"

    def __post_init__(self) -> None:
        check_block_size(self.block_size)
        _check_mode(self.mode)
        _check_prior(self.prior_first, "prior_first")
        _check_prior(self.prior_diag, "prior_diag")
        _check_scale(self.scale, 1)
        if not isinstance(self.backend, str) or self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")

    def _kw(self) -> dict[str, Any]:
        return {"block_size": self.block_size, "blocks_per_row": self.blocks_per_row,
                "num_blocks": self.num_blocks, "mode": self.mode,
                "prior_first": self.prior_first, "prior_diag": self.prior_diag,
                "scale": self.scale, "backend": self.backend}

    def __call__(self, q: Any, k: Any, v: Any, *, key_padding_mask: Any = None,
                 selection: BlockSelection | None = None, key_mask: Any = None) -> Any:
        """Output ``(..., L, d_v)``; see :func:`mra_attention`."""
        return mra_attention(q, k, v, key_padding_mask=key_padding_mask, selection=selection,
                             key_mask=key_mask, **self._kw())

    def approximate(self, q: Any, k: Any, *, key_padding_mask: Any = None,
                    selection: BlockSelection | None = None,
                    check_finite: bool = True, key_mask: Any = None) -> MRAApproximation:
        """Select blocks for ``(q, k)`` and return the approximation object.

        Cost ``O(L d + n_b² d)``; the dense forms are computed on demand.
        """
        kw = self._kw()
        backend = kw.pop("backend")
        blk, sel, mode, be = _prepare(q, k, None, key_padding_mask=key_padding_mask,
                                      selection=selection, backend=backend,
                                      check_finite=check_finite, key_mask=key_mask, **kw)
        return MRAApproximation(blk, sel, mode, be)

    def matrix(self, q: Any, k: Any, *, key_padding_mask: Any = None,
               key_mask: Any = None) -> Any:
        """Dense approximate attention matrix ``(..., L, L)`` implied for ``(q, k)``."""
        return self.approximate(q, k, key_padding_mask=key_padding_mask,
                                key_mask=key_mask).matrix()

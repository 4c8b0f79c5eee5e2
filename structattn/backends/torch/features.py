"""Stabilized positive random features (FAVOR+) of attention on torch, in few passes.

Written as whole-tensor expressions (as in :meth:`PositiveRandomFeatures.attention_features`)
the feature maps of causal kernel attention at ``L = 16384`` cost several times the scan
itself on CPU: about a dozen full passes over ``(..., L, F)`` tensors (scaling, projection,
squares, shifts, the causal headroom test, maxima, exponentials), each allocating a
fresh tensor — and on CPU every fresh tensor of tens of MB pays its page faults
(measured: ``torch.exp`` into a fresh ``8 x 16384 x 64`` float32 tensor 29 ms, into an
existing one 11 ms, one core).  Here, when no gradient is needed, the scale is folded
into the projection, each side allocates one tensor (the GEMM's output) and everything
after it runs in place: the key row term, the column maxima (one reduction: the causal
headroom test ``max_j l_jr - l_1r <= H`` is the elementwise test, rounded subtraction
being monotone), the shifts and the exponential.

The stabilizer *semantics* are those of
:class:`~structattn.features.PositiveRandomFeatures` (which calls this module); every
output row depends on its own input row and on per-batch-element vectors only, so causal
prefix consistency is kept.  Only device operations: no host synchronization.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["applies", "attention_features", "scaled_weights_t"]


def attention_features(
    q: torch.Tensor,
    k: torch.Tensor,
    wt: torch.Tensor,
    *,
    half_temp: float,
    log_norm: float,
    bound: torch.Tensor,
    headroom: float,
    causal: bool,
    eps: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced, stabilized query and key features without autograd.

    Parameters
    ----------
    q : Tensor, shape (..., L_q, d)
    k : Tensor, shape (..., L_k, d), ``L_k >= 1``, same leading dimensions, dtype, device
    wt : Tensor, shape (d, F)
        The scaled projection, transposed (:func:`scaled_weights_t`).
    half_temp : float
        ``scale / 2``: the key row term is ``half_temp · |k_j|²``.
    log_norm : float
        ``log(F^{-1/2})``.
    bound : Tensor, shape (F,)
        ``|w_r|²/2 - H`` per feature (the causal cap).
    headroom : float
        ``H``.
    causal : bool
        Causal key shift (the first key's, capped if a later key would overflow) instead
        of the column maxima.
    eps : float
        Added to every feature.

    Returns
    -------
    (Tensor (..., L_q, F), Tensor (..., L_k, F))

    Notes
    -----
    ``2·(L_q + L_k)·d·F`` flops in two GEMMs; one new ``(..., L, F)`` tensor per side
    and about four in-place passes over it.  Query log-features skip ``-|q_s|²/2``, a
    per-row constant removed exactly by the row maximum (as the numba kernels do).
    """
    lk = _project(k, wt)
    row = torch.linalg.vector_norm(k, dim=-1, keepdim=True)
    lk.sub_(row.square_().mul_(half_temp))
    if causal:
        first = lk[..., :1, :]
        capped = torch.where(first > bound, first, bound)
        colmax = torch.amax(lk, dim=-2, keepdim=True)
        fits = torch.all(colmax - first <= headroom, dim=-1, keepdim=True)
        shift = torch.where(fits, first, capped)  # a new tensor: lk may change below
    else:
        shift = torch.amax(lk, dim=-2, keepdim=True)
    lq = _project(q, wt)
    lq.add_(shift)
    rowmax = torch.amax(lq, dim=-1, keepdim=True)
    lq.sub_(rowmax.sub_(log_norm)).exp_()
    lk.sub_(shift - log_norm).exp_()
    if eps:
        lq.add_(eps)
        lk.add_(eps)
    return lq, lk


#: Fewest rows per batch element handed to the GEMM: torch's CPU GEMM takes another
#: path (another summation order) for very few rows, which would make a short prefix
#: round differently from the same rows of a longer sequence.
MIN_ROWS = 8


def _project(x: torch.Tensor, wt: torch.Tensor) -> torch.Tensor:
    """``x @ wt``, short sequences zero-padded to :data:`MIN_ROWS` rows (then sliced)."""
    L = x.shape[-2]
    if L >= MIN_ROWS:
        return torch.matmul(x, wt)
    pad = x.new_zeros((*x.shape[:-2], MIN_ROWS - L, x.shape[-1]))
    return torch.matmul(torch.cat([x, pad], dim=-2), wt)[..., :L, :]


def scaled_weights_t(W: torch.Tensor, scale_sqrt: float, hyperbolic: bool) -> torch.Tensor:
    """``scale^{1/2} Wᵀ`` (``[W; -W]ᵀ`` when hyperbolic), shape ``(d, F)``: a view of a
    new ``(F, d)`` tensor (``O(F·d)``; the GEMMs take the transposed layout)."""
    if hyperbolic:
        W = torch.cat([W, -W])
    return (W * scale_sqrt).T


def applies(q: Any, k: Any, W: Any = None) -> bool:
    """The no-autograd fast path serves float32/float64 tensors of one batch shape
    (and a projection ``W`` that needs no gradient either)."""
    if q.dtype not in (torch.float32, torch.float64) or k.dtype != q.dtype:
        return False
    if q.shape[:-2] != k.shape[:-2] or q.device != k.device or k.shape[-2] == 0:
        return False
    grads = (q.requires_grad or k.requires_grad
             or (W is not None and getattr(W, "requires_grad", False)))
    return not (torch.is_grad_enabled() and grads)

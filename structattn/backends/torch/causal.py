"""Causal masked kernel attention for torch: chunked scan in a custom autograd Function.

Plain torch autograd through the chunked scan would save one ``m x d_v`` state per chunk
and every chunk's ``C x C`` score block.  The Function below saves only ``A``, ``B``,
``V`` and recomputes in the backward pass, which is three more scans: with
``G = dL/dOut`` and ``J`` the row reversal (``Mᵀ = J M J`` for the causal masks),

* ``dA = (M ⊙ G Vᵀ) B``
* ``dV = (Mᵀ ⊙ B Aᵀ) G = J (M ⊙ (JB)(JA)ᵀ) (JG)``
* ``dB = (Mᵀ ⊙ V Gᵀ) A = J (M ⊙ (JV)(JG)ᵀ) (JA)``

so forward and backward memory are ``O(L·(m + d_v))`` plus one group of chunks
(:data:`~structattn.backends.scan.GROUP_TOKENS` tokens).  The scan is the one math core
of :mod:`structattn.backends.scan` (the numpy and numba backends run the same algorithm
with the same chunk length from :func:`~structattn.backends.scan.choose_chunk_size`).
Only plain torch operations are used: it runs on CPU and CUDA.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from ..scan import causal_masked_matmul as _scan

__all__ = ["causal_masked_matmul"]


class _CausalMaskedMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, A, B, V, gamma, exclusive, chunk_size):
        ctx.save_for_backward(A, B, V)
        ctx.opts = {"gamma": gamma, "exclusive": exclusive, "chunk_size": chunk_size}
        return _scan(A, B, V, **ctx.opts)

    @staticmethod
    @once_differentiable
    def backward(ctx, G):
        A, B, V = ctx.saved_tensors
        opts = ctx.opts
        G = G.contiguous()
        dA = dB = dV = None

        def flip(x):
            return torch.flip(x, dims=(-2,))

        if ctx.needs_input_grad[0]:
            dA = _scan(G, V, B, **opts)
        if ctx.needs_input_grad[2]:
            dV = flip(_scan(flip(B), flip(A), flip(G), **opts))
        if ctx.needs_input_grad[1]:
            dB = flip(_scan(flip(V), flip(G), flip(A), **opts))
        return dA, dB, dV, None, None, None


def causal_masked_matmul(
    A: torch.Tensor,
    B: torch.Tensor,
    V: torch.Tensor,
    *,
    gamma: float = 1.0,
    exclusive: bool = False,
    chunk_size: int | None = None,
    normalizer: bool = False,
) -> Any:
    """``(M ⊙ A Bᵀ) V`` for the (decayed) causal mask on torch tensors, with autograd.

    Same contract as :func:`structattn.backends.scan.causal_masked_matmul` (``chunk_size``
    None: the cost model's ``C``, the same as the numpy and numba backends'; with
    ``normalizer``, ``(num, den)``: the columns of the product with ``[V | 1]``).  With
    gradients, the saved tensors are ``A``, ``B``, ``V`` only: ``O(L·(m + d_v))``.
    """
    grad = torch.is_grad_enabled() and (A.requires_grad or B.requires_grad or V.requires_grad)
    if not grad:
        return _scan(A, B, V, gamma=gamma, exclusive=exclusive, chunk_size=chunk_size,
                     normalizer=normalizer)
    if normalizer:  # autograd needs the ones column as a real input
        out = causal_masked_matmul(A, B, torch.cat([V, torch.ones_like(V[..., :1])], -1),
                                   gamma=gamma, exclusive=exclusive, chunk_size=chunk_size)
        return out[..., :-1], out[..., -1:]
    return _CausalMaskedMatmul.apply(A, B, V, float(gamma), bool(exclusive),
                                     None if chunk_size is None else int(chunk_size))

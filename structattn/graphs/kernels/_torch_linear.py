"""The autograd Function of :func:`~._adjacency.linear_autograd` (torch only).

Imported lazily by :func:`~._adjacency.linear_autograd` on torch tensors that require
grad.  See CONTRIBUTING.md, "Custom autograd Functions".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.autograd.function import once_differentiable

__all__ = ["LinearFunction"]


class LinearFunction(torch.autograd.Function):
    """``Y = forward(X)`` for a linear map, with ``X̄ = adjoint(Ȳ)`` as the backward.

    ``apply(X, forward, adjoint)``: the two callables are non-tensor arguments (``None``
    gradients); nothing is saved, so the memory is that of one call whatever the number
    of sparse products inside ``forward``.  The maps run scipy / sparse-CSR code that
    autograd cannot see, hence ``once_differentiable``: a double backward raises instead
    of returning a wrong zero.
    """

    @staticmethod
    def forward(ctx: Any, X: torch.Tensor, forward: Callable[[Any], Any],
                adjoint: Callable[[Any], Any]) -> torch.Tensor:
        ctx.adjoint = adjoint
        return forward(X)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, G: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return ctx.adjoint(G.contiguous()), None, None

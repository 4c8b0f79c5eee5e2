"""The autograd Function of the tree-distance DP (torch-only module; see CONTRIBUTING.md).

Imported by :func:`structattn.backends.torch.tree.tree_exp_dp` inside its torch branch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from .tree import tree_exp_dp_levels

__all__ = ["TreeDP"]


class TreeDP(torch.autograd.Function):
    """``M X`` for the symmetric tree-distance mask ``M``; backward: the same DP on ``G``.

    ``structure`` (numpy arrays of the tree in breadth-first position order, see
    :func:`~structattn.backends.torch.tree.tree_exp_dp_levels`) is a non-tensor argument:
    a ctx attribute with a ``None`` gradient.  The DP runs under ``no_grad`` with
    in-place segment sums, invisible to autograd: hence ``once_differentiable``.
    """

    @staticmethod
    def forward(ctx: Any, X: torch.Tensor, structure: tuple) -> torch.Tensor:
        ctx.structure = structure
        return tree_exp_dp_levels(X, *structure)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, G: torch.Tensor) -> tuple[torch.Tensor, None]:
        return tree_exp_dp_levels(G.contiguous(), *ctx.structure), None

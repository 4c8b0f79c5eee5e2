"""``VectorizedLinear``: ``P`` independent linear layers as one batched matmul (torch)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["VectorizedLinear"]


class VectorizedLinear(nn.Module):
    """``P`` independent linear layers applied as one batched matmul.

    Weight ``(P, in, out)``, bias ``(P, 1, out)``; ``forward(x)`` with ``x`` of shape
    ``(P, ..., in)`` returns ``(P, ..., out)`` = ``x W_p + b_p`` per member.  Each
    member is initialized as ``torch.nn.Linear`` (Kaiming-uniform, bound
    ``in**-0.5``).  Train with the population loss ``P · mean_p L_p`` (a sum over
    members) so that each member's gradient equals its solo gradient.

    Parameters
    ----------
    population : int
        ``P``.
    in_features, out_features : int
    bias : bool, default True
    dtype, device : optional
        As for ``torch.nn.Linear``.

    Notes
    -----
    ``O(P·B·in·out)`` time, one batched matmul.
    """

    def __init__(self, population: int, in_features: int, out_features: int,
                 bias: bool = True, *, dtype: Any = None, device: Any = None) -> None:
        super().__init__()
        for name, value in (("population", population), ("in_features", in_features),
                            ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.population, self.in_features = population, in_features
        self.out_features = out_features
        kw = {"dtype": dtype, "device": device}
        self.weight = nn.Parameter(torch.empty(population, in_features, out_features, **kw))
        self.bias = (nn.Parameter(torch.empty(population, 1, out_features, **kw))
                     if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-uniform per member, as ``torch.nn.Linear.reset_parameters``."""
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 2 or x.shape[0] != self.population or x.shape[-1] != self.in_features:
            raise ValueError(
                f"x must have shape (P={self.population}, ..., in={self.in_features}), "
                f"got {tuple(x.shape)}"
            )
        flat = x.reshape(self.population, -1, self.in_features)
        y = flat @ self.weight
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"population={self.population}, in_features={self.in_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")


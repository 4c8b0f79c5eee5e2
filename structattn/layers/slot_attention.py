"""Slot Attention (Locatello et al., NeurIPS 2020), a torch reference layer.

For inputs ``X (..., n, input_dim)``::

    X̂ = LN(X);  k = X̂ W_k,  v = X̂ W_v                        (..., n, dim)
    S₀ = μ + exp(log σ) ⊙ ε,  ε ~ N(0, I)                       (..., K, dim)
    repeat `iterations` times:
        q = LN(S) W_q
        U = inverted_attention(q, k, v)                          (softmax over the K slots,
                                                                  then a mean over inputs)
        S = GRU(U, S);   S = S + MLP(LN(S))

The attention step is :func:`structattn.objects.inverted_attention` (one Sinkhorn
iteration on ``exp(k qᵀ/√dim)``: slots compete for inputs, each slot then averages the
inputs it won).  Slots are permutation-equivariant: permuting the initial slots permutes
the output slots; permuting the inputs leaves the output unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._debug import resolve_check_finite
from ..objects import inverted_attention
from ._common import check_input, check_positive_float, check_positive_int

__all__ = ["SlotAttention"]


class SlotAttention(nn.Module):
    """Iterative slot attention over a set of inputs.

    Parameters
    ----------
    dim : int
        Slot (and key/value) size.
    num_slots : int
        Number of slots ``K``.
    iterations : int
        Attention/GRU refinement steps (3 in Slot Attention and HOWM).
    input_dim : int, optional
        Size of the input features (default ``dim``).
    hidden_dim : int, optional
        Hidden size of the residual MLP (default ``2 * dim``).
    eps : float
        Added to the attention weights before the mean over inputs (``1e-8``).

    Notes
    -----
    One forward pass costs ``O(iterations · (n·K·dim + K·dim²) + n·input_dim·dim)``; no
    ``n × n`` matrix is formed.
    """

    def __init__(self, dim: int, num_slots: int, iterations: int = 3, *,
                 input_dim: int | None = None, hidden_dim: int | None = None,
                 eps: float = 1e-8) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.num_slots = check_positive_int(num_slots, "num_slots")
        self.iterations = check_positive_int(iterations, "iterations")
        self.input_dim = self.dim if input_dim is None else check_positive_int(
            input_dim, "input_dim")
        hidden = 2 * self.dim if hidden_dim is None else check_positive_int(
            hidden_dim, "hidden_dim")
        self.eps = check_positive_float(eps, "eps")
        self.slots_mu = nn.Parameter(torch.zeros(1, self.dim))
        self.slots_log_sigma = nn.Parameter(torch.zeros(1, self.dim))
        nn.init.xavier_uniform_(self.slots_mu)
        nn.init.xavier_uniform_(self.slots_log_sigma)
        self.norm_inputs = nn.LayerNorm(self.input_dim)
        self.norm_slots = nn.LayerNorm(self.dim)
        self.norm_mlp = nn.LayerNorm(self.dim)
        self.to_q = nn.Linear(self.dim, self.dim, bias=False)
        self.to_k = nn.Linear(self.input_dim, self.dim, bias=False)
        self.to_v = nn.Linear(self.input_dim, self.dim, bias=False)
        self.gru = nn.GRUCell(self.dim, self.dim)
        self.mlp = nn.Sequential(nn.Linear(self.dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, self.dim))

    def initial_slots(self, batch_shape: tuple[int, ...], *,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``S₀ = μ + exp(log σ) ε`` of shape ``(*batch_shape, K, dim)``."""
        p = self.slots_mu
        eps = torch.randn((*batch_shape, self.num_slots, self.dim), generator=generator,
                          dtype=p.dtype, device=p.device)
        return self.slots_mu + torch.exp(self.slots_log_sigma) * eps

    def forward(self, inputs: torch.Tensor, *, slots: torch.Tensor | None = None,
                generator: torch.Generator | None = None, return_weights: bool = False,
                check_finite: bool | None = None) -> Any:
        """Run the slot refinement.

        Parameters
        ----------
        inputs : Tensor (..., n, input_dim)
            The set to decompose (e.g. CNN feature-map positions).
        slots : Tensor (..., K, dim), optional
            Initial slots; default drawn by :meth:`initial_slots` (pass a seeded
            ``generator`` for reproducible draws).
        generator : torch.Generator, optional
            Random source for the initial slots.
        return_weights : bool
            Also return the last step's attention weights ``(..., n, K)`` (columns sum 1).
        check_finite : bool or None
            Scan the inputs for NaN/Inf (None: only inside :func:`structattn.debug`, so
            the default forward never synchronizes with the host).

        Returns
        -------
        slots : Tensor (..., K, dim)
        weights : Tensor (..., n, K)
            Only with ``return_weights=True``.
        """
        check_input(inputs, "inputs", self.input_dim,
                    check_finite=resolve_check_finite(check_finite, inputs), like=self)
        batch = tuple(inputs.shape[:-2])
        if slots is None:
            slots = self.initial_slots(batch, generator=generator)
        else:
            check_input(slots, "slots", self.dim, check_finite=check_finite, like=self)
            if tuple(slots.shape) != (*batch, self.num_slots, self.dim):
                raise ValueError(
                    f"slots must have shape (..., K, dim) = {(*batch, self.num_slots, self.dim)}"
                    f", got {tuple(slots.shape)}"
                )
        x = self.norm_inputs(inputs)
        k, v = self.to_k(x), self.to_v(x)
        weights = None
        for _ in range(self.iterations):
            prev = slots
            q = self.to_q(self.norm_slots(slots))
            updates, weights = inverted_attention(q, k, v, scale=self.dim**-0.5, eps=self.eps,
                                                  return_weights=True, check_finite=False)
            slots = self.gru(updates.reshape(-1, self.dim), prev.reshape(-1, self.dim))
            slots = slots.reshape(prev.shape)
            slots = slots + self.mlp(self.norm_mlp(slots))
        return (slots, weights) if return_weights else slots

    def dense_operator(self, inputs: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """The dense ``(..., K, n)`` operator ``Aᵀ`` of the *first* attention step from ``slots``.

        ``Aᵀ @ (LN(inputs) W_v)`` is the first step's slot update ``U``; each row of ``Aᵀ``
        sums to 1 (a weighted mean over the inputs).  For tests and inspection.
        """
        check_input(inputs, "inputs", self.input_dim, check_finite=True, like=self)
        check_input(slots, "slots", self.dim, check_finite=True, like=self)
        x = self.norm_inputs(inputs)
        q = self.to_q(self.norm_slots(slots))
        _, A = inverted_attention(q, self.to_k(x), self.to_v(x), scale=self.dim**-0.5,
                                  eps=self.eps, return_weights=True, check_finite=False)
        return A.transpose(-1, -2)

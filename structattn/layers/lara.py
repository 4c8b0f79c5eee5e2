"""Multi-head linear randomized attention (LARA; Zheng, Wang, Kong, ICML 2022) layer.

``Y = concat_h( lara(Q_h, K_h, V_h) ) W_o`` with ``Q = X W_q``, ``K = C W_k``,
``V = C W_v``: :func:`structattn.estimators.lara` (log-domain, linear in ``L``) on the
``(..., heads, L, head_dim)`` projections.  The proposal noise is drawn in numpy from
an explicit seed (kernels.md §0), so a forward pass is reproducible and equal to the
library function on the same projections and seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .._array import as_generator
from ..estimators import lara, lara_parts
from ._common import check_positive_int
from .kernel_attention import MultiHeadProjection

__all__ = ["LARAAttention"]


class LARAAttention(nn.Module):
    """Multi-head LARA attention (non-causal; LARA has no causal variant).

    Parameters
    ----------
    d_model : int
        Model width (last dimension of the input).
    num_heads : int
        Number of heads.
    num_landmarks : int
        Proposals ``C`` per head (``<= L`` at call time).
    landmarks, mis, alpha_coeff, antithetic, noise_scale, alpha_floor, grid_shape
        As in :func:`structattn.estimators.lara` (validated by it).
    deterministic : bool, optional
        ``w_c = μ_c`` (no noise).  Default None: deterministic in ``eval()`` mode and
        random in ``train()`` mode, like the reference code; ``antithetic`` only
        applies to random passes.
    seed : int or numpy.random.Generator, default 0
        Source of the proposal noise: the layer keeps one Generator and advances it at
        every random pass (``forward(x, seed=...)`` overrides it for one call).
    head_dim : int, optional
        Default ``d_model // num_heads``.
    bias : bool, default True
        Biases of the projections.
    check_finite : bool, optional
        Reject NaN/Inf inputs.  Default: only inside :func:`structattn.debug` (the scan
        is a host synchronization).

    Notes
    -----
    ``O(L d_model h·head_dim)`` for the projections plus
    ``O(L C head_dim + C² head_dim)`` per head for LARA; memory ``O(L C)`` per head.
    Inputs ``(..., L, d_model)``, float32/float64, on the parameters' device and dtype;
    the noise is drawn on the CPU in float64 and moved to the input's device.

    Examples
    --------
    >>> import torch
    >>> from structattn.layers import LARAAttention
    >>> layer = LARAAttention(32, 4, num_landmarks=4, seed=0).eval()
    >>> layer(torch.randn(2, 16, 32)).shape
    torch.Size([2, 16, 32])
    """

    def __init__(self, d_model: int, num_heads: int, *, num_landmarks: int,
                 landmarks: str = "segment-mean", mis: str = "opt", alpha_coeff: float = 1.0,
                 antithetic: bool = False, deterministic: bool | None = None,
                 seed: Any = 0, noise_scale: float = 1.0,
                 alpha_floor: float | str | None = "auto",
                 grid_shape: tuple[int, int] | None = None, head_dim: int | None = None,
                 bias: bool = True, check_finite: bool | None = None) -> None:
        super().__init__()
        self.heads = MultiHeadProjection(d_model, num_heads, head_dim=head_dim, bias=bias)
        self.num_landmarks = check_positive_int(num_landmarks, "num_landmarks")
        if alpha_coeff is None or isinstance(alpha_coeff, bool) or not isinstance(
                alpha_coeff, (int, float, np.integer, np.floating)) or not alpha_coeff >= 0:
            raise ValueError(f"alpha_coeff must be a real number >= 0, got {alpha_coeff!r}")
        if deterministic is not None and not isinstance(deterministic, bool):
            raise TypeError(f"deterministic must be a bool or None, got {deterministic!r}")
        if check_finite is not None and not isinstance(check_finite, bool):
            raise TypeError(f"check_finite must be a bool or None, got {check_finite!r}")
        for name, flag in (("antithetic", antithetic),):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        self.options = {"landmarks": landmarks, "mis": mis, "alpha_coeff": float(alpha_coeff),
                        "noise_scale": noise_scale, "alpha_floor": alpha_floor,
                        "grid_shape": grid_shape}
        self.antithetic, self.deterministic = antithetic, deterministic
        self.check_finite = check_finite
        self._rng = as_generator(seed)
        # validate the remaining options once, on a tiny problem, before any real call
        probe = np.zeros((max(self.num_landmarks, 4), 1))
        if landmarks != "adaptive-2d":
            lara(probe, probe, probe, num_landmarks=self.num_landmarks,
                 deterministic=True, **self.options)

    @property
    def d_model(self) -> int:
        """Model width."""
        return self.heads.d_model

    def _kwargs(self, seed: Any) -> dict[str, Any]:
        det = (not self.training) if self.deterministic is None else self.deterministic
        kw = dict(self.options, num_landmarks=self.num_landmarks, deterministic=det,
                  antithetic=self.antithetic and not det, check_finite=False)
        if not det:
            kw["seed"] = self._rng if seed is None else as_generator(seed)
        return kw

    def _inputs(self, x: Any, context: Any) -> tuple[torch.Tensor, ...]:
        self.heads.check(x, context, self.check_finite)
        L = min(x.shape[-2], x.shape[-2] if context is None else context.shape[-2])
        if self.num_landmarks > L:
            raise ValueError(
                f"num_landmarks ({self.num_landmarks}) must be <= the sequence length "
                f"(got inputs of length {L})"
            )
        return self.heads.project(x, context)

    def attention_matrix(self, x: torch.Tensor, context: torch.Tensor | None = None, *,
                         seed: Any = None) -> torch.Tensor:
        """The per-head row-stochastic matrices LARA implies (``O(L²)``; for tests).

        Parameters
        ----------
        x : torch.Tensor, shape (..., L, d_model)
        context : torch.Tensor, shape (..., L_k, d_model), optional
        seed : int or numpy.random.Generator, optional
            Noise for this call (pass the same seed to :meth:`forward` to get the
            matrix of that pass).

        Returns
        -------
        torch.Tensor, shape (..., num_heads, L, L_k)
        """
        q, k, _ = self._inputs(x, context)
        return lara_parts(q, k, None, **self._kwargs(seed)).matrix()

    dense_operator = attention_matrix

    def forward_with_operator(self, x: torch.Tensor, operator: torch.Tensor,
                              context: torch.Tensor | None = None) -> torch.Tensor:
        """Output with explicit per-head matrices ``P (..., h, L, L_k)``: ``merge(P V)``."""
        _, _, v = self._inputs(x, context)
        return self.heads.merge(operator @ v)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, *,
                seed: Any = None) -> torch.Tensor:
        """Attend from ``x`` to ``context`` (default: ``x``).

        Parameters
        ----------
        x : torch.Tensor, shape (..., L, d_model)
        context : torch.Tensor, shape (..., L_k, d_model), optional
        seed : int or numpy.random.Generator, optional
            Noise for this call; default: the layer's Generator (advanced).

        Returns
        -------
        torch.Tensor, shape (..., L, d_model)
        """
        q, k, v = self._inputs(x, context)
        return self.heads.merge(lara(q, k, v, **self._kwargs(seed)))

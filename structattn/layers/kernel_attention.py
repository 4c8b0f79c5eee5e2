"""Multi-head masked kernel attention layer (e.g. a Performer layer with a structured mask).

``Y = concat_h( rownormalize(M ⊙ φ(Q_h) φ(K_h)ᵀ) V_h ) W_o`` with ``Q = X W_q``,
``K = C W_k``, ``V = C W_v`` (``C = X`` for self-attention), computed head-parallel by
:func:`structattn.kernel_attention` on ``(..., heads, L, head_dim)`` tensors: no
``L x L`` matrix is formed unless the mask is itself dense.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..attention import attention_matrix, kernel_attention
from ..features import FeatureMap
from ..masks import Mask
from ._common import check_input, check_positive_int
from ._state import StructuredStateMixin

__all__ = ["KernelAttention", "MultiHeadProjection"]


class MultiHeadProjection(nn.Module):
    """Query/key/value projections split into heads, and the output projection.

    Parameters
    ----------
    d_model : int
        Model width.
    num_heads : int
        Number of heads ``h``.
    head_dim : int, optional
        Per-head size; default ``d_model // num_heads`` (then ``num_heads`` must divide
        ``d_model``).
    bias : bool, default True
        Biases in the four linear maps.
    """

    def __init__(self, d_model: int, num_heads: int, *, head_dim: int | None = None,
                 bias: bool = True) -> None:
        super().__init__()
        self.d_model = check_positive_int(d_model, "d_model")
        self.num_heads = check_positive_int(num_heads, "num_heads")
        if head_dim is None:
            if self.d_model % self.num_heads:
                raise ValueError(
                    f"num_heads ({self.num_heads}) must divide d_model ({self.d_model}) "
                    f"unless head_dim is given"
                )
            head_dim = self.d_model // self.num_heads
        self.head_dim = check_positive_int(head_dim, "head_dim")
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be a bool, got {bias!r}")
        inner = self.num_heads * self.head_dim
        self.to_q = nn.Linear(self.d_model, inner, bias=bias)
        self.to_k = nn.Linear(self.d_model, inner, bias=bias)
        self.to_v = nn.Linear(self.d_model, inner, bias=bias)
        self.to_out = nn.Linear(inner, self.d_model, bias=bias)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(*t.shape[:-1], self.num_heads, self.head_dim)
        return t.movedim(-2, -3)  # (..., h, L, head_dim)

    def project(self, x: torch.Tensor, context: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-head ``q (..., h, L, head_dim)``, ``k, v (..., h, L_k, head_dim)``."""
        context = x if context is None else context
        return (self._split(self.to_q(x)), self._split(self.to_k(context)),
                self._split(self.to_v(context)))

    def merge(self, y: torch.Tensor) -> torch.Tensor:
        """``(..., h, L, head_dim)`` -> output projection, ``(..., L, d_model)``."""
        y = y.movedim(-3, -2)
        return self.to_out(y.reshape(*y.shape[:-2], self.num_heads * self.head_dim))

    def check(self, x: Any, context: Any, check_finite: bool) -> None:
        """Validate ``x (..., L, d_model)`` and ``context (..., L_k, d_model)``."""
        check_input(x, "x", self.d_model, check_finite=check_finite, like=self)
        if context is not None:
            check_input(context, "context", self.d_model, check_finite=check_finite,
                        like=self)
            if tuple(context.shape[:-2]) != tuple(x.shape[:-2]):
                raise ValueError(
                    f"context must have the leading dimensions of x, "
                    f"{tuple(x.shape[:-2])}; got shape {tuple(context.shape)}"
                )


class KernelAttention(StructuredStateMixin):
    """Multi-head kernel attention with any structattn feature map and mask.

    Parameters
    ----------
    d_model : int
        Model width (last dimension of the input).
    num_heads : int
        Number of heads.
    feature_map : FeatureMap
        ``φ``, applied to every head (its input size must be ``head_dim``), e.g.
        ``PositiveRandomFeatures(dim=head_dim, num_features=64, seed=0)``.  Its random
        projection is the buffer ``projection`` (in ``state_dict``, moved by ``.to()``);
        redraw it with :meth:`redraw_projections`.
    mask : Mask, optional
        Structured ``L_q x L_k`` mask (it fixes the lengths the layer accepts).
    causal : bool, default False
        Multiply by the causal mask (self-attention only).
    head_dim : int, optional
        Default ``d_model // num_heads``.
    bias : bool, default True
        Biases of the projections.
    backend : {"auto", "torch"}, default "auto"
        Passed to :func:`~structattn.kernel_attention` (tensors always run on torch).
    check_finite : bool, optional
        Reject NaN/Inf inputs.  Default: only inside :func:`structattn.debug` (the scan
        is a host synchronization).

    Notes
    -----
    Time ``O(L d_model h·head_dim)`` for the projections plus the cost of
    :func:`~structattn.kernel_attention` per head: ``O(L m head_dim)`` without a mask
    or with a causal one.  Inputs ``(..., L, d_model)``, float32/float64 (or
    float16/bfloat16: attention then runs in float32), on the parameters' device and
    dtype.  Buffers: ``projection`` (random feature maps, float64 until the module is
    cast) and ``mask_<field>`` for each array of the mask (e.g. ``mask_coeffs`` of a
    :class:`~structattn.masks.Toeplitz`).  The default forward and backward never
    synchronize with the host.

    Examples
    --------
    >>> import torch
    >>> from structattn import PositiveRandomFeatures
    >>> from structattn.layers import KernelAttention
    >>> layer = KernelAttention(32, 4, PositiveRandomFeatures(8, 16, seed=0), causal=True)
    >>> layer(torch.randn(2, 10, 32)).shape
    torch.Size([2, 10, 32])
    """

    def __init__(self, d_model: int, num_heads: int, feature_map: FeatureMap, *,
                 mask: Mask | None = None, causal: bool = False, head_dim: int | None = None,
                 bias: bool = True, backend: str = "auto",
                 check_finite: bool | None = None) -> None:
        super().__init__()
        self.heads = MultiHeadProjection(d_model, num_heads, head_dim=head_dim, bias=bias)
        if not isinstance(feature_map, FeatureMap):
            raise TypeError(
                f"feature_map must be a structattn FeatureMap, got {type(feature_map).__name__}"
            )
        fdim = getattr(feature_map, "dim", None)
        if fdim is not None and fdim != self.heads.head_dim:
            raise ValueError(
                f"feature_map.dim ({fdim}) must equal head_dim ({self.heads.head_dim})"
            )
        if mask is not None and not isinstance(mask, Mask):
            raise TypeError(f"mask must be a structattn Mask or None, got {type(mask).__name__}")
        if not isinstance(causal, bool):
            raise TypeError(f"causal must be a bool, got {causal!r}")
        if check_finite is not None and not isinstance(check_finite, bool):
            raise TypeError(f"check_finite must be a bool or None, got {check_finite!r}")
        if backend not in ("auto", "torch"):
            raise ValueError(f"backend must be 'auto' or 'torch' for a torch layer, got "
                             f"{backend!r}")
        self._init_structured_state(feature_map, mask)
        self.causal = causal
        self.backend, self.check_finite = backend, check_finite

    @property
    def d_model(self) -> int:
        """Model width."""
        return self.heads.d_model

    def _inputs(self, x: Any, context: Any) -> tuple[torch.Tensor, ...]:
        self.heads.check(x, context, self.check_finite)
        L_q = x.shape[-2]
        L_k = L_q if context is None else context.shape[-2]
        if self.mask is not None and self.mask.shape != (L_q, L_k):
            raise ValueError(
                f"the layer's mask has shape {self.mask.shape} but the input gives "
                f"L_q x L_k = {L_q} x {L_k}"
            )
        if self.causal and L_q != L_k:
            raise ValueError(f"causal=True needs L_q == L_k, got {L_q} and {L_k}")
        return self.heads.project(x, context)

    def attention_matrix(self, x: torch.Tensor,
                         context: torch.Tensor | None = None) -> torch.Tensor:
        """The per-head dense attention matrices the layer applies implicitly.

        Parameters
        ----------
        x : torch.Tensor, shape (..., L, d_model)
        context : torch.Tensor, shape (..., L_k, d_model), optional

        Returns
        -------
        torch.Tensor, shape (..., num_heads, L, L_k)
            Row-stochastic; ``forward`` equals ``merge(P @ v)``.
        """
        q, k, _ = self._inputs(x, context)
        return attention_matrix(q, k, feature_map=self._feature_map_for(q), mask=self.mask,
                                causal=self.causal, backend=self.backend,
                                check_finite=False)

    dense_operator = attention_matrix

    def forward_with_operator(self, x: torch.Tensor, operator: torch.Tensor,
                              context: torch.Tensor | None = None) -> torch.Tensor:
        """Output with explicit per-head matrices ``P (..., h, L, L_k)``: ``merge(P V)``."""
        _, _, v = self._inputs(x, context)
        return self.heads.merge(operator @ v)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Attend from ``x`` to ``context`` (default: ``x``).

        Parameters
        ----------
        x : torch.Tensor, shape (..., L, d_model)
        context : torch.Tensor, shape (..., L_k, d_model), optional

        Returns
        -------
        torch.Tensor, shape (..., L, d_model)
        """
        q, k, v = self._inputs(x, context)
        y = kernel_attention(q, k, v, self._feature_map_for(q), mask=self.mask,
                             causal=self.causal,
                             backend=self.backend, check_finite=False)
        return self.heads.merge(y)

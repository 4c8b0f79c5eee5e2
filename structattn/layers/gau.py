"""Gated attention unit (GAU; Hua, Dai, Liu, Le, ICML 2022), quadratic form.

For an input ``X`` of shape ``(..., T, d_model)`` (pre-normalized, ``X̂ = LN(X)``)::

    U = silu(X̂ W_u),  V = silu(X̂ W_v)           (..., T, e),  e = expansion · d_model
    Z = silu(X̂ W_z)                               (..., T, s),  small shared s
    Q = Z ⊙ γ_q + β_q,  K = Z ⊙ γ_k + β_k          per-dimension scale and offset
    A = relu²(Q Kᵀ · scale + b)                    (..., T, T), un-normalized
    O = (U ⊙ (A V)) W_o + X                         residual

with ``scale = 1/T`` by default (the paper's pseudo-code) and an optional learned
relative-position bias ``b_ij = β_rel[clip(i - j, -D, D)]``.  In causal mode
``A_ij`` is zeroed for ``j > i`` *after* the activation (a masked logit of 0 would
still give ``relu²(b) > 0``).  The mixed-chunk (linear-time) version is
:class:`~structattn.layers.FLASH`; both share their projections' layout, so a
FLASH layer's weights can be loaded into a GAU (see :meth:`FLASH.quadratic_gau`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._common import (
    check_input,
    check_nonnegative_int,
    check_positive_float,
    check_positive_int,
    check_scale,
    relative_offsets_bias,
)

__all__ = ["GAU"]


class _GatedUnit(nn.Module):
    """Projections shared by GAU and FLASH: LN, ``U``, ``V``, ``Z``, the heads, ``W_o``.

    ``num_heads`` per-dimension (scale, offset) pairs are made from the shared ``Z``:
    2 for GAU (``Q, K``), 4 for FLASH (``Q_quad, K_quad, Q_lin, K_lin``).
    """

    def __init__(self, d_model: int, num_heads: int, *, qk_dim: int,
                 expansion_factor: float, causal: bool, rel_pos_bias: int | None,
                 norm: bool, residual: bool, check_finite: bool) -> None:
        super().__init__()
        self.d_model = check_positive_int(d_model, "d_model")
        self.qk_dim = check_positive_int(qk_dim, "qk_dim")
        expansion_factor = check_positive_float(expansion_factor, "expansion_factor")
        self.hidden_dim = round(expansion_factor * self.d_model)
        if self.hidden_dim < 1:
            raise ValueError(
                f"expansion_factor * d_model must round to >= 1, got "
                f"{expansion_factor} * {self.d_model}"
            )
        for name, flag in (("causal", causal), ("norm", norm), ("residual", residual)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        if check_finite is not None and not isinstance(check_finite, bool):
            raise TypeError(f"check_finite must be a bool or None, got {check_finite!r}")
        self.causal, self.residual, self.check_finite = causal, residual, check_finite
        self.rel_pos_bias = (None if rel_pos_bias is None
                             else check_nonnegative_int(rel_pos_bias, "rel_pos_bias"))
        self.norm = nn.LayerNorm(self.d_model) if norm else nn.Identity()
        self.to_uv = nn.Linear(self.d_model, 2 * self.hidden_dim)
        self.to_z = nn.Linear(self.d_model, self.qk_dim)
        self.gamma = nn.Parameter(torch.empty(num_heads, self.qk_dim))
        self.beta = nn.Parameter(torch.zeros(num_heads, self.qk_dim))
        nn.init.normal_(self.gamma, std=0.02)
        self.to_out = nn.Linear(self.hidden_dim, self.d_model)
        if self.rel_pos_bias is not None:
            self.rel_bias = nn.Parameter(torch.zeros(2 * self.rel_pos_bias + 1))
        else:
            self.register_parameter("rel_bias", None)

    # ---------------------------------------------------------------- pieces
    def _check(self, x: Any) -> None:
        check_input(x, "x", self.d_model, check_finite=self.check_finite, like=self)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The gates and heads of ``x``.

        Parameters
        ----------
        x : torch.Tensor, shape (..., T, d_model)

        Returns
        -------
        u, v : torch.Tensor, shape (..., T, e)
            Gate ``U`` and values ``V``.
        heads : torch.Tensor, shape (num_heads, ..., T, s)
            ``Z ⊙ γ_h + β_h`` for each head ``h``.
        """
        self._check(x)
        xn = self.norm(x)
        u, v = nn.functional.silu(self.to_uv(xn)).chunk(2, dim=-1)
        z = nn.functional.silu(self.to_z(xn))
        shape = (self.gamma.shape[0],) + (1,) * (z.ndim - 1) + (self.qk_dim,)
        heads = z.unsqueeze(0) * self.gamma.reshape(shape) + self.beta.reshape(shape)
        return u, v, heads

    def _bias(self, L: int) -> torch.Tensor | None:
        if self.rel_bias is None:
            return None
        return relative_offsets_bias(self.rel_bias, self.rel_pos_bias, L)

    def _finish(self, x: torch.Tensor, u: torch.Tensor, av: torch.Tensor) -> torch.Tensor:
        out = self.to_out(u * av)
        return out + x if self.residual else out

    def _check_operator(self, M: Any, x: torch.Tensor) -> None:
        T = x.shape[-2]
        if not isinstance(M, torch.Tensor) or tuple(M.shape[-2:]) != (T, T):
            got = tuple(M.shape) if isinstance(M, torch.Tensor) else type(M).__name__
            raise ValueError(f"operator must be a (..., {T}, {T}) tensor, got {got}")

    def forward_with_operator(self, x: torch.Tensor, operator: torch.Tensor) -> torch.Tensor:
        """The layer's output with an explicit ``(..., T, T)`` operator ``M``.

        ``(U ⊙ (M V)) W_o (+ x)``; with ``operator = self.dense_operator(x)`` this is the
        quadratic reference of :meth:`forward` (for tests and studies).

        Parameters
        ----------
        x : torch.Tensor, shape (..., T, d_model)
        operator : torch.Tensor, shape (..., T, T)

        Returns
        -------
        torch.Tensor, shape (..., T, d_model)
        """
        u, v, _ = self.project(x)
        self._check_operator(operator, x)
        return self._finish(x, u, operator @ v)


def _relu2(s: torch.Tensor) -> torch.Tensor:
    return torch.square(torch.relu(s))


class GAU(_GatedUnit):
    """Gated attention unit with quadratic ``relu²`` attention (FLASH-Quad).

    Parameters
    ----------
    d_model : int
        Model width (last dimension of the input).
    qk_dim : int, default 128
        Shared query/key size ``s``.
    expansion_factor : float, default 2.0
        ``e = round(expansion_factor · d_model)``: width of ``U`` and ``V``.
    causal : bool, default False
        Zero ``A_ij`` for ``j > i`` (after the activation).
    scale : float or "length", default "length"
        Logit scale: ``"length"`` is ``1/T`` (the paper), a float is used as given.
    rel_pos_bias : int, optional
        Learned relative-position bias with offsets clipped to ``[-D, D]``
        (``2D + 1`` scalars, zero at initialization); None for no bias.
    norm : bool, default True
        Pre-LayerNorm on the input.
    residual : bool, default True
        Add the input to the output.
    check_finite : bool, optional
        Reject NaN/Inf inputs in :meth:`forward` (one reduction, a device sync on CUDA).
        Default: only inside :func:`structattn.debug`; the default forward and backward
        never synchronize with the host.

    Notes
    -----
    ``O(T² (s + e) + T d_model e)`` time and ``O(T²)`` memory per batch element.
    The parameters (``to_uv``, ``to_z``, ``gamma``/``beta`` of shape ``(2, s)``,
    ``to_out``, ``rel_bias``, ``norm``) live on the module's device; inputs of shape
    ``(..., T, d_model)`` with any leading dimensions, float32 or float64, on the
    parameters' device and dtype.

    Examples
    --------
    >>> import torch
    >>> from structattn.layers import GAU
    >>> layer = GAU(16, qk_dim=8, causal=True)
    >>> x = torch.randn(2, 10, 16)
    >>> layer(x).shape
    torch.Size([2, 10, 16])
    >>> torch.allclose(layer(x), layer.forward_with_operator(x, layer.dense_operator(x)))
    True
    """

    def __init__(self, d_model: int, *, qk_dim: int = 128, expansion_factor: float = 2.0,
                 causal: bool = False, scale: float | str = "length",
                 rel_pos_bias: int | None = None, norm: bool = True, residual: bool = True,
                 check_finite: bool | None = None) -> None:
        super().__init__(d_model, 2, qk_dim=qk_dim, expansion_factor=expansion_factor,
                         causal=causal, rel_pos_bias=rel_pos_bias, norm=norm,
                         residual=residual, check_finite=check_finite)
        self.scale = check_scale(scale, "scale", ("length",))

    def logit_scale(self, T: int) -> float:
        """The scale applied to ``Q Kᵀ`` for a sequence of length ``T``."""
        return 1.0 / T if self.scale == "length" else float(self.scale)

    def _attention(self, heads: torch.Tensor) -> torch.Tensor:
        q, k = heads[0], heads[1]
        T = q.shape[-2]
        s = (q @ k.transpose(-1, -2)) * self.logit_scale(T)
        bias = self._bias(T)
        if bias is not None:
            s = s + bias
        a = _relu2(s)
        if self.causal:
            keep = torch.ones(T, T, dtype=torch.bool, device=a.device).tril()
            a = torch.where(keep, a, torch.zeros((), dtype=a.dtype, device=a.device))
        return a

    def dense_operator(self, x: torch.Tensor) -> torch.Tensor:
        """The attention matrix ``A = relu²(Q Kᵀ · scale + b)`` (causally masked).

        Parameters
        ----------
        x : torch.Tensor, shape (..., T, d_model)

        Returns
        -------
        torch.Tensor, shape (..., T, T)
        """
        _, _, heads = self.project(x)
        return self._attention(heads)

    attention_matrix = dense_operator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the unit.

        Parameters
        ----------
        x : torch.Tensor, shape (..., T, d_model)

        Returns
        -------
        torch.Tensor, shape (..., T, d_model)
        """
        u, v, heads = self.project(x)
        return self._finish(x, u, self._attention(heads) @ v)

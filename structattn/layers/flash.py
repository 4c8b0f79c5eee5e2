"""FLASH: the gated attention unit with mixed-chunk attention (linear in ``T``).

The sequence is split into ``G = ceil(T / C)`` chunks of ``C`` tokens (the last one
zero-padded).  Four heads are made from the shared ``Z`` (per-dimension scale and
offset): ``Q_quad, K_quad, Q_lin, K_lin``.  For chunk ``g``::

    local   Vq_g = relu²(Q_quad,g K_quad,gᵀ · c_q + b) V_g        (causal: j <= i in chunk)
    global  Vl_g = c_l · Q_lin,g Σ_h K_lin,hᵀ V_h                  (non-causal: all chunks h;
                                                                 causal: h < g only)
    O_g = (U_g ⊙ (Vq_g + Vl_g)) W_o (+ X_g)

The equivalent dense ``T x T`` operator (:meth:`FLASH.dense_operator`) is
``M_ij = relu²(q^quad_i·k^quad_j c_q + b_ij)·[same chunk (and j <= i)] +
c_l q^lin_i·k^lin_j·[chunk(j) < chunk(i)]`` (causal) or ``·[always]`` (non-causal: the
global sum also covers the own chunk).  The output is ``(U ⊙ (M V)) W_o``.

Padded tokens have zero values, so they contribute nothing to either term (the local
product ``A V`` and the state ``Kᵀ V``); their outputs are dropped.
"""

from __future__ import annotations

import math

import torch

from ._common import check_positive_int, check_scale
from .gau import GAU, _GatedUnit, _relu2

__all__ = ["FLASH"]

_QUAD_WORDS = ("chunk",)
_LIN_WORDS = ("chunk", "length")


class FLASH(_GatedUnit):
    """Gated attention unit with mixed-chunk attention (Hua et al., ICML 2022).

    Parameters
    ----------
    d_model : int
        Model width (last dimension of the input).
    chunk_size : int, default 256
        Chunk length ``C >= 1`` (the paper uses ``C >= 128``; lucidrains' default 256).
        ``C = 1`` gives purely linear attention plus a diagonal term, ``C >= T`` the
        quadratic GAU (causal: exactly; non-causal: plus the linear term).
    qk_dim : int, default 128
        Shared query/key size ``s``.
    expansion_factor : float, default 2.0
        ``e = round(expansion_factor · d_model)``.
    causal : bool, default False
    quadratic_scale : float or "chunk", default "chunk"
        ``c_q``: ``"chunk"`` is ``1/C`` (the paper), a float is used as given.
    linear_scale : float or {"chunk", "length"}, default "chunk"
        ``c_l`` multiplying the global linear term: ``"chunk"`` is ``1/C`` (lucidrains'
        causal choice, independent of ``T``), ``"length"`` is ``1/T`` (lucidrains'
        non-causal choice; then every output depends on the total length ``T``), or a
        float (``1.0``: no scaling).  Sources differ, so it is a parameter.
    rel_pos_bias : int, optional
        Learned relative-position bias on the *local* (quadratic) term, offsets clipped
        to ``[-D, D]``; None for no bias.
    norm : bool, default True
        Pre-LayerNorm on the input.
    residual : bool, default True
        Add the input to the output.
    check_finite : bool, optional
        Reject NaN/Inf inputs in :meth:`forward`.  Default: only inside
        :func:`structattn.debug` (a host synchronization).

    Notes
    -----
    Time ``O(T C (s + e) + T s e + T d_model e)``, memory ``O(T C + (T/C) s e)`` per
    batch element: linear in ``T`` for a fixed ``C``.  The causal path needs one
    cumulative sum over the ``T/C`` chunk states; it is causal to the bit: outputs at
    rows ``<= i`` do not change, not even in the last bit, when later tokens change
    (with ``linear_scale="length"`` they still depend on ``T`` itself).

    Examples
    --------
    >>> import torch
    >>> from structattn.layers import FLASH
    >>> layer = FLASH(16, chunk_size=4, qk_dim=8, causal=True).double()
    >>> x = torch.randn(2, 10, 16, dtype=torch.float64)
    >>> y = layer(x)
    >>> torch.allclose(y, layer.forward_with_operator(x, layer.dense_operator(x)))
    True
    """

    def __init__(self, d_model: int, *, chunk_size: int = 256, qk_dim: int = 128,
                 expansion_factor: float = 2.0, causal: bool = False,
                 quadratic_scale: float | str = "chunk", linear_scale: float | str = "chunk",
                 rel_pos_bias: int | None = None, norm: bool = True, residual: bool = True,
                 check_finite: bool | None = None) -> None:
        super().__init__(d_model, 4, qk_dim=qk_dim, expansion_factor=expansion_factor,
                         causal=causal, rel_pos_bias=rel_pos_bias, norm=norm,
                         residual=residual, check_finite=check_finite)
        self.chunk_size = check_positive_int(chunk_size, "chunk_size")
        self.quadratic_scale = check_scale(quadratic_scale, "quadratic_scale", _QUAD_WORDS)
        self.linear_scale = check_scale(linear_scale, "linear_scale", _LIN_WORDS)

    # ----------------------------------------------------------------- scales
    def scales(self, T: int) -> tuple[float, float]:
        """``(c_q, c_l)`` used for a sequence of length ``T``."""
        C = self.chunk_size
        cq = 1.0 / C if self.quadratic_scale == "chunk" else float(self.quadratic_scale)
        if self.linear_scale == "chunk":
            cl = 1.0 / C
        elif self.linear_scale == "length":
            cl = 1.0 / T
        else:
            cl = float(self.linear_scale)
        return cq, cl

    # ------------------------------------------------------------ operators
    def dense_operator(self, x: torch.Tensor) -> torch.Tensor:
        """The dense mixed-chunk operator ``M`` (``O(T²)``; for tests and studies).

        Parameters
        ----------
        x : torch.Tensor, shape (..., T, d_model)

        Returns
        -------
        torch.Tensor, shape (..., T, T)
            ``forward(x) == forward_with_operator(x, M)`` up to rounding.
        """
        _, _, heads = self.project(x)
        qq, kq, ql, kl = heads
        T = x.shape[-2]
        cq, cl = self.scales(T)
        i = torch.arange(T, device=x.device)
        chunk = i // self.chunk_size
        same = chunk[:, None] == chunk[None, :]
        if self.causal:
            same = same & (i[None, :] <= i[:, None])
            lin_keep = chunk[None, :] < chunk[:, None]
        else:
            lin_keep = torch.ones(T, T, dtype=torch.bool, device=x.device)
        s = (qq @ kq.transpose(-1, -2)) * cq
        bias = self._bias(T)
        if bias is not None:
            s = s + bias
        zero = torch.zeros((), dtype=s.dtype, device=s.device)
        local = torch.where(same, _relu2(s), zero)
        lin = torch.where(lin_keep, (ql @ kl.transpose(-1, -2)) * cl, zero)
        return local + lin

    attention_matrix = dense_operator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the unit with mixed-chunk attention (linear in ``T``).

        Parameters
        ----------
        x : torch.Tensor, shape (..., T, d_model)

        Returns
        -------
        torch.Tensor, shape (..., T, d_model)
        """
        u, v, heads = self.project(x)
        lead, T = x.shape[:-2], x.shape[-2]
        C = min(self.chunk_size, T)  # one chunk either way when T <= chunk_size
        G = math.ceil(T / C)
        pad = G * C - T
        cq, cl = self.scales(T)
        e, s = v.shape[-1], heads.shape[-1]
        v = v.reshape(-1, T, e)
        heads = heads.reshape(4, -1, T, s)
        if pad:  # zero values: padded keys contribute to neither term
            v = torch.nn.functional.pad(v, (0, 0, 0, pad))
            heads = torch.nn.functional.pad(heads, (0, 0, 0, pad))
        B = v.shape[0]
        v = v.reshape(B, G, C, e)
        qq, kq, ql, kl = heads.reshape(4, B, G, C, s)

        # local quadratic term, one C x C block per chunk
        logits = (qq @ kq.transpose(-1, -2)) * cq
        if self.rel_bias is not None:
            logits = logits + self._bias(C)
        a = _relu2(logits)
        if self.causal:
            keep = torch.ones(C, C, dtype=torch.bool, device=a.device).tril()
            a = torch.where(keep, a, torch.zeros((), dtype=a.dtype, device=a.device))
        out = a @ v

        # global linear term over chunks; the chunk states and their prefix sums are
        # accumulated in float32 for float16/bfloat16 inputs
        acc = torch.float32 if v.dtype in (torch.float16, torch.bfloat16) else v.dtype
        kv = kl.to(acc).transpose(-1, -2) @ v.to(acc)  # (B, G, s, e): one state per chunk
        if self.causal:  # exclusive prefix sum over chunks
            state = torch.cumsum(kv, dim=1)
            state = torch.cat([torch.zeros_like(state[:, :1]), state[:, :-1]], dim=1)
        else:
            state = kv.sum(dim=1, keepdim=True)
        out = out + ((ql.to(acc) @ state) * cl).to(out.dtype)

        out = out.reshape(B, G * C, e)[:, :T].reshape(*lead, T, e)
        return self._finish(x, u, out)

    # ------------------------------------------------------------------ misc
    def quadratic_gau(self) -> GAU:
        """A :class:`GAU` with this layer's projections and *quadratic* heads.

        Its scale is ``c_q`` as a number, so for ``T <= C`` and ``causal=True``
        ``FLASH(x) == GAU(x)`` up to rounding (the linear term vanishes).

        Returns
        -------
        GAU
            On this module's device and dtype, with copies of the parameters.
        """
        cq = 1.0 / self.chunk_size if self.quadratic_scale == "chunk" else self.quadratic_scale
        gau = GAU(self.d_model, qk_dim=self.qk_dim,
                  expansion_factor=self.hidden_dim / self.d_model, causal=self.causal,
                  scale=cq, rel_pos_bias=self.rel_pos_bias,
                  norm=not isinstance(self.norm, torch.nn.Identity), residual=self.residual,
                  check_finite=self.check_finite)
        p = self.gamma
        gau = gau.to(device=p.device, dtype=p.dtype)
        state = {k: val.detach().clone() for k, val in self.state_dict().items()}
        state["gamma"], state["beta"] = state["gamma"][:2], state["beta"][:2]
        gau.load_state_dict(state)
        return gau

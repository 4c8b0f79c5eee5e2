"""TinyViT: a small vision transformer whose attention is any structattn operator.

The model (pre-LayerNorm ViT)::

    tokens = [CLS]? + PatchEmbed(image) + pos         (B, L, dim),  L = n_prefix + g_h·g_w
    for l in range(depth):
        q, k, v = split_heads(LN(tokens) W_{q,k,v})      (B, H, L, d_h)
        O_h     = attention(q, k, v)_h                   (B, H, L, d_h)
        tokens += merge(ξ[l, h] · O_h) W_o               ξ: per-head gates, default 1
        tokens += MLP(LN(tokens))
    logits = Linear(LN(pool(tokens)))                    pool: CLS token or token mean

``attention`` is an *operator object* (duck-typed: ``op(q, k, v) -> (..., L, d_v)`` and
``op.matrix(q, k) -> (..., L, L)``, the dense map the operator implies), one shared by
every layer or a sequence of ``depth`` of them.  Every structattn attention qualifies:

* :class:`~structattn.SoftmaxAttention` (exact softmax; the default);
* :class:`~structattn.FeatureMapAttention` — Performer / RFA / any feature map, with any
  :class:`~structattn.masks.Mask` over the tokens, e.g. a
  :class:`~structattn.masks.GridRPE` on the patch grid (``num_special`` = number of
  prefix tokens) or a :class:`~structattn.masks.Ripple` (no special tokens: use
  ``pool="mean"``);
* :class:`~structattn.mra.MRAAttention` (MRA-2 / MRA-2-s);
* sparse softmax on a graph, e.g. ``structattn.studies.graphs.SparseGraphAttention``
  with :func:`structattn.graphs.hypercube`;
* anything else with that interface (LARA-style estimators, eigen attention, …).

FLASH / GAU are whole *units* (their own projections and gating), not operators on
``(q, k, v)``: pass a :class:`GatedUnitSpec` instead; each layer's attention sub-block
is then a :class:`~structattn.layers.FLASH` or :class:`~structattn.layers.GAU` (with
``norm=False, residual=False``: the block supplies both), which counts as **one head**.

Examples
--------
>>> import torch
>>> from structattn import FeatureMapAttention, PositiveRandomFeatures
>>> from structattn.layers.tiny_vit import TinyViT
>>> model = TinyViT(8, 2, 16, 2, 2, 10)              # exact softmax, 16 patches + CLS
>>> x = torch.rand(3, 1, 8, 8)
>>> logits, maps = model(x, return_attention=True)
>>> logits.shape, len(maps), maps[0].shape
(torch.Size([3, 10]), 2, torch.Size([3, 2, 17, 17]))
>>> model.set_attention(FeatureMapAttention(PositiveRandomFeatures(8, 32, seed=0)))
>>> model(x).shape                                      # same weights, Performer attention
torch.Size([3, 10])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from .._debug import resolve_check_finite
from ..attention import SoftmaxAttention
from ._common import check_choice, check_input, check_positive_float, check_positive_int
from .flash import FLASH
from .gau import GAU
from .kernel_attention import MultiHeadProjection

__all__ = ["GatedUnitSpec", "LayerTrace", "TinyViT"]


@dataclasses.dataclass(frozen=True)
class GatedUnitSpec:
    """Use a FLASH or GAU unit as each layer's attention sub-block of a :class:`TinyViT`.

    Parameters
    ----------
    kind : {"flash", "gau"}, default "flash"
    chunk_size : int, default 8
        FLASH chunk length ``C`` (ignored for GAU).
    qk_dim : int, default 16
        Shared query/key size ``s``.
    expansion_factor : float, default 2.0
        Hidden size ``e = round(expansion_factor · dim)``.
    scale : float or str, optional
        FLASH: ``quadratic_scale`` (default ``"chunk"``); GAU: ``scale`` (default
        ``"length"``).
    linear_scale : float or str, default "chunk"
        FLASH only (see :class:`~structattn.layers.FLASH`).
    """

    kind: str = "flash"
    chunk_size: int = 8
    qk_dim: int = 16
    expansion_factor: float = 2.0
    scale: float | str | None = None
    linear_scale: float | str = "chunk"

    def __post_init__(self) -> None:
        check_choice(self.kind, "kind", ("flash", "gau"))
        check_positive_int(self.chunk_size, "chunk_size")
        check_positive_int(self.qk_dim, "qk_dim")
        check_positive_float(self.expansion_factor, "expansion_factor")

    def build(self, dim: int) -> FLASH | GAU:
        """A fresh unit of width ``dim`` (random weights; ``norm=False, residual=False``)."""
        kw = {"qk_dim": self.qk_dim, "expansion_factor": self.expansion_factor,
              "norm": False, "residual": False, "check_finite": False}
        if self.kind == "flash":
            return FLASH(dim, chunk_size=self.chunk_size, linear_scale=self.linear_scale,
                         quadratic_scale="chunk" if self.scale is None else self.scale, **kw)
        return GAU(dim, scale="length" if self.scale is None else self.scale, **kw)


class LayerTrace(NamedTuple):
    """What one layer's attention saw and produced (see :meth:`TinyViT.trace`).

    Attributes
    ----------
    q, k, v : torch.Tensor, shape (B, H, L, d_h), or None
        The attention inputs (None for a FLASH/GAU layer).
    head_out : torch.Tensor, shape (B, H, L, d_h)
        Per-head outputs *before* the gate (FLASH/GAU: the unit's output, shape
        ``(B, 1, L, dim)``); part of the autograd graph, so
        ``∂loss/∂head_out`` gives head importances
        (:func:`structattn.analysis.head_gate_importance`).
    attention : torch.Tensor, shape (B, H, L, L), or None
        The dense maps (only when requested).
    """

    q: torch.Tensor | None
    k: torch.Tensor | None
    v: torch.Tensor | None
    head_out: torch.Tensor
    attention: torch.Tensor | None


def _check_operator(op: Any, name: str) -> None:
    if isinstance(op, GatedUnitSpec):
        return
    if not callable(op) or not callable(getattr(op, "matrix", None)):
        raise TypeError(
            f"{name} must be an attention operator with __call__(q, k, v) and "
            f"matrix(q, k) (e.g. SoftmaxAttention(), FeatureMapAttention(...), "
            f"MRAAttention(...)) or a GatedUnitSpec; got {type(op).__name__}"
        )


class _Block(nn.Module):
    """One pre-LN transformer block; its attention operator is set from outside."""

    def __init__(self, dim: int, heads: int, head_dim: int, mlp_dim: int,
                 attention: Any) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))
        self.dim, self.heads, self.head_dim = dim, heads, head_dim
        self.proj: MultiHeadProjection | None = None
        self.unit: FLASH | GAU | None = None
        self.operator: Any = None
        self.set_attention(attention)

    def set_attention(self, attention: Any) -> None:
        like = next(self.parameters())
        if isinstance(attention, GatedUnitSpec):
            unit = attention.build(self.dim).to(device=like.device, dtype=like.dtype)
            if self.unit is not None:  # keep the trained weights when shapes agree
                try:
                    unit.load_state_dict(self.unit.state_dict())
                except RuntimeError as exc:
                    raise ValueError(
                        f"cannot swap to {attention}: its parameters do not match the "
                        f"trained unit's ({exc})"
                    ) from None
            elif self.proj is not None:
                raise ValueError("cannot swap a (q, k, v) attention for a FLASH/GAU unit: "
                                 "their weights differ; build a new TinyViT instead")
            self.unit, self.operator = unit, attention
        else:
            if self.unit is not None:
                raise ValueError("cannot swap a FLASH/GAU unit for a (q, k, v) attention: "
                                 "their weights differ; build a new TinyViT instead")
            fmap = getattr(attention, "feature_map", None)
            fdim = getattr(fmap, "dim", None)
            if fdim is not None and fdim != self.head_dim:
                raise ValueError(f"attention.feature_map.dim ({fdim}) must equal the head "
                                 f"size head_dim = {self.head_dim}")
            if self.proj is None:
                self.proj = MultiHeadProjection(self.dim, self.heads, head_dim=self.head_dim)
                self.proj.to(device=like.device, dtype=like.dtype)
            self.operator = attention

    @property
    def gate_heads(self) -> int:
        return 1 if self.unit is not None else self.heads

    def forward(self, x: torch.Tensor, gate: torch.Tensor, *, maps: bool, dense: bool
                ) -> tuple[torch.Tensor, LayerTrace]:
        h = self.norm1(x)
        if self.unit is not None:
            A = self.unit.dense_operator(h) if (maps or dense) else None
            y = self.unit.forward_with_operator(h, A) if dense else self.unit(h)
            y = y[..., None, :, :]  # (B, 1, L, dim)
            out = (y * gate).squeeze(-3)
            trace = LayerTrace(None, None, None, y, A[..., None, :, :] if maps else None)
        else:
            q, k, v = self.proj.project(h)
            A = self.operator.matrix(q, k) if (maps or dense) else None
            y = A @ v if dense else self.operator(q, k, v)
            out = self.proj.merge(y * gate)
            trace = LayerTrace(q, k, v, y, A if maps else None)
        x = x + out
        return x + self.mlp(self.norm2(x)), trace


class TinyViT(nn.Module):
    """A small vision transformer that runs any structattn attention (module docstring).

    Parameters
    ----------
    image_size : int or (int, int)
        Input height and width; each divisible by ``patch_size``.
    patch_size : int
        Side of the square patches; the patch grid is ``g_h x g_w``.
    dim : int
        Token width.
    depth : int
        Number of blocks.
    heads : int
        Attention heads per block (``head_dim`` defaults to ``dim // heads``).
    num_classes : int
        Size of the logits.
    attention : operator, sequence of operators, or GatedUnitSpec, optional
        Default :class:`~structattn.SoftmaxAttention` (exact, scale ``head_dim**-0.5``).
        One object (shared by all layers) or ``depth`` objects.  See the module docs.
    channels : int, default 1
    mlp_ratio : float, default 2.0
        MLP hidden size ``round(mlp_ratio · dim)``.
    pool : {"cls", "mean"}, default "cls"
        ``"cls"``: one prefix (CLS) token whose output feeds the classifier;
        ``"mean"``: no prefix token, the classifier sees the mean of the patch tokens
        (use it for masks without special tokens, e.g. :class:`~structattn.masks.Ripple`).
    head_dim : int, optional
    attention_parameters : iterable of torch.nn.Parameter, optional
        Parameters used inside the attention operators that should be trained (e.g.
        ``coeffs = nn.Parameter(torch.zeros(2g_h - 1, 2g_w - 1))`` of a learnable
        ``GridRPE(grid, coeffs, log=True)``); they are kept in
        :attr:`attention_parameters` so ``model.parameters()`` (and optimizers) see them.
    check_finite : bool or None, default None
        Reject NaN/Inf images.  None: only inside :func:`structattn.debug` (a check on a
        tensor synchronizes with the host, so the default forward never does).

    Attributes
    ----------
    head_gate : torch.Tensor, shape (depth, gate_heads)
        Per-head gates ``ξ`` (a buffer, not trained; ones by default).  The gate
        multiplies each head's output before the output projection.  ``gate_heads`` is
        ``heads``, or 1 for FLASH/GAU units (the gate then scales the unit's output).
    grid_shape : (int, int)
        Patch grid ``(g_h, g_w)``; tokens are ``num_prefix_tokens`` prefix tokens
        followed by the grid in row-major order.
    num_prefix_tokens : int
        1 for ``pool="cls"``, 0 for ``pool="mean"``.
    seq_len : int
        ``L = num_prefix_tokens + g_h·g_w``.
    mask_token : torch.nn.Parameter, shape (dim,)
        Replaces masked patch embeddings (``patch_mask`` of :meth:`forward_tokens`, for
        masked-patch self-supervision).

    Notes
    -----
    Cost per image: ``O(L·dim²)`` for projections and MLPs plus the operator's cost per
    head.  ``return_attention=True`` or ``dense=True`` additionally builds the dense
    ``(B, H, L, L)`` maps with ``operator.matrix(q, k)`` (``O(L²)`` per head); gradients
    flow through them (attention distillation).  With ``dense=True`` each layer applies
    its dense map, ``P @ v``, instead of the fast operator: the dense-reference model
    that the fast one must match.  Gradient head importance: call :meth:`forward` with a
    ``head_gate`` tensor that requires grad (``torch.ones(B, depth, heads,
    requires_grad=True)`` for per-example gradients) and differentiate the summed loss
    w.r.t. it, or use :func:`structattn.analysis.head_importance`.

    Operator-level error on the model's own inputs::

        for q, k, v in model.attention_inputs(x):    # (B, H, L, head_dim) each
            err = (op(q, k, v) - SoftmaxAttention()(q, k, v)).norm()
    """

    def __init__(self, image_size: int | tuple[int, int], patch_size: int, dim: int,
                 depth: int, heads: int, num_classes: int, attention: Any = None, *,
                 channels: int = 1, mlp_ratio: float = 2.0, pool: str = "cls",
                 head_dim: int | None = None,
                 attention_parameters: Iterable[nn.Parameter] = (),
                 check_finite: bool | None = None) -> None:
        super().__init__()
        if isinstance(image_size, (tuple, list)):
            if len(image_size) != 2:
                raise ValueError(f"image_size must be an int or (height, width), got "
                                 f"{image_size!r}")
            hw = tuple(check_positive_int(s, "image_size") for s in image_size)
        else:
            hw = (check_positive_int(image_size, "image_size"),) * 2
        self.patch_size = check_positive_int(patch_size, "patch_size")
        if any(s % self.patch_size for s in hw):
            raise ValueError(f"patch_size ({patch_size}) must divide image_size {hw}")
        self.image_size = hw
        self.dim = check_positive_int(dim, "dim")
        self.depth = check_positive_int(depth, "depth")
        self.heads = check_positive_int(heads, "heads")
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.channels = check_positive_int(channels, "channels")
        self.pool = check_choice(pool, "pool", ("cls", "mean"))
        if head_dim is None:
            if self.dim % self.heads:
                raise ValueError(f"heads ({heads}) must divide dim ({dim}) unless head_dim "
                                 f"is given")
            head_dim = self.dim // self.heads
        self.head_dim = check_positive_int(head_dim, "head_dim")
        mlp_dim = max(1, round(check_positive_float(mlp_ratio, "mlp_ratio") * self.dim))
        if check_finite is not None and not isinstance(check_finite, bool):
            raise TypeError(f"check_finite must be a bool or None, got {check_finite!r}")
        self.check_finite = check_finite
        self.grid_shape = (hw[0] // self.patch_size, hw[1] // self.patch_size)
        self.num_patches = self.grid_shape[0] * self.grid_shape[1]
        self.num_prefix_tokens = 1 if self.pool == "cls" else 0
        self.seq_len = self.num_prefix_tokens + self.num_patches

        self.patch_embed = nn.Linear(self.channels * self.patch_size**2, self.dim)
        self.cls_token = nn.Parameter(torch.zeros(self.num_prefix_tokens, self.dim))
        self.mask_token = nn.Parameter(torch.zeros(self.dim))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(self.seq_len, self.dim))
        ops = self._operators(SoftmaxAttention() if attention is None else attention)
        self.blocks = nn.ModuleList(
            _Block(self.dim, self.heads, self.head_dim, mlp_dim, op) for op in ops
        )
        self.norm = nn.LayerNorm(self.dim)
        self.head = nn.Linear(self.dim, self.num_classes)
        extra = list(attention_parameters)
        for i, p in enumerate(extra):
            if not isinstance(p, nn.Parameter):
                raise TypeError(
                    f"attention_parameters[{i}] must be a torch.nn.Parameter (build the mask "
                    f"from the Parameter itself so that it receives gradients), got "
                    f"{type(p).__name__}"
                )
        self.attention_parameters = nn.ParameterList(extra)
        self.register_buffer("head_gate", torch.ones(self.depth, self.gate_heads),
                             persistent=False)

    # ------------------------------------------------------------------ attention
    def _operators(self, attention: Any) -> list[Any]:
        if isinstance(attention, Sequence) and not isinstance(attention, str):
            ops = list(attention)
            if len(ops) != self.depth:
                raise ValueError(f"attention must be one operator or a sequence of depth = "
                                 f"{self.depth} operators, got {len(ops)}")
        else:
            ops = [attention] * self.depth
        for i, op in enumerate(ops):
            _check_operator(op, "attention" if len(set(map(id, ops))) == 1
                            else f"attention[{i}]")
        if len({isinstance(op, GatedUnitSpec) for op in ops}) > 1:
            raise ValueError("attention must not mix GatedUnitSpec and (q, k, v) operators")
        return ops

    @property
    def attention(self) -> list[Any]:
        """The attention operator of each layer (a list of ``depth`` objects)."""
        return [b.operator for b in self.blocks]

    @property
    def gate_heads(self) -> int:
        """Gated heads per layer: ``heads``, or 1 for FLASH/GAU units."""
        return self.blocks[0].gate_heads

    def set_attention(self, attention: Any) -> None:
        """Swap every layer's attention, keeping all trained weights.

        Parameters
        ----------
        attention : operator, sequence of ``depth`` operators, or GatedUnitSpec
            Any (q, k, v) operator may replace any other (e.g. Performer or MRA into a
            model trained with exact softmax); a GatedUnitSpec may replace another one
            with the same parameter shapes.  Swapping between the two kinds raises
            ValueError (their weights differ).
        """
        for block, op in zip(self.blocks, self._operators(attention), strict=True):
            block.set_attention(op)

    # --------------------------------------------------------------------- forward
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> patches ``(B, g_h·g_w, C·p²)`` (row-major grid)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        want = (self.channels, *self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"x must have shape (B, {want[0]}, {want[1]}, {want[2]}), got "
                             f"{tuple(x.shape)}")
        p = self.patch_size
        B, C = x.shape[:2]
        gh, gw = self.grid_shape
        x = x.reshape(B, C, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(B, gh * gw, C * p * p)

    def _gate(self, head_gate: torch.Tensor | None, batch: int) -> torch.Tensor:
        if head_gate is None:
            return self.head_gate
        want = (self.depth, self.gate_heads)
        if (not isinstance(head_gate, torch.Tensor) or head_gate.ndim not in (2, 3)
                or tuple(head_gate.shape[-2:]) != want
                or (head_gate.ndim == 3 and head_gate.shape[0] != batch)):
            got = (tuple(head_gate.shape) if isinstance(head_gate, torch.Tensor)
                   else type(head_gate).__name__)
            raise ValueError(f"head_gate must be a tensor of shape (depth, gate_heads) = "
                             f"{want} or (B, depth, gate_heads) = {(batch, *want)}, got {got}")
        return head_gate

    def trace(self, x: torch.Tensor, *, head_gate: torch.Tensor | None = None,
              patch_mask: torch.Tensor | None = None, return_attention: bool = False,
              dense: bool = False) -> tuple[torch.Tensor, list[LayerTrace]]:
        """Final (normed) tokens and each layer's :class:`LayerTrace`.

        Parameters
        ----------
        x : torch.Tensor, shape (B, channels, H, W)
        head_gate : torch.Tensor, shape (depth, gate_heads) or (B, depth, gate_heads)
            Overrides the :attr:`head_gate` buffer; the batched form gives every image
            its own gates (per-example gate gradients in one backward pass).
        patch_mask : bool tensor, shape (B, g_h·g_w), optional
            True replaces that patch's embedding by :attr:`mask_token`.
        return_attention : bool
            Fill ``LayerTrace.attention`` with the dense maps.
        dense : bool
            Apply the dense maps instead of the fast operators.

        Returns
        -------
        tokens : torch.Tensor, shape (B, L, dim)
        traces : list of LayerTrace, one per layer
        """
        patches = self.patchify(x)
        p = next(self.parameters())
        if x.dtype != p.dtype or x.device != p.device:
            raise TypeError(f"x ({x.dtype}, {x.device}) must have the dtype and device of "
                            f"the model's parameters ({p.dtype}, {p.device}); call "
                            f"model.to(x.dtype) first")
        check_input(patches, "x", patches.shape[-1],
                    check_finite=resolve_check_finite(self.check_finite, patches))
        gate = self._gate(head_gate, patches.shape[0])
        t = self.patch_embed(patches)
        if patch_mask is not None:
            if (not isinstance(patch_mask, torch.Tensor) or patch_mask.dtype != torch.bool
                    or tuple(patch_mask.shape) != tuple(t.shape[:2])):
                raise ValueError(f"patch_mask must be a bool tensor of shape "
                                 f"{tuple(t.shape[:2])}, got {patch_mask!r:.80}")
            t = torch.where(patch_mask[..., None], self.mask_token.to(t.dtype), t)
        if self.num_prefix_tokens:
            t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        t = t + self.pos_embed
        traces = []
        for i, block in enumerate(self.blocks):
            t, tr = block(t, gate[..., i, :, None, None], maps=return_attention, dense=dense)
            traces.append(tr)
        return self.norm(t), traces

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """Classifier input from final tokens: the CLS token or the token mean."""
        return tokens[:, 0] if self.num_prefix_tokens else tokens.mean(dim=1)

    def forward(self, x: torch.Tensor, *, head_gate: torch.Tensor | None = None,
                return_attention: bool = False, dense: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits, and optionally the attention maps of every layer.

        Parameters
        ----------
        x : torch.Tensor, shape (B, channels, H, W)
            Images, on the model's dtype and device.
        head_gate : torch.Tensor, shape (depth, gate_heads) or (B, depth, gate_heads)
            Gates ``ξ`` for this call (default: the :attr:`head_gate` buffer); batched:
            one set per image.
        return_attention : bool, default False
            Also return the maps.
        dense : bool, default False
            Use each operator's dense map ``P @ v`` (the reference computation).

        Returns
        -------
        logits : torch.Tensor, shape (B, num_classes)
        maps : list of torch.Tensor, each (B, gate_heads, L, L)
            Only with ``return_attention=True``: for layer ``l``, ``operator.matrix(q,
            k)`` — row-stochastic for softmax, kernel, MRA and sparse attention; the
            un-normalized relu² + linear operator for FLASH/GAU.
        """
        tokens, traces = self.trace(x, head_gate=head_gate,
                                    return_attention=return_attention, dense=dense)
        logits = self.head(self.pooled(tokens))
        if return_attention:
            return logits, [tr.attention for tr in traces]
        return logits

    def forward_tokens(self, x: torch.Tensor, *, patch_mask: torch.Tensor | None = None,
                       head_gate: torch.Tensor | None = None) -> torch.Tensor:
        """Final normed tokens ``(B, L, dim)`` (e.g. for masked-patch reconstruction)."""
        return self.trace(x, head_gate=head_gate, patch_mask=patch_mask)[0]

    @torch.no_grad()
    def attention_inputs(self, x: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        """Each layer's ``(q, k, v)``, each ``(B, H, L, head_dim)``, without gradients.

        Computed with the model's current attention: use them to measure another
        operator's error on this model's own attention inputs, e.g.
        ``op(q, k, v)`` vs ``SoftmaxAttention()(q, k, v)``.
        """
        if self.blocks[0].unit is not None:
            raise ValueError("a FLASH/GAU TinyViT has no (q, k, v) attention inputs")
        return [(tr.q, tr.k, tr.v) for tr in self.trace(x)[1]]

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each layer's dense maps ``(B, gate_heads, L, L)``, without gradients."""
        return self(x, return_attention=True)[1]

    def extra_repr(self) -> str:
        return (f"image_size={self.image_size}, patch_size={self.patch_size}, "
                f"grid={self.grid_shape}, pool={self.pool!r}, heads={self.heads}, "
                f"head_dim={self.head_dim}, attention={type(self.attention[0]).__name__}")

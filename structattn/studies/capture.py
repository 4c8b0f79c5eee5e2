"""Capture the queries, keys and values of a torch model's attention.

:func:`capture` runs a model once under a :class:`torch.overrides.TorchFunctionMode` that
sees every call of

* :func:`torch.nn.functional.scaled_dot_product_attention` (SDPA) — ``q``, ``k``, ``v``,
  ``attn_mask``, ``is_causal``, ``scale`` and ``enable_gqa`` as passed;
* :func:`torch.nn.functional.multi_head_attention_forward` — what every
  ``nn.MultiheadAttention`` (and so ``nn.TransformerEncoderLayer`` /
  ``DecoderLayer``) runs.  Its internal SDPA call is not visible to a mode (the mode is
  off inside the function it intercepts), so ``q``, ``k``, ``v`` are projected here from
  the call's own weights, exactly as the function does (packed or separate projection
  weights, biases, ``bias_k``/``bias_v``, ``add_zero_attn``, ``static_k``/``static_v``).
  An active torch-function mode also turns off the fused fast paths of
  ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` (torch checks
  ``has_torch_function``), so every such module reaches this function; the model's
  outputs are unchanged;
* :func:`structattn.attention.softmax_attention` on torch tensors, as called by
  :class:`structattn.SoftmaxAttention` (what :class:`~structattn.layers.TinyViT` runs by
  default; it computes softmax with matmuls, not SDPA, so no torch function would show
  it): the module global is wrapped for the duration of the run (``structattn=True``).

Masks are converted to the library's convention (boolean, True = attend):
SDPA's boolean ``attn_mask`` is already so; an additive float mask (SDPA's, or the ones
``nn.MultiheadAttention`` builds) attends where it is 0 and is masked where it is
``<= -1e4`` (``-inf``, ``finfo.min``, ``-1e9``: ``exp`` underflows to 0); other values
are a bias, not a mask, and such a call is not stored (listed in ``record.dropped``).
``nn.MultiheadAttention``'s ``key_padding_mask`` and boolean ``attn_mask`` mean True =
*masked* and are inverted.  A mask that equals the causal mask is stored as
``causal=True`` and no mask; an all-True mask as no mask.
"""

from __future__ import annotations

import fnmatch
import inspect
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from .attention_record import AttentionCall, AttentionRecord, load_record

__all__ = ["AttentionCall", "AttentionRecord", "capture", "load_record"]

#: Additive mask values at or below this are "masked" (exp underflows to 0 in float32).
MASKED_BELOW = -1e4


def _torch():
    import torch

    return torch


def _to_bool_mask(mask: Any, name: str) -> Any:
    """Torch boolean mask (True = attend) from SDPA's ``attn_mask``; None for a bias."""
    torch = _torch()
    if mask.dtype == torch.bool:
        return mask
    attend = mask == 0
    masked = mask <= MASKED_BELOW
    if not bool(torch.all(attend | masked)):
        return None
    return attend


def _four_d(x: Any) -> Any:
    if x.dim() == 2:
        return x[None, None]
    if x.dim() == 3:
        return x[None]
    return x.reshape(-1, *x.shape[-3:])


def _normalized(q, k, v, mask, causal: bool) -> tuple[Any, Any, Any, Any, bool]:
    """4-D q, k, v (GQA keys repeated), 4-D boolean mask or None, causal flag."""
    torch = _torch()
    lead = q.shape[:-2]
    Lq, Lk = q.shape[-2], k.shape[-2]
    if mask is not None:
        mask = _four_d(torch.broadcast_to(mask, (*lead, Lq, Lk)))
    q, k, v = _four_d(q), _four_d(k), _four_d(v)
    if k.shape[1] != q.shape[1]:  # grouped-query attention
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    if mask is not None:
        if bool(torch.all(mask)):
            mask = None
        else:
            tril = torch.ones(Lq, Lk, dtype=torch.bool, device=mask.device).tril()
            if not causal and bool(torch.all(mask == tril)):
                mask, causal = None, True
            elif bool(torch.all(mask == mask[:, :1])):
                mask = mask[:, :1]
    return q, k, v, mask, causal


def _mha_qkv(bound: dict[str, Any]) -> tuple[Any, Any, Any, Any, bool, float]:
    """``q, k, v`` (B, H, L, hd), attend mask (or None), causal, scale of one
    ``multi_head_attention_forward`` call, projected as torch does."""
    torch = _torch()
    query, key, value = bound["query"], bound["key"], bound["value"]
    H = int(bound["num_heads"])
    unbatched = query.dim() == 2
    if unbatched:
        query, key, value = query[:, None], key[:, None], value[:, None]
    Lq, B, E = query.shape
    hd = E // H
    w, b = bound["in_proj_weight"], bound["in_proj_bias"]
    if bound["use_separate_proj_weight"]:
        ws = (bound["q_proj_weight"], bound["k_proj_weight"], bound["v_proj_weight"])
    else:
        ws = w.chunk(3)
    bs = (None, None, None) if b is None else b.chunk(3)
    q, k, v = (torch.nn.functional.linear(x, wi, bi)
               for x, wi, bi in zip((query, key, value), ws, bs, strict=True))
    kpm, attn = bound["key_padding_mask"], bound["attn_mask"]

    def attend(m: Any) -> Any:  # MHA masks: bool True = masked, float additive
        if m is None:
            return None
        if m.dtype == torch.bool:
            return ~m
        out = _to_bool_mask(m, "attn_mask")
        if out is None:
            raise ValueError("an additive attention bias (not a mask)")
        return out

    kpm, attn = attend(kpm), attend(attn)
    if unbatched and kpm is not None:
        kpm = kpm[None]
    if bound["bias_k"] is not None and bound["bias_v"] is not None:
        k = torch.cat([k, bound["bias_k"].repeat(1, B, 1)])
        v = torch.cat([v, bound["bias_v"].repeat(1, B, 1)])
        attn = None if attn is None else torch.nn.functional.pad(attn, (0, 1), value=True)
        kpm = None if kpm is None else torch.nn.functional.pad(kpm, (0, 1), value=True)
    q = q.reshape(Lq, B * H, hd).transpose(0, 1)
    k = k.reshape(k.shape[0], B * H, hd).transpose(0, 1)
    v = v.reshape(v.shape[0], B * H, hd).transpose(0, 1)
    if bound["static_k"] is not None:
        k = bound["static_k"]
    if bound["static_v"] is not None:
        v = bound["static_v"]
    if bound["add_zero_attn"]:
        k = torch.cat([k, k.new_zeros(B * H, 1, hd)], dim=1)
        v = torch.cat([v, v.new_zeros(B * H, 1, hd)], dim=1)
        attn = None if attn is None else torch.nn.functional.pad(attn, (0, 1), value=True)
        kpm = None if kpm is None else torch.nn.functional.pad(kpm, (0, 1), value=True)
    Lk = k.shape[1]
    q, k, v = (x.reshape(B, H, x.shape[1], hd) for x in (q, k, v))
    mask = None
    if attn is not None:
        mask = attn.reshape(B, H, Lq, Lk) if attn.dim() == 3 else attn[None, None]
        mask = mask.expand(B, -1, Lq, Lk)
    if kpm is not None:
        kp = kpm[:, None, None, :]
        mask = kp.expand(B, 1, Lq, Lk) if mask is None else mask & kp
    causal = bool(bound["is_causal"]) and mask is None
    return q, k, v, mask, causal, hd ** -0.5


def _structattn_call(state: _Capture, original: Any) -> Any:
    """A wrapper of ``structattn.attention.softmax_attention`` that records torch calls."""
    def wrapped(q: Any, k: Any, v: Any, **kw: Any) -> Any:
        torch = _torch()
        if isinstance(q, torch.Tensor) and not state.inside:
            state.inside = True  # calls nested in this one are not separate calls
            try:
                state.record("structattn", (q, k, v), kw)
            finally:
                state.inside = False
        return original(q, k, v, **kw)

    return wrapped


class _Capture:
    """The torch-function mode and module hooks of one :func:`capture` run."""

    def __init__(self, layers: Any, heads: Any, max_bytes: int | None, dtype: Any) -> None:
        torch = _torch()
        F = torch.nn.functional
        self.sdpa, self.mha = F.scaled_dot_product_attention, F.multi_head_attention_forward
        self.sdpa_sig = inspect.signature(lambda query, key, value, attn_mask=None,
                                          dropout_p=0.0, is_causal=False, scale=None,
                                          enable_gqa=False: None)
        self.mha_sig = inspect.signature(self.mha)
        self.layers, self.heads, self.max_bytes, self.dtype = layers, heads, max_bytes, dtype
        self.stack: list[str] = []
        self.calls: list[AttentionCall] = []
        self.dropped: list[dict[str, Any]] = []
        self.count = 0
        self.stored = 0
        self.inside = False
        outer = self

        class Mode(torch.overrides.TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if func is outer.sdpa or func is outer.mha:
                    outer.record(func, args, kwargs)
                return func(*args, **kwargs)

        self.mode = Mode()

    def push(self, name: str):
        def hook(module: Any, args: Any) -> None:
            self.stack.append(name)
        return hook

    def pop(self, module: Any, args: Any, output: Any) -> None:
        if self.stack:
            self.stack.pop()

    def selected(self, index: int, name: str) -> bool:
        if self.layers is None:
            return True
        return any(index == s if isinstance(s, int) else fnmatch.fnmatchcase(name, s)
                   for s in self.layers)

    def record(self, func: Any, args: tuple, kwargs: dict) -> None:
        torch = _torch()
        index, self.count = self.count, self.count + 1
        name = self.stack[-1] if self.stack else "(model)"
        if not self.selected(index, name):
            return
        with torch.no_grad():
            if func is self.sdpa or func == "structattn":
                if func == "structattn":
                    q, k, v = args
                    b = {"attn_mask": kwargs.get("mask"), "scale": kwargs.get("scale"),
                         "is_causal": kwargs.get("causal", False)}
                    mask = b["attn_mask"]
                    if mask is not None:  # a structattn Mask: dense 0/1 weights
                        dense = mask.to_dense(like=q) if hasattr(mask, "to_dense") else mask
                        dense = torch.as_tensor(dense)
                        if not bool(torch.all((dense == 0) | (dense == 1))):
                            self.dropped.append({"index": index, "name": name, "reason":
                                                 "weighted structattn mask (not 0/1)"})
                            return
                        b["attn_mask"] = dense != 0
                    source = "structattn.softmax_attention"
                else:
                    b = self.sdpa_sig.bind(*args, **kwargs).arguments
                    q, k, v = b["query"], b["key"], b["value"]
                    source = "sdpa"
                mask = b.get("attn_mask")
                if mask is not None:
                    mask = _to_bool_mask(mask, "attn_mask")
                    if mask is None:
                        self.dropped.append({"index": index, "name": name, "reason":
                                             "additive attention bias (not a mask)"})
                        return
                scale = b.get("scale")
                scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
                q, k, v, mask, causal = _normalized(q, k, v, mask, bool(b.get("is_causal")))
            else:
                bound = self.mha_sig.bind(*args, **kwargs)
                bound.apply_defaults()
                try:
                    q, k, v, mask, causal, scale = _mha_qkv(bound.arguments)
                except ValueError as exc:
                    self.dropped.append({"index": index, "name": name, "reason": str(exc)})
                    return
                q, k, v, mask, causal = _normalized(q, k, v, mask, causal)
                source = "multi_head_attention_forward"
            heads = None
            if self.heads is not None:
                heads = tuple(h for h in self.heads if h < q.shape[1])
                sel = list(heads)
                q, k, v = q[:, sel], k[:, sel], v[:, sel]
                if mask is not None and mask.shape[1] > 1:
                    mask = mask[:, sel]
            arrays = [x.detach().to("cpu", self.dtype or x.dtype).numpy().copy()
                      for x in (q, k, v)]
            m = None if mask is None else mask.detach().cpu().numpy().copy()
        size = sum(a.nbytes for a in arrays) + (0 if m is None else m.nbytes)
        if self.max_bytes is not None and self.stored + size > self.max_bytes:
            self.dropped.append({"index": index, "name": name, "reason":
                                 f"over max_bytes={self.max_bytes} ({size} bytes)"})
            return
        self.stored += size
        self.calls.append(AttentionCall(*arrays, mask=m, causal=causal, scale=scale,
                                        name=name, index=index, source=source, heads=heads))


def capture(
    model: Any,
    *inputs: Any,
    layers: int | str | Iterable[int | str] | None = None,
    heads: Iterable[int] | None = None,
    max_bytes: int | None = None,
    dtype: Any = None,
    name: str | None = None,
    structattn: bool = True,
    **kwargs: Any,
) -> AttentionRecord:
    """Run ``model(*inputs, **kwargs)`` once and record every attention call's q, k, v.

    Parameters
    ----------
    model : torch.nn.Module or callable
        Run once, under ``torch.no_grad()``; its outputs are discarded.  Module names
        (from ``named_modules``) are tracked with forward pre-hooks, removed afterwards.
    *inputs, **kwargs
        Passed to the model.
    layers : int, str or iterable of them, optional
        Keep only these calls: an int is a position in the call order, a str an
        ``fnmatch`` pattern on the calling module's name (``"encoder.layer.*"``).
    heads : iterable of int, optional
        Keep only these head indices of every call.
    max_bytes : int, optional
        Cap on the bytes stored; later calls that do not fit are dropped (listed in
        ``record.dropped``) with a warning.
    dtype : torch.dtype, optional
        Store in this dtype (default: the call's own).
    name : str, optional
        The model's name in the record (default: its class name).
    structattn : bool, default True
        Also record :func:`structattn.attention.softmax_attention` calls on torch tensors
        (module docstring).

    Returns
    -------
    AttentionRecord
        Calls with ``q``, ``k`` ``(batch, heads, L, d)``, ``v`` ``(batch, heads, L,
        d_v)`` numpy arrays, ``mask`` (bool, True = attend), ``causal``, ``scale``,
        ``name`` (module that made the call), ``index`` (call order).

    Notes
    -----
    Masks: see the module docstring.  Cost: one forward pass plus a copy of the stored
    tensors (``O(B·H·L·(2d + d_v))`` bytes per call, plus ``B·L_q·L_k`` for a mask).
    """
    torch = _torch()
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(
            max_bytes, (int, np.integer)) or max_bytes < 1):
        raise ValueError(f"max_bytes must be an integer >= 1, got {max_bytes!r}")
    if isinstance(layers, (int, str)):
        layers = (layers,)
    if layers is not None:
        layers = tuple(layers)
        if not layers or not all(isinstance(s, (int, str)) and not isinstance(s, bool)
                                 for s in layers):
            raise ValueError(f"layers must be ints (call order) or module-name patterns, "
                             f"got {layers!r}")
    if heads is not None:
        heads = tuple(heads)
        if not heads or not all(isinstance(h, (int, np.integer)) and h >= 0 for h in heads):
            raise ValueError(f"heads must be non-negative integers, got {heads!r}")
    state = _Capture(layers, heads, max_bytes, dtype)
    handles = []
    if isinstance(model, torch.nn.Module):
        for mod_name, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(state.push(mod_name or "(model)")))
            handles.append(module.register_forward_hook(state.pop, always_call=True))
    from .. import attention as _attention

    original = _attention.softmax_attention
    if structattn:
        _attention.softmax_attention = _structattn_call(state, original)
    try:
        with torch.no_grad(), state.mode:
            model(*inputs, **kwargs)
    finally:
        _attention.softmax_attention = original
        for h in handles:
            h.remove()
    if any("max_bytes" in d["reason"] for d in state.dropped):
        warnings.warn(f"capture: {sum('max_bytes' in d['reason'] for d in state.dropped)} "
                      f"attention call(s) dropped over max_bytes={max_bytes}", stacklevel=2)
    shapes = [list(x.shape) for x in inputs if hasattr(x, "shape")]
    return AttentionRecord(state.calls, model=name or type(model).__name__,
                           dropped=state.dropped,
                           meta={"torch": torch.__version__, "input_shapes": shapes,
                                 "calls_seen": state.count})

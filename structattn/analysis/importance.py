"""Head importance by gates (Michel et al., 2019), ablation, or attention entropy; and
head selection (spec ``ssta.md`` §1.2).

A model exposes per-head gates ``ξ`` (the output of head ``h`` of layer ``l`` is
multiplied by ``ξ[l, h]`` before the output projection; ``ξ = 1`` is the model), e.g.
:class:`structattn.layers.tiny_vit.TinyViT` (``forward(x, head_gate=...)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._array import describe_array, is_torch, namespace, validate_float_array
from ._common import check_block_rows
from .patterns import map_entropy

__all__ = ["head_gate_importance", "head_importance", "select_heads"]

_METHODS = ("gradient", "ablation", "attention_entropy")


def head_gate_importance(head_out: Any, head_out_grad: Any, *,
                         check_finite: bool = True) -> Any:
    """Gate importance from head outputs and their gradients: ``mean_x |⟨O, G⟩|``.

    With ``O[b, h] (L, d_h)`` the output of head ``h`` on example ``b`` and
    ``G[b, h] = ∂L(x_b)/∂O[b, h]``, the gate derivative at ``ξ = 1`` is
    ``∂L(x_b)/∂ξ_h = Σ_{t,c} O[b,h,t,c]·G[b,h,t,c]``; the importance is its absolute
    value averaged over the leading (example) dimensions.

    Parameters
    ----------
    head_out : array, shape (..., H, L, d_h)
        Per-head outputs before the gate (``LayerTrace.head_out`` of a TinyViT).
    head_out_grad : array, shape (..., H, L, d_h)
        Gradient of the **per-example** loss w.r.t. ``head_out`` (differentiate the sum
        of per-example losses, not their mean, or scale accordingly).
    check_finite : bool, default True

    Returns
    -------
    array, shape (H,)
        numpy in → numpy out, torch in → torch out.

    Notes
    -----
    ``O(n·H·L·d_h)``; equals ``mean_b |∂L(x_b)/∂ξ_h|`` computed by autograd.
    """
    for name, a in (("head_out", head_out), ("head_out_grad", head_out_grad)):
        validate_float_array(a, name, min_ndim=3, check_finite=check_finite)
    if tuple(head_out.shape) != tuple(head_out_grad.shape) or (
            is_torch(head_out) != is_torch(head_out_grad)):
        raise ValueError(f"head_out and head_out_grad must be arrays of one kind and shape, "
                         f"got {describe_array(head_out)} and {describe_array(head_out_grad)}")
    xp = namespace(head_out)
    dot = xp.sum(xp.sum(head_out * head_out_grad, axis=-1), axis=-1)  # (..., H)
    H = dot.shape[-1]
    dot = xp.reshape(xp.abs(dot), (-1, H))
    return xp.mean(dot, axis=0)


def select_heads(importance: Any, *, layer: int | None = -1, k: int = 1) -> Any:
    """The ``k`` most important heads of one layer (ties: the lowest index first).

    Parameters
    ----------
    importance : array, shape (num_layers, H) or (H,)
    layer : int or None, default -1
        Row of ``importance`` (default: the last layer); None for a 1-D input.
    k : int, default 1

    Returns
    -------
    numpy.ndarray of int, shape (k,)
        Head indices in decreasing importance.
    """
    imp = (importance.detach().cpu().numpy() if is_torch(importance)
           else np.asarray(importance, dtype=np.float64))
    if imp.ndim == 2:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not (
                -imp.shape[0] <= layer < imp.shape[0]):
            raise ValueError(f"layer must be an index in [-{imp.shape[0]}, {imp.shape[0]}) "
                             f"for importance of shape {imp.shape}, got {layer!r}")
        row = imp[int(layer)]
    elif imp.ndim == 1:
        if layer not in (None, -1, 0):
            raise ValueError(f"layer must be None for a 1-D importance, got {layer!r}")
        row = imp
    else:
        raise ValueError(f"importance must have shape (num_layers, H) or (H,), got "
                         f"{imp.shape}")
    if not np.all(np.isfinite(row)):
        raise ValueError("importance contains NaN or Inf values")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= row.size:
        raise ValueError(f"k must be an integer in [1, {row.size}], got {k!r}")
    return np.argsort(-row, kind="stable")[: int(k)]


def _batches(inputs: Any, batch_size: int) -> list[tuple[Any, ...]]:
    import torch

    items = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    if not items or not all(isinstance(t, torch.Tensor) for t in items):
        raise TypeError("inputs must be a torch.Tensor x or a tuple (x, *targets) of tensors")
    n = items[0].shape[0]
    if any(t.shape[0] != n for t in items):
        raise ValueError(f"all inputs must share the first (example) dimension, got "
                         f"{[tuple(t.shape) for t in items]}")
    return [tuple(t[i:i + batch_size] for t in items) for i in range(0, n, batch_size)]


def head_importance(
    forward: Callable[..., Any],
    inputs: Any,
    loss_fn: Callable[..., Any] | None,
    *,
    num_layers: int,
    num_heads: int,
    method: str = "gradient",
    normalize_layers: bool = False,
    per_example: bool = True,
    batch_size: int = 64,
    block_rows: int = 256,
) -> Any:
    """Importance of every head of a gated torch model.

    * ``"gradient"`` (Michel et al.): ``I[l,h] = mean_x |∂L(x; ξ)/∂ξ_{l,h}|`` at ``ξ = 1``;
    * ``"ablation"``: ``mean_x L(x; ξ = 1 − e_{l,h}) − mean_x L(x; 1)``, the loss increase
      when the head is zeroed (``num_layers·num_heads + 1`` forward passes);
    * ``"attention_entropy"`` (label-free): ``−mean_x H(P[l, h])``, the negated mean row
      entropy of the head's maps (peaked heads rank high).

    Parameters
    ----------
    forward : callable
        ``forward(x, head_gate=ξ)`` -> output; ``ξ`` is ``(num_layers, num_heads)``, or
        ``(B, num_layers, num_heads)`` for the per-example gradient.  For
        ``"attention_entropy"`` it is called as ``forward(x, return_attention=True)`` and
        must return ``(output, maps)`` with maps a sequence of ``(B, H, L, L)``.
        A :class:`~structattn.layers.tiny_vit.TinyViT` qualifies.
    inputs : torch.Tensor or tuple of torch.Tensor
        ``x`` or ``(x, *targets)``, split into batches along the first dimension.
    loss_fn : callable or None
        ``loss_fn(output, *targets)`` -> per-example losses ``(B,)`` (a self-supervised
        model uses its own objective or a proxy such as ``‖f(x; ξ) − f(x; 1)‖²``).
        Unused (may be None) for ``"attention_entropy"``.
    num_layers, num_heads : int
    method : {"gradient", "ablation", "attention_entropy"}, default "gradient"
    normalize_layers : bool, default False
        Divide each layer's importances by their L2 norm (some public ports do).
    per_example : bool, default True
        ``"gradient"``: per-example ``|∂L(x)/∂ξ|`` through batched gates (one backward
        pass per batch); False: ``|∂ mean_batch L / ∂ξ|`` per batch, averaged over
        batches (the Hugging Face bertology port; needs only 2-D gates).
    batch_size : int, default 64
    block_rows : int, default 256
        Row blocks of the entropy.

    Returns
    -------
    torch.Tensor, shape (num_layers, num_heads)
        float64, detached.
    """
    import torch

    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    for name, v in (("num_layers", num_layers), ("num_heads", num_heads),
                    ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if method != "attention_entropy" and not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable for method={method!r}")
    block_rows = check_block_rows(block_rows)
    batches = _batches(inputs, int(batch_size))
    x0 = batches[0][0]
    dtype = x0.dtype if x0.is_floating_point() else torch.float32
    shape = (num_layers, num_heads)
    total = torch.zeros(shape, dtype=torch.float64)
    count = 0

    def losses(out: Any, targets: tuple[Any, ...], n: int) -> Any:
        loss = loss_fn(out, *targets)
        if not isinstance(loss, torch.Tensor) or tuple(loss.shape) != (n,):
            raise ValueError(f"loss_fn must return per-example losses of shape ({n},), got "
                             f"{getattr(loss, 'shape', type(loss).__name__)}")
        return loss

    for x, *targets in batches:
        n = x.shape[0]
        if method == "gradient":
            gshape = (n, *shape) if per_example else shape
            gate = torch.ones(gshape, dtype=dtype, device=x.device, requires_grad=True)
            loss = losses(forward(x, head_gate=gate), tuple(targets), n)
            (grad,) = torch.autograd.grad(loss.sum() if per_example else loss.mean(), gate)
            g = grad.abs().double().cpu()
            total += g.sum(dim=0) if per_example else g * n
        elif method == "ablation":
            with torch.no_grad():
                ones = torch.ones(shape, dtype=dtype, device=x.device)
                base = losses(forward(x, head_gate=ones), tuple(targets), n).sum()
                for lyr in range(num_layers):
                    for h in range(num_heads):
                        gate = ones.clone()
                        gate[lyr, h] = 0.0
                        ablated = losses(forward(x, head_gate=gate), tuple(targets), n).sum()
                        total[lyr, h] += float(ablated - base)
        else:
            with torch.no_grad():
                _, maps = forward(x, return_attention=True)
                if len(maps) != num_layers:
                    raise ValueError(f"forward returned {len(maps)} layers of maps, expected "
                                     f"num_layers = {num_layers}")
                for lyr, m in enumerate(maps):
                    if m.shape[-3] != num_heads:
                        raise ValueError(f"maps[{lyr}] has {m.shape[-3]} heads, expected "
                                         f"num_heads = {num_heads}")
                    ent = map_entropy(m, block_rows=block_rows)  # (B, H)
                    total[lyr] -= ent.double().cpu().reshape(-1, num_heads).sum(dim=0)
        count += n
    imp = total / count
    if normalize_layers:
        norm = imp.norm(dim=1, keepdim=True)
        imp = torch.where(norm > 0, imp / torch.where(norm > 0, norm, 1.0), imp)
    return imp

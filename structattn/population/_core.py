"""Stacked parameters, per-member Adam and the vectorized linear layer.

The population axis is always the leading axis ``P`` of every stacked array.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._array import is_torch

__all__ = ["adam_step", "stack_params", "unstack_params"]


def stack_params(members: Sequence[Any]) -> dict[str, Any]:
    """Stack ``P`` members' parameters along a new leading axis.

    Parameters
    ----------
    members : sequence of dict[str, array] or of torch.nn.Module
        ``P >= 1`` parameter dicts with identical keys and shapes (numpy arrays or torch
        tensors), or ``P`` modules of one architecture (stacked with
        ``torch.func.stack_module_state``: parameters and buffers).

    Returns
    -------
    dict[str, array]
        Name → array of shape ``(P, *shape)``.  Stacked module parameters are fresh
        leaf tensors (``requires_grad`` kept), detached from the members.
    """
    members = list(members)
    if not members:
        raise ValueError("stack_params needs at least one member, got an empty sequence")
    first = members[0]
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is optional
        torch = None
    if torch is not None and isinstance(first, torch.nn.Module):
        if not all(isinstance(m, torch.nn.Module) for m in members):
            raise TypeError("members must be all nn.Modules or all dicts")
        from torch.func import stack_module_state

        params, buffers = stack_module_state(members)
        return {**params, **buffers}
    if not isinstance(first, Mapping):
        raise TypeError(
            f"members must be dicts of arrays or nn.Modules, got {type(first).__name__}"
        )
    keys = list(first)
    for i, m in enumerate(members):
        if list(m) != keys:
            raise ValueError(f"members[{i}] has keys {list(m)}, expected {keys}")
    out = {}
    for key in keys:
        values = [m[key] for m in members]
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) != 1:
            raise ValueError(f"parameter {key!r} has different shapes across members: {shapes}")
        if is_torch(values[0]):
            out[key] = torch.stack(values)
        else:
            out[key] = np.stack([np.asarray(v) for v in values])
    return out


def unstack_params(stacked: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Inverse of :func:`stack_params`: ``P`` dicts of views ``stacked[name][p]``."""
    if not stacked:
        raise ValueError("stacked must hold at least one parameter")
    sizes = {int(v.shape[0]) if v.ndim else -1 for v in stacked.values()}
    if len(sizes) != 1 or -1 in sizes:
        raise ValueError(f"every stacked parameter needs the same leading axis P, got {sizes}")
    (P,) = sizes
    return [{k: v[p] for k, v in stacked.items()} for p in range(P)]


def _member_lr(lr: Any, like: Any) -> Any:
    """``lr`` as a scalar, or a ``(P,)`` vector reshaped to broadcast over ``like``."""
    if np.ndim(lr) == 0 and not (is_torch(lr) and lr.ndim > 0):
        value = float(lr)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
        return value
    P = like.shape[0] if like.ndim else None
    if tuple(lr.shape) != (P,):
        raise ValueError(f"lr must be a scalar or have shape (P,) = ({P},), got {tuple(lr.shape)}")
    shape = (P,) + (1,) * (like.ndim - 1)
    if is_torch(like):
        import torch

        return torch.as_tensor(lr, dtype=like.dtype, device=like.device).reshape(shape)
    return np.asarray(lr, dtype=like.dtype).reshape(shape)


def adam_step(
    params: Mapping[str, Any],
    grads: Mapping[str, Any],
    state: Mapping[str, Any] | None,
    *,
    lr: Any,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    t: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One Adam step on stacked parameters with a per-member learning rate.

    The unit-lr trick of fastpbrl: Adam's update is a scale-free direction times
    ``-lr``, so one vectorized Adam with the direction multiplied by each member's own
    ``lr_p`` equals ``P`` separate Adams (as ``torch.optim.Adam``, bias correction
    included; no weight decay, no amsgrad).

    Parameters
    ----------
    params, grads : dict[str, array]
        Stacked arrays ``(P, ...)`` (numpy or torch; torch is updated out of place under
        ``no_grad`` and the results are detached leaves with ``requires_grad`` kept).
    state : dict or None
        ``{"m": ..., "v": ..., "t": int}`` from the previous step; None starts at zero.
    lr : float or array of shape (P,)
        Learning rate(s), ``>= 0``.
    betas : (float, float)
        Moment decays in ``[0, 1)``.
    eps : float
        Added to the bias-corrected root second moment.
    t : int, optional
        Step number (1-based) overriding ``state["t"] + 1``.

    Returns
    -------
    (new_params, new_state)

    Notes
    -----
    ``O(total parameters)`` time and memory, one pass.
    """
    b1, b2 = (float(b) for b in betas)
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
        raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    if set(grads) != set(params):
        raise ValueError(f"grads keys {sorted(grads)} differ from params keys {sorted(params)}")
    step = (0 if state is None else int(state["t"])) + 1 if t is None else int(t)
    if step < 1:
        raise ValueError(f"t must be >= 1, got {t!r}")
    bc1 = 1.0 - b1**step
    bc2 = 1.0 - b2**step
    new_p, new_m, new_v = {}, {}, {}
    for name, p in params.items():
        g = grads[name]
        if g is None or tuple(g.shape) != tuple(p.shape):
            raise ValueError(f"grads[{name!r}] must have shape {tuple(p.shape)}")
        m0 = 0.0 * g if state is None else state["m"][name]
        v0 = 0.0 * g if state is None else state["v"][name]
        if is_torch(p):
            import torch

            with torch.no_grad():
                m = m0 * b1 + g * (1 - b1)
                v = v0 * b2 + (g * g) * (1 - b2)
                denom = torch.sqrt(v) / math.sqrt(bc2) + eps
                upd = _member_lr(lr, p) * (m / bc1) / denom
                out = (p - upd).detach().requires_grad_(p.requires_grad)
        else:
            m = m0 * b1 + g * (1 - b1)
            v = v0 * b2 + (g * g) * (1 - b2)
            denom = np.sqrt(v) / math.sqrt(bc2) + eps
            out = p - _member_lr(lr, np.asarray(p)) * (m / bc1) / denom
        new_p[name], new_m[name], new_v[name] = out, m, v
    return new_p, {"m": new_m, "v": new_v, "t": step}

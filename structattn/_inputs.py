"""Input preparation shared by the attention entry points (issue 14).

Two things happen before the math core sees ``q, k, v`` and are undone on the output:

* **Half precision.**  torch ``float16``/``bfloat16`` inputs are computed in ``float32``
  (features, exponentials, normalizers, prefix states and the softmax all accumulate in
  float32) and the output is cast back to the input dtype.  Autograd flows through the
  casts, so gradients arrive in the input dtype.
* **Grouped-query attention** (``enable_gqa=True``, the flag of
  :func:`torch.nn.functional.scaled_dot_product_attention`): ``k`` and ``v`` may have
  fewer heads (axis ``-3``) than ``q``; query head ``h`` uses key/value head
  ``h // (H_q / H_kv)`` (``repeat_interleave`` semantics, as SDPA).  The heads are
  regrouped as ``(..., H_kv, g, L, d)`` and ``k, v`` are broadcast views: nothing is
  copied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._array import dtype_name, is_torch, namespace

__all__ = ["HALF_DTYPES", "prepare_attention_inputs"]

#: torch dtypes computed in float32 and cast back.
HALF_DTYPES = ("float16", "bfloat16")


def _upcast(q: Any, k: Any, v: Any) -> tuple[Any, Any, Any, Any]:
    """float32 copies of half-precision torch inputs of one dtype, and that dtype."""
    arrays = (q, k, v)
    if not all(is_torch(a) for a in arrays):
        return q, k, v, None
    names = {dtype_name(a) for a in arrays}
    if len(names) != 1 or next(iter(names)) not in HALF_DTYPES:
        return q, k, v, None  # mixed dtypes: validation reports them
    return q.float(), k.float(), v.float(), q.dtype


def _group_heads(q: Any, k: Any, v: Any) -> tuple[Any, Any, Any, tuple[int, ...]]:
    """``q (..., H_q, L, d)`` -> ``(..., H_kv, g, L, d)``; ``k, v`` broadcast to match."""
    for name, a in (("q", q), ("k", k), ("v", v)):
        if getattr(a, "ndim", 0) < 3:
            raise ValueError(
                f"enable_gqa=True needs inputs of shape (..., heads, L, d); {name} has "
                f"shape {tuple(getattr(a, 'shape', ()))}"
            )
    H_q, H_kv = int(q.shape[-3]), int(k.shape[-3])
    if int(v.shape[-3]) != H_kv:
        raise ValueError(
            f"enable_gqa=True needs k and v with the same number of heads; got "
            f"k.shape={tuple(k.shape)} and v.shape={tuple(v.shape)}"
        )
    if H_kv < 1 or H_q % H_kv:
        raise ValueError(
            f"enable_gqa=True needs the number of query heads ({H_q}) to be a multiple "
            f"of the number of key/value heads ({H_kv})"
        )
    xp = namespace(q, k, v)
    g = H_q // H_kv
    lead = tuple(q.shape[:-3])
    q5 = xp.reshape(q, (*lead, H_kv, g, *q.shape[-2:]))

    def expand(a: Any) -> Any:
        a5 = xp.expand_dims(a, axis=-3) if hasattr(xp, "expand_dims") else a[..., None, :, :]
        return xp.broadcast_to(a5, (*a.shape[:-3], H_kv, g, *a.shape[-2:]))

    return q5, expand(k), expand(v), (*lead, H_q)


def prepare_attention_inputs(
    q: Any, k: Any, v: Any, *, enable_gqa: bool = False
) -> tuple[Any, Any, Any, Callable[[Any], Any]]:
    """Upcast half precision and regroup GQA heads; return a function that undoes both.

    Parameters
    ----------
    q, k, v : arrays, shapes (..., H_q, L_q, d), (..., H_kv, L_k, d), (..., H_kv, L_k, d_v)
    enable_gqa : bool
        Allow ``H_kv`` to divide ``H_q`` (otherwise the heads must be equal).

    Returns
    -------
    q, k, v : arrays
        What the math core computes on (float32 for half inputs; ``(..., H_kv, g, L, ·)``
        with ``enable_gqa``).
    restore : callable
        Maps the core's output ``(..., L_q, d_v)`` back to the caller's dtype and heads.
    """
    if not isinstance(enable_gqa, bool):
        raise TypeError(f"enable_gqa must be a bool, got {enable_gqa!r}")
    q, k, v, out_dtype = _upcast(q, k, v)
    heads = None
    if enable_gqa:
        q, k, v, heads = _group_heads(q, k, v)

    def restore(y: Any) -> Any:
        if heads is not None:
            y = namespace(y).reshape(y, (*heads, *y.shape[-2:]))
        if out_dtype is not None:
            y = y.to(out_dtype)
        return y

    return q, k, v, restore

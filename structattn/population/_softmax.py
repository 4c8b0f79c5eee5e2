"""One batched math core for exact softmax attention over a temperature grid.

Member ``p`` is ``softmax_attention(q, k, v, scale=s_p, causal=…)``.  The inputs are
shared, so the score matrix is too: ``S_p = s_p · Q Kᵀ``.  The core forms ``S = Q Kᵀ``
and its stabilizer (each row's maximum over its kept entries) **once**, and since
``s_p > 0``, ``max_j S_p[i, j] = s_p · max_j S[i, j]``: member ``p``'s stabilized
weights are ``exp(s_p · (S - rowmax S))`` — one scaled exponential pass per member,
no per-member score GEMM, stabilizer or validation.  Members are processed in blocks
whose ``L_q x L_k`` weights stay in cache (:data:`~._favor.BLOCK_BYTES`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._array import as_like, is_torch, namespace, validate_attention_inputs
from .._debug import resolve_check_finite
from .._validate import check_finite_output, check_scale, tiny
from . import _favor

__all__ = ["softmax_population"]


def softmax_population(
    q: Any,
    k: Any,
    v: Any,
    scales: Sequence[float],
    *,
    causal: bool = False,
    check_finite: bool | None = None,
) -> Any:
    """``out[p] = softmax_attention(q, k, v, scale=scales[p], causal=causal)``.

    Parameters
    ----------
    q : array, shape (..., L_q, d)
    k : array, shape (..., L_k, d)
    v : array, shape (..., L_k, d_v)
        numpy arrays or torch tensors (float32/float64), shared by every member.
    scales : sequence of float, length P
        Positive finite temperatures.
    causal : bool
        Causal mask ``j <= i`` (``L_q == L_k``).
    check_finite : bool, optional
        As :func:`~structattn.softmax_attention`.

    Returns
    -------
    array, shape (P, ..., L_q, d_v)
        Equal to the loop to rounding; rows with no kept key are zeros.

    Notes
    -----
    ``O(L_q·L_k·d)`` for the shared scores plus ``O(P·L_q·L_k·(1 + d_v))`` for the
    members (the loop does ``O(P·L_q·L_k·(d + d_v))``); extra memory ``O(L_q·L_k)``
    per batch element plus one block of members' weights.
    """
    checks = resolve_check_finite(check_finite, q, k, v)
    batch, L_q, L_k, d, _ = validate_attention_inputs(q, k, v, check_finite=checks)
    s = np.asarray([check_scale(float(x), d) for x in scales], dtype=np.float64)
    if causal and L_q != L_k:
        raise ValueError(f"causal=True needs L_q == L_k, got {L_q} and {L_k}")
    xp = namespace(q, k, v)
    S = q @ xp.matrix_transpose(k)  # (..., L_q, L_k), shared by every member
    if causal:
        keep = np.tril(np.ones((L_q, L_k), dtype=bool))
        if is_torch(q):
            import torch

            keep = torch.as_tensor(keep, device=q.device)
        S = xp.where(keep, S, as_like(np.array(-np.inf), q))
    row_max = xp.max(S, axis=-1, keepdims=True)
    row_max = xp.where(xp.isfinite(row_max), row_max, xp.zeros_like(row_max))
    S = S - row_max  # <= 0 on kept entries, -inf on masked ones
    P = s.size
    itemsize = 8 if "64" in str(q.dtype) else 4
    B = max(1, min(P, _favor.BLOCK_BYTES // max(1, L_q * L_k * itemsize)))
    sv = as_like(s.reshape((P,) + (1,) * (len(batch) + 2)), q)
    outs = []
    for p0 in range(0, P, B):
        E = xp.exp(sv[p0 : p0 + B] * S)  # (b, ..., L_q, L_k)
        den = xp.sum(E, axis=-1, keepdims=True)
        num = E @ v
        nonzero = xp.abs(den) >= tiny(den)
        if not is_torch(den) and bool(xp.all(nonzero)):
            outs.append(num / den)
        else:
            outs.append(xp.where(nonzero, num / xp.where(nonzero, den, xp.ones_like(den)),
                                 xp.zeros_like(num)))
    out = outs[0] if len(outs) == 1 else xp.concat(outs, axis=0)
    return check_finite_output(out, "softmax_population", checks)

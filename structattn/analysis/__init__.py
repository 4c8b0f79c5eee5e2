"""Attention-map analysis and head-level distillation (SSTA; spec ``ssta.md``).

Maps are shaped ``(..., H, L, L)``; numpy in → numpy out, torch in → torch out (with
autograd); every map-sized computation runs by blocks of query rows.

* patterns: :func:`map_entropy`, :func:`mean_attention_distance`,
  :func:`head_deviation`, :func:`head_similarity` (``"js"``, ``"kl"``, ``"cka"``);
* distillation: :func:`attention_kl` (forward / reverse / symmetric, temperature,
  floor), :func:`ssta_attention_loss` (teacher head, assistant head, student head
  assignment ``"dedicated"`` / ``"all"`` / ``"mean"``, weights);
* head importance: :func:`head_gate_importance` (gate gradients from head outputs),
  :func:`head_importance` (``"gradient"``, ``"ablation"``, ``"attention_entropy"`` on
  a gated torch model such as :class:`~structattn.layers.tiny_vit.TinyViT`),
  :func:`select_heads`.

Examples
--------
>>> import numpy as np
>>> from structattn.analysis import map_entropy, mean_attention_distance
>>> P = np.full((2, 17, 17), 1 / 17)           # two uniform heads, CLS + 4x4 grid
>>> np.allclose(map_entropy(P), np.log(17))
True
>>> mean_attention_distance(np.eye(17)[None], grid=(4, 4)).round(6)
array([0.])
"""

from .distill import attention_kl, ssta_attention_loss
from .importance import head_gate_importance, head_importance, select_heads
from .patterns import (
    head_deviation,
    head_similarity,
    map_entropy,
    mean_attention_distance,
    patch_coordinates,
)

__all__ = [
    "attention_kl",
    "head_deviation",
    "head_gate_importance",
    "head_importance",
    "head_similarity",
    "map_entropy",
    "mean_attention_distance",
    "patch_coordinates",
    "select_heads",
    "ssta_attention_loss",
]

"""Torch ``nn.Module`` layers built from structattn's operators (device-agnostic).

* :class:`KernelAttention` — multi-head masked kernel attention (any feature map, any
  :class:`~structattn.masks.Mask`), on :func:`structattn.kernel_attention`;
* :class:`LARAAttention` — multi-head linear randomized attention, on
  :func:`structattn.estimators.lara`;
* :class:`GAU` — gated attention unit, quadratic ``relu²`` attention;
* :class:`FLASH` — GAU with mixed-chunk attention (linear in the length);
* :class:`ContextPool` — adaptive Gaussian context pooling with banded truncation;
* :class:`SlotAttention` — Slot Attention on :func:`structattn.objects.inverted_attention`;
* :class:`TinyViT` — a small vision transformer whose attention is any structattn operator.

Every layer exposes the dense operator it applies (``dense_operator(x)``, also named
``attention_matrix`` / ``pooling_matrix``) so tests can compare its output with the
matrix-based computation.  No layer moves data between devices: parameters live where
the module is (``module.to(device)``), computations run on the input's device.
"""

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - torch is an optional dependency
    raise ImportError(
        "structattn.layers needs torch: pip install 'structattn[torch]'"
    ) from exc

from .context_pool import ContextPool, gaussian_pooling, gaussian_pooling_matrix
from .flash import FLASH
from .gau import GAU
from .kernel_attention import KernelAttention, MultiHeadProjection
from .lara import LARAAttention
from .slot_attention import SlotAttention
from .tiny_vit import GatedUnitSpec, LayerTrace, TinyViT

__all__ = [
    "FLASH",
    "GAU",
    "ContextPool",
    "GatedUnitSpec",
    "KernelAttention",
    "LARAAttention",
    "LayerTrace",
    "MultiHeadProjection",
    "SlotAttention",
    "TinyViT",
    "gaussian_pooling",
    "gaussian_pooling_matrix",
]

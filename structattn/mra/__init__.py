"""Multi-resolution (MRA-2, MRA-2-s) approximation of softmax attention.

Zeng et al., "Multi Resolution Analysis (MRA) for Approximate Self-Attention", ICML 2022.
A block-constant coarse part built from block means of ``Q`` and ``K`` plus exactly
computed ``b x b`` blocks chosen where the coarse scores are largest:

* :func:`mra_attention`, :class:`MRAAttention` — the fast operator (numpy / numba /
  torch), :class:`MRAApproximation` — its selection, coarse part and dense forms;
* :func:`select_blocks`, :class:`BlockSelection` — deterministic, nested selection;
* :func:`mra_dense_reference` — the dense float64 reference;
* :mod:`structattn.mra.haar` — Haar analysis and oracles with PyWavelets.
"""

from . import haar
from .attention import MODES, MRAApproximation, MRAAttention, mra_attention
from .reference import MRAReference, block_mean, mra_dense_reference
from .selection import BlockSelection, select_blocks

__all__ = [
    "MODES",
    "BlockSelection",
    "MRAApproximation",
    "MRAAttention",
    "MRAReference",
    "block_mean",
    "haar",
    "mra_attention",
    "mra_dense_reference",
    "select_blocks",
]

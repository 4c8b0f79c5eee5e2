"""Attention graphs (networkx in, CSR out), sparse patterns, sparse softmax attention on a
graph, and information-flow scores (transfer matrix, payload, NIP).

Examples
--------
>>> import numpy as np
>>> from structattn.graphs import hypercube, sparse_attention
>>> g = hypercube(100)
>>> g.num_nodes, g.max_degree
(100, 8)
>>> rng = np.random.default_rng(0)
>>> q, k, v = (rng.standard_normal((2, 100, 8)) for _ in range(3))
>>> sparse_attention(q, k, v, g).shape
(2, 100, 8)
"""

from .graph import AttentionGraph
from .hypercube import cube_dimension, gray_code, hypercube_neighbors, inverse_gray_code
from .information import information_payload, nip, transfer_matrix
from .kernels import DiffusionMask, RandomWalkMask, ResolventMask, TreeDistanceMask
from .patterns import (
    bigbird,
    dilated,
    fixed,
    full,
    global_tokens,
    hypercube,
    longformer,
    random,
    star_transformer,
    strided,
    window,
)
from .sparse_attention import sparse_attention, sparse_attention_matrix

__all__ = [
    "AttentionGraph",
    "DiffusionMask",
    "RandomWalkMask",
    "ResolventMask",
    "TreeDistanceMask",
    "bigbird",
    "cube_dimension",
    "dilated",
    "fixed",
    "full",
    "global_tokens",
    "gray_code",
    "hypercube",
    "hypercube_neighbors",
    "information_payload",
    "inverse_gray_code",
    "longformer",
    "nip",
    "random",
    "sparse_attention",
    "sparse_attention_matrix",
    "star_transformer",
    "strided",
    "transfer_matrix",
    "window",
]

"""Independent oracles for the graph tests: edge rules by explicit loops, dense attention."""

from __future__ import annotations

import numpy as np

from ..conftest import torch


def rule_digraph(n, rule):
    """networkx DiGraph with the edge (i, j) iff ``rule(i, j)``, by a double loop."""
    import networkx as nx

    G = nx.DiGraph()
    G.add_nodes_from(range(n))
    G.add_edges_from((i, j) for i in range(n) for j in range(n) if rule(i, j))
    return G


def dense_masked_attention(q, k, v, A, scale=None):
    """Dense masked softmax attention in float64 numpy, −inf semantics, empty rows → 0."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    S = np.einsum("...id,...jd->...ij", q, k) * scale
    S = np.where(A, S, -np.inf)
    m = S.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    E = np.where(A, np.exp(S - m), 0.0)
    den = E.sum(axis=-1, keepdims=True)
    P = np.divide(E, den, out=np.zeros_like(E), where=den > 0)
    return P @ v, P


def torch_dense_masked(q, k, v, A, scale=None):
    """The same reference in torch (autograd), for gradient comparisons."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    A = torch.as_tensor(A)
    S = (q @ k.transpose(-1, -2)) * scale
    S = S.masked_fill(~A, -torch.inf)
    m = S.amax(-1, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    E = torch.where(A, torch.exp(S - m), torch.zeros_like(S))
    den = E.sum(-1, keepdim=True)
    return (E / torch.where(den > 0, den, torch.ones_like(den))) @ v

"""
Sparse attention graphs and graph-kernel masks
==============================================

Two ways a graph enters attention:

* an :class:`~structattn.graphs.AttentionGraph` says *which* keys a query may see
  (window, Longformer, BigBird, hypercube patterns), and
  :func:`~structattn.graphs.sparse_attention` computes softmax attention over those
  edges only;
* a graph-kernel mask says *how much* each key counts, as a function of the distance
  between tokens on a graph: :class:`~structattn.graphs.kernels.TreeDistanceMask`
  (:math:`r^{\\mathrm{dist}}` on a tree, exact in :math:`O(L)`),
  :class:`~structattn.graphs.kernels.DiffusionMask` (heat kernel :math:`e^{-t\\mathcal L}`)
  and :class:`~structattn.graphs.kernels.RandomWalkMask` (an unbiased random-walk
  estimate of a power series in the adjacency).

The normalized information payload (:func:`~structattn.graphs.nip`) compares patterns:
how much of every token reaches every other token after ``hops`` layers, per unit of
attention cost.
"""

# %%
# Patterns
# --------
#
# Four patterns on :math:`N = 64` tokens, drawn as their :math:`N \times N` adjacency
# (black: the query attends to the key).

import matplotlib.pyplot as plt
import networkx as nx
import numpy as np

import structattn as sa
from structattn.graphs import (
    bigbird,
    full,
    hypercube,
    longformer,
    nip,
    sparse_attention,
    window,
)
from structattn.graphs.kernels import DiffusionMask, RandomWalkMask, TreeDistanceMask
from structattn.testing import relative_error

N = 64
patterns = {
    "window (w=2)": window(N, 2),
    "Longformer (w=2, 2 global)": longformer(N, 2, 2),
    "BigBird (w=1, 1 global, 2 random)": bigbird(N, 1, 1, 2, seed=0),
    "hypercube": hypercube(N),
}
fig, axes = plt.subplots(1, 4, figsize=(12, 3.4), layout="constrained")
for ax, (name, g) in zip(axes, patterns.items(), strict=False):
    ax.imshow(g.to_dense(), cmap="Greys", interpolation="nearest")
    ax.set_title(f"{name}\nnnz = {g.nnz}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])

# %%
# Sparse attention equals masked dense attention
# ----------------------------------------------
#
# Restricting softmax to the edges of the graph is the same as dense softmax attention
# with the graph's boolean adjacency as the mask; the sparse kernel does
# :math:`O(\mathrm{nnz}\cdot d)` work instead of :math:`O(N^2 d)`.

rng = np.random.default_rng(0)
q, k, v = (rng.standard_normal((2, N, 16)) for _ in range(3))
for name, g in patterns.items():
    sparse = sparse_attention(q, k, v, g)
    dense = sa.softmax_attention(q, k, v, mask=g.to_dense().astype(bool))
    err = relative_error(sparse, dense)
    print(f"{name:>34}: sparse vs dense-masked attention {err:.1e}")
    assert err < 1e-12

# %%
# Normalized information payload against depth
# ---------------------------------------------
#
# ``nip(g, hops, "min")`` is :math:`N \min_{ij} T_h[i, j]` divided by the density of
# the graph, where :math:`T_h` is the :math:`h`-step transfer matrix of uniform attention
# on the graph; the complete graph scores exactly 1 at every depth.  A pattern scores 0
# until every token can reach every other one.  The hypercube, with
# :math:`\log_2 N + 1` keys per query, reaches every token in :math:`\log_2 N` hops.

hops = np.arange(1, 17)
fig, ax = plt.subplots(figsize=(6, 4.2))
scores = {"full": [nip(full(N), h, "min") for h in hops]}
for name, g in patterns.items():
    scores[name] = [nip(g, int(h), "min") for h in hops]
for name, s in scores.items():
    ax.plot(hops, s, marker="o", ms=3, label=name)
    first = next((int(h) for h, x in zip(hops, s, strict=False) if x > 0), None)
    print(f"{name:>34}: first hop with a non-zero payload = {first}, "
          f"NIP at h={hops[-1]}: {s[-1]:.3g}")
ax.set_xlabel("hops $h$ (layers)")
ax.set_ylabel('NIP (reduce="min")')
ax.set_yscale("symlog", linthresh=1e-3)
ax.set_title(f"Information payload per unit cost, N = {N}")
ax.legend(fontsize=8)
ax.grid(True, alpha=0.3)
fig.tight_layout()

# %%
# Graph-kernel masks
# ------------------
#
# A tree-distance mask on a random tree, the heat kernel of a 6 x 8 grid graph, and a
# random-walk mask on the same grid.  The tree and diffusion masks are exact linear
# operators (checked against their dense matrices); they multiply the attention
# weights like any other :class:`~structattn.masks.Mask`, so
# :func:`~structattn.kernel_attention` applies them without an :math:`L \times L` matrix.

L = 48
tree = nx.random_labeled_tree(L, seed=0)
tree_mask = TreeDistanceMask(tree, 0.7, length=L)
grid = nx.convert_node_labels_to_integers(nx.grid_2d_graph(6, 8))
heat = DiffusionMask(grid, t=1.0)

X = rng.standard_normal((L, 8))
for name, mask in (("tree distance", tree_mask), ("diffusion", heat)):
    err = relative_error(mask.matmat(X), mask.to_dense() @ X)
    print(f"{name:>13} mask: |M X - dense(M) X| / |.| = {err:.1e}")
    assert err < 1e-8

qm, km, vm = (0.3 * rng.standard_normal((L, 16)) for _ in range(3))
phi = sa.PositiveRandomFeatures(dim=16, num_features=128, seed=0)
for name, mask in (("tree distance", tree_mask), ("diffusion", heat)):
    y = sa.kernel_attention(qm, km, vm, phi, mask=mask)
    exact = sa.softmax_attention(qm, km, vm, mask=mask)
    uniform = sa.softmax_attention(np.zeros_like(qm), km, vm, mask=mask)
    print(f"{name:>13} mask: kernel attention (m=128) vs exact {relative_error(y, exact):.3f}; "
          f"trivial baseline (mask-only weights) {relative_error(uniform, exact):.3f}")

# %%
# The random-walk mask is unbiased: its expectation is :math:`F(W)F(W)^\top` with
# :math:`F(W) = \sum_\ell f_\ell W^\ell` (here a truncated :math:`e^{tW/2}`), and the error
# of one draw shrinks as the number of walks per node grows.

modulation = RandomWalkMask.diffusion_modulation(0.5, 3)
walks = [1, 2, 4, 8, 16, 32, 64]
errors = []
for n in walks:
    draws = [RandomWalkMask(grid, n, 0.5, modulation, seed=s) for s in range(4)]
    target = draws[0].expected_dense()
    errors.append(np.mean([relative_error(m.to_dense(), target) for m in draws]))
    print(f"num_walks={n:>3}: relative error of the mask vs its expectation {errors[-1]:.3f}")

fig, axes = plt.subplots(1, 4, figsize=(13, 3.3), layout="constrained")
for ax, (name, M) in zip(axes[:3], (("tree distance (r = 0.7)", tree_mask.to_dense()),
                                    ("diffusion (t = 1)", heat.to_dense()),
                                    ("random walk, E[M]", target)), strict=False):
    ax.imshow(M, cmap="magma")
    ax.set_title(name, fontsize=9)
axes[3].loglog(walks, errors, "o-", label="measured")
axes[3].loglog(walks, errors[0] * np.array(walks, float) ** -0.5, "k--",
               label=r"$\propto n^{-1/2}$")
axes[3].set_xlabel("walks per node $n$")
axes[3].set_ylabel("relative error of $\\hat M$")
axes[3].legend(fontsize=8)

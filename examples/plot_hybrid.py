"""
Sparse + low-rank attention (Scatterbrain) on real MiniLM attention
===================================================================

Sparse attention misses the diffuse part of each row; low-rank (random-feature) attention
misses its peaks.  :mod:`structattn.hybrid` combines them as in Scatterbrain (Chen et al.,
NeurIPS 2021): exact softmax on a *support* ``S`` of pairs and a FAVOR+ estimate on the
rest, normalized together,

.. math:: A = S\\circ e^{s} + (1-S)\\circ \\phi(Q)\\phi(K)^\\top, \\qquad
   Y = \\operatorname{diag}(A 1)^{-1} A V,

without forming an ``L x L`` matrix.  The support can be a graph (a sliding window), MRA-2's
adaptive block selection (:func:`~structattn.hybrid.mra_support`) or LSH buckets
(:func:`~structattn.hybrid.lsh_support`).

This walk-through (1) checks the operator against its dense reference, (2) looks at the
attention matrices it implies for one real head, and (3) measures the error against the
fraction of dense work spent, next to its two parts alone and uniform attention.  The
inputs are the queries, keys and values of the pretrained MiniLM-L6 encoder on 256 tokens
of real text (:func:`structattn.studies.minilm.minilm_attention_inputs`, layer 2, 12 heads).
"""

# %%
# 1. The operator and its dense reference
# ---------------------------------------
#
# A window of ``|i - j| <= 8`` plus 16 FAVOR+ features.  The fast path (numba here)
# computes the low-rank part for all pairs and corrects it on the support only;
# :func:`~structattn.hybrid.sparse_lowrank_reference` builds the dense matrix.  With an
# empty support the hybrid is exactly :func:`~structattn.kernel_attention`.

import matplotlib.pyplot as plt
import numpy as np

from structattn import PositiveRandomFeatures, kernel_attention, softmax_attention
from structattn.graphs import window
from structattn.hybrid import (
    SparseLowRankAttention,
    as_support,
    mra_support,
    sparse_lowrank_attention,
    sparse_lowrank_reference,
)
from structattn.studies.hybrid import hybrid_operator, sparse_part_operator
from structattn.studies.minilm import minilm_attention_inputs

q, k, v = minilm_attention_inputs(256, layer=2, seed=0)  # (1, 12, 256, 32) float64
L, d = q.shape[-2], q.shape[-1]
exact = softmax_attention(q, k, v)
phi = PositiveRandomFeatures(dim=d, num_features=16, seed=0)
y = sparse_lowrank_attention(q, k, v, window(L, 8), phi)
y_ref = sparse_lowrank_reference(q, k, v, window(L, 8), phi)
y_empty = sparse_lowrank_attention(q, k, v, None, phi)
print(f"hybrid vs dense reference: max |difference| {np.abs(y - y_ref).max():.1e}")
print(f"empty support vs kernel_attention: "
      f"{np.abs(y_empty - kernel_attention(q, k, v, phi)).max():.1e}")


def rel_err(y):
    """Relative output error ||Y - Y*|| / ||Y*|| per head, averaged over the 12 heads."""
    num = np.linalg.norm((y - exact).reshape(12, -1), axis=1)
    return float(np.mean(num / np.linalg.norm(exact.reshape(12, -1), axis=1)))


uniform = np.broadcast_to(v.mean(axis=-2, keepdims=True), exact.shape)
print(f"error: hybrid {rel_err(y):.3f}, FAVOR+ alone (16 features) {rel_err(y_empty):.3f}, "
      f"uniform attention {rel_err(uniform):.3f}")

# %%
# 2. What the hybrid does to one head's attention matrix
# ------------------------------------------------------
#
# MRA-2's adaptive support: the block-mean scores pick, on average, 3 of the 16 blocks
# of 16 x 16 in every block row.  ``op.matrix`` is the dense implied attention matrix
# (rows sum to one), for inspection only.

op = SparseLowRankAttention(
    phi, support=lambda q, k: mra_support(q, k, block_size=16, blocks_per_row=3))
head = (0, 5)
qh, kh = q[head][None], k[head][None]
s = qh[0] @ kh[0].T / np.sqrt(d)
P = np.exp(s - s.max(-1, keepdims=True))
P /= P.sum(-1, keepdims=True)
S = as_support(op.support_for(qh, kh), L, 1).to_dense()[0]
H = op.matrix(qh, kh)[0]
F = SparseLowRankAttention(phi).matrix(qh, kh)[0]
print(f"support: {S.mean():.1%} of the pairs, holding {P[S].sum() / L:.1%} of the "
      "exact attention mass")
for name, M in (("FAVOR+ alone", F), ("hybrid", H)):
    print(f"{name:>12}: relative error of the matrix "
          f"{np.linalg.norm(M - P) / np.linalg.norm(P):.3f}")

fig, axes = plt.subplots(1, 4, figsize=(14, 3.6), layout="constrained")
vmax = np.quantile(P, 0.995)
for ax, (name, M) in zip(axes, (("exact softmax", P), ("support S (MRA-2)", S),
                                ("FAVOR+ alone, 16 features", F), ("hybrid", H)),
                         strict=True):
    ax.imshow(M, cmap="magma" if M is not S else "gray_r",
              vmax=vmax if M is not S else 1)
    ax.set_title(name, fontsize=10)
    ax.set_xlabel("key")
axes[0].set_ylabel(f"query (layer 2, head {head[1]})")

# %%
# 3. Error against the work spent
# -------------------------------
#
# The budget is a fraction of dense attention's ``L²(d + d_v)`` multiply-adds
# (:mod:`structattn.hybrid.budget`); :func:`~structattn.hybrid.split_budget` gives 20 % of
# it to the features and the rest to support keys.  The registered study entries
# ``hybrid-window`` and ``hybrid-mra`` (:func:`~structattn.studies.hybrid.hybrid_operator`)
# add the first and last tokens as global keys.  Compared with the sparse part alone
# (:func:`~structattn.studies.hybrid.sparse_part_operator`, the whole budget on keys),
# FAVOR+ alone (the whole budget on features) and uniform attention.

fractions = (0.05, 0.1, 0.25, 0.5)
results = {name: [] for name in ("hybrid-window", "window alone", "hybrid-mra",
                                 "MRA alone", "FAVOR+ alone")}
for f in fractions:
    for kind in ("window", "mra"):
        hyb = hybrid_operator(kind, length=L, dim=d, work_fraction=f, seed=0)
        sparse = sparse_part_operator(kind, length=L, dim=d, work_fraction=f, seed=0)
        label = "MRA" if kind == "mra" else kind
        results[f"hybrid-{kind}"].append(rel_err(hyb(q, k, v)))
        results[f"{label} alone"].append(rel_err(sparse(q, k, v)))
    m = max(1, int(f * L * 2 * d / (2 * (2 * d + 1))))  # 2·L·m·(d + d_v + 1) = f·L²(d + d_v)
    favor = PositiveRandomFeatures(dim=d, num_features=m, seed=0)
    results["FAVOR+ alone"].append(rel_err(kernel_attention(q, k, v, favor)))
print(f"{'work fraction':>14}" + "".join(f"{f:>8}" for f in fractions))
for name, errs in results.items():
    print(f"{name:>14}" + "".join(f"{e:8.3f}" for e in errs))
print(f"{'uniform':>14}{rel_err(uniform):8.3f} (no work)")

fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
styles = {"hybrid-window": ("C0", "o-"), "window alone": ("C0", "o--"),
          "hybrid-mra": ("C1", "s-"), "MRA alone": ("C1", "s--"),
          "FAVOR+ alone": ("C2", "^-")}
for name, errs in results.items():
    color, style = styles[name]
    ax.plot(fractions, errs, style, color=color, label=name)
ax.axhline(rel_err(uniform), color="k", ls=":", label="uniform attention")
ax.set_xscale("log")
ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
ax.set_xlabel("fraction of dense attention's work")
ax.set_ylabel("relative output error (mean over 12 heads)")
ax.legend(fontsize=8)
ax.grid(True, which="both", alpha=0.3)

# %%
# What the numbers say, on this head and at ``L = 256``: MiniLM's attention is diffuse —
# the support above holds less than half of the attention mass — so neither part alone is
# accurate, and FAVOR+ with the few features a small budget buys is worse than uniform
# attention at every budget here.  The hybrid beats its sparse part only at the smallest
# budget with MRA's support (0.53 against 0.56 at 5 %); from 10 % on, the work spent on
# features buys more accuracy when spent on keys.  (MRA's points move in steps of one
# 16-token block per row, hence its flat stretch between 5 % and 10 %.)  ``docs/hybrid.rst``
# measures the same at ``L = 512`` on all 72 heads, with the oracle support and the budget
# split, and reaches the same conclusion.

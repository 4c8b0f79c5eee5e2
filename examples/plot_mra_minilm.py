"""
Multi-resolution attention on real MiniLM attention
===================================================

MRA (:mod:`structattn.mra`) approximates softmax attention by a block-constant
**coarse** part, computed from block means of the queries and keys, plus exactly computed
:math:`b \\times b` **fine** blocks where the coarse scores are largest.  MRA-2 keeps both
parts; MRA-2-s (``mode="sparse"``) keeps only the fine blocks.  The budget is the number
of fine blocks per block row; with all :math:`n_b` of them both modes are exact.

The inputs are real: the queries, keys and values of layer 0 of the pretrained
MiniLM-L6 encoder on real text (:func:`structattn.studies.minilm.minilm_attention_inputs`,
12 heads, head dimension 32), at :math:`L = 256` tokens.
"""

# %%
# Error against the budget
# ------------------------

import matplotlib.pyplot as plt
import numpy as np

import structattn as sa
from structattn.mra import MRAAttention, mra_attention
from structattn.mra.haar import best_n_term, tree_projection
from structattn.studies.minilm import minilm_attention_inputs
from structattn.testing import relative_error

L, b = 256, 32
q, k, v = minilm_attention_inputs(L, layer=0, seed=0)
print("inputs:", q.shape, "finite:", bool(np.isfinite(q).all() and np.isfinite(k).all()))
n_b = L // b

exact = sa.softmax_attention(q, k, v)
uniform = np.broadcast_to(v.mean(axis=-2, keepdims=True), v.shape)
print(f"trivial baseline (uniform attention): relative error {relative_error(uniform, exact):.3f}")

budgets = list(range(1, n_b + 1))
errors = {"full": [], "sparse": []}
for mode in errors:
    for kb in budgets:
        y = mra_attention(q, k, v, block_size=b, blocks_per_row=kb, mode=mode)
        errors[mode].append(relative_error(y, exact))
print(f"{'blocks/row':>10} {'MRA-2':>8} {'MRA-2-s':>8}")
for i, kb in enumerate(budgets):
    print(f"{kb:>10} {errors['full'][i]:>8.4f} {errors['sparse'][i]:>8.4f}")
assert errors["full"][-1] < 1e-10 and errors["sparse"][-1] < 1e-10  # full budget is exact

fig, ax = plt.subplots(figsize=(6, 4.2))
ax.semilogy(budgets, errors["full"], "o-", label="MRA-2 (coarse + fine)")
ax.semilogy(budgets[:-1], errors["sparse"][:-1], "s-", label="MRA-2-s (fine only)")
ax.axhline(relative_error(uniform, exact), color="k", ls=":", label="uniform attention")
ax.set_xlabel(f"fine blocks per block row (of {n_b}, b = {b})")
ax.set_ylabel("relative error of the output")
ax.set_title(f"MiniLM-L6 layer 0, L = {L}, 12 heads")
ax.legend()
ax.grid(True, which="both", alpha=0.3)
fig.tight_layout()

# %%
# The Haar view
# -------------
#
# MRA-2 is close to a truncated 2-D Haar expansion of the attention matrix: the coarse
# part is the Haar approximation band at scale :math:`b`, the fine blocks add every
# detail coefficient inside them.  :func:`~structattn.mra.haar.tree_projection` is the
# orthogonal projection of the exact matrix onto exactly those coefficients
# (:math:`N = n_b^2 + k(b^2 - 1)` of them), and
# :func:`~structattn.mra.haar.best_n_term` keeps the :math:`N` largest Haar coefficients
# — never worse than any other choice of :math:`N`.  MRA-2 differs from the tree
# projection because it uses :math:`\exp(\text{mean } S)` instead of
# :math:`\text{mean} \exp(S)` on coarse blocks and selects blocks by estimated scores.
# One head, two fine blocks per row.

head, kb = 3, 2
op = MRAAttention(block_size=b, blocks_per_row=kb)
approx = op.approximate(q[:, head], k[:, head])
P_mra = approx.matrix()[0]
P = sa.attention_matrix(q[0, head], k[0, head])
selected = approx.selected_mask[0]
N = n_b * n_b + int(selected.sum()) * (b * b - 1)
P_tree = tree_projection(P, selected)
P_best = best_n_term(P, N)
for name, A in (("best N-term Haar", P_best), ("tree projection", P_tree), ("MRA-2", P_mra)):
    print(f"{name:>17}: relative error of the attention matrix {relative_error(A, P):.4f}")
assert relative_error(P_best, P) <= relative_error(P_tree, P) + 1e-12

fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), layout="constrained")
vmax = np.quantile(P, 0.995)
panels = (("exact", P), ("tree projection", P_tree), ("MRA-2", P_mra))
for ax, (name, A) in zip(axes, panels, strict=True):
    im = ax.imshow(A, vmin=0, vmax=vmax, cmap="viridis")
    ax.set_title(f"{name} (head {head})")
fig.colorbar(im, ax=axes.tolist(), shrink=0.8)

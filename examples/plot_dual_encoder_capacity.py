"""
How many dimensions does a dual encoder need?
=============================================

A dual encoder (DE) scores a query against a document by an inner product of two
embeddings, :math:`S_{ij} \\approx \\phi_i \\cdot \\psi_j`, so its score matrix has rank at
most the embedding dimension :math:`d`.  A cross-attention teacher has no such limit.
:mod:`structattn.ranking` measures the gap: :func:`~structattn.ranking.de_capacity` (the
smallest :math:`d` that reproduces a score matrix exactly, or every row's softmax),
:func:`~structattn.ranking.de_fit_errors` and :func:`~structattn.ranking.best_de_fit`
(the optimal rank-:math:`d` fit), and ranking metrics such as
:func:`~structattn.ranking.recall_at_k`.

The teacher here is real: the attention scores :math:`QK^\\top/\\sqrt{32}` of one head of
the pretrained MiniLM-L6 encoder on real text
(:func:`structattn.studies.minilm.minilm_attention_inputs`), 128 queries against 128 keys.
One attention head is itself a bilinear scorer of rank at most its head dimension, 32, so
its capacity is at most 32; the question is how much less suffices, and what a smaller
dimension costs in ranking quality.
"""

# %%
# Capacity and the error of the best fit
# --------------------------------------
#
# ``target="softmax"`` only needs every row's distribution, so a per-query shift of the
# scores is free: its capacity is the rank of the row-centred matrix.

import matplotlib.pyplot as plt
import numpy as np

from structattn.ranking import (
    best_de_fit,
    de_capacity,
    de_fit_errors,
    listwise_kl,
    recall_at_k,
)
from structattn.studies.minilm import minilm_attention_inputs

q, k, _ = minilm_attention_inputs(128, layer=2, seed=0)
S = q[0, 0] @ k[0, 0].T / np.sqrt(32)
print(f"teacher scores {S.shape}, finite: {bool(np.isfinite(S).all())}")
for target in ("scores", "softmax"):
    print(f"capacity (target={target!r}): d = {int(de_capacity(S, target=target))}")
errors = {t: de_fit_errors(S, target=t) for t in ("scores", "softmax")}
for d in (1, 4, 8, 16):
    print(f"d = {d:>2}: relative error of the best fit, scores {errors['scores'][d]:.3f}, "
          f"row-centred {errors['softmax'][d]:.3f}")

# %%
# Ranking quality against dimension
# ---------------------------------
#
# The relevant documents of a query are the teacher's top 5 keys; the student is the best
# rank-:math:`d` DE fit of the row-centred scores.  Recall@5 and the listwise KL between
# the teacher's and the student's softmax rows measure what the dimension buys.  A random
# score matrix is the trivial baseline.

top5 = np.argsort(-S, axis=1)[:, :5]
relevance = np.zeros_like(S)
np.put_along_axis(relevance, top5, 1.0, axis=1)
dims = [1, 2, 4, 8, 16, 32]
recall, kl = [], []
for d in dims:
    phi, psi = best_de_fit(S, d, target="softmax")
    student = phi @ psi.T
    recall.append(float(recall_at_k(student, relevance, k=5)))
    kl.append(float(listwise_kl(student, S)))
    print(f"d = {d:>2}: recall@5 {recall[-1]:.3f}, listwise KL {kl[-1]:.2e}")
random_scores = np.random.default_rng(0).standard_normal(S.shape)
base = float(recall_at_k(random_scores, relevance, k=5))
print(f"random scores: recall@5 {base:.3f}")

fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
for t, marker in (("scores", "o"), ("softmax", "s")):
    axes[0].semilogy(np.arange(len(errors[t])), errors[t] + 1e-17, marker=marker, ms=2,
                     label=f"target={t!r}")
axes[0].set_xlabel("embedding dimension $d$")
axes[0].set_ylabel("relative error of the best fit")
axes[0].legend()
axes[1].plot(dims, recall, "o-", label="best DE fit")
axes[1].axhline(base, color="k", ls=":", label="random scores")
axes[1].set_xscale("log", base=2)
axes[1].set_xlabel("embedding dimension $d$")
axes[1].set_ylabel("recall@5 of the teacher's top 5")
axes[1].legend()
for ax in axes:
    ax.grid(True, which="both", alpha=0.3)

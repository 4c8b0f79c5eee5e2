"""
Masked kernel attention vs exact attention
==========================================

Kernel attention replaces the softmax kernel :math:`\\exp(q \\cdot k / \\sqrt d)` by an
inner product of features, :math:`\\varphi(q) \\cdot \\varphi(k)`, and then never forms
the :math:`L \\times L` attention matrix:

.. math::

   \\operatorname{kernel\\_attention}(Q, K, V)
     = \\operatorname{rownormalize}\\bigl(M \\odot \\varphi(Q)\\,\\varphi(K)^\\top\\bigr)\\, V .

With positive random features (FAVOR+, :class:`~structattn.features.PositiveRandomFeatures`)
the inner product is an unbiased Monte-Carlo estimate of the softmax kernel with
:math:`m` samples, so the error of the attention output should shrink roughly like
:math:`m^{-1/2}`.  This tutorial measures that on synthetic data, with and without the
causal mask, looks at the attention matrices the approximation implies, and uses a
structured decayed-causal mask.
"""

# %%
# Synthetic inputs and the exact reference
# ----------------------------------------
#
# Queries, keys and values of one sequence of length :math:`L = 256` with head dimension
# :math:`d = 32`.  Queries and keys have standard deviation 0.5: the variance of positive
# random features grows like :math:`\exp(|q_s + k_s|^2)`, so large-norm inputs need far
# more features (see :doc:`/concepts`).  The exact reference is
# :func:`~structattn.softmax_attention`, in float64.

import time

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm

import structattn as sa
from structattn.testing import relative_error

start = time.perf_counter()
L, d = 256, 32
rng = np.random.default_rng(2024)
q = 0.5 * rng.standard_normal((L, d))
k = 0.5 * rng.standard_normal((L, d))
v = rng.standard_normal((L, d))

exact = {causal: sa.softmax_attention(q, k, v, causal=causal) for causal in (False, True)}

# %%
# Error against the number of features
# ------------------------------------
#
# For each number of features :math:`m` and each of eight seeds (independent draws of
# the orthogonal projection), compute kernel attention and its normwise relative error
# :math:`\|Y - Y_\mathrm{exact}\|_F / \|Y_\mathrm{exact}\|_F`.  ``causal=True`` uses the
# causal mask, which :class:`~structattn.masks.Causal` applies with a prefix scan in
# :math:`O(L\,m\,d)` time.

num_features = [16, 32, 64, 128, 256, 512, 1024]
seeds = list(range(8))
errors = {}
for causal in (False, True):
    errors[causal] = np.array(
        [
            [
                relative_error(
                    sa.kernel_attention(
                        q, k, v, sa.PositiveRandomFeatures(dim=d, num_features=m, seed=s),
                        causal=causal,
                    ),
                    exact[causal],
                )
                for s in seeds
            ]
            for m in num_features
        ]
    )

print("relative output error (mean over seeds, min-max in brackets)")
print(f"{'m':>6} | {'non-causal':^26} | {'causal':^26}")
for i, m in enumerate(num_features):
    cells = [
        f"{e[i].mean():.3f} [{e[i].min():.3f}-{e[i].max():.3f}]"
        for e in (errors[False], errors[True])
    ]
    print(f"{m:>6} | {cells[0]:^26} | {cells[1]:^26}")

for causal in (False, True):
    slope = np.polyfit(np.log(num_features), np.log(errors[causal].mean(axis=1)), 1)[0]
    print(f"fitted slope of log(error) vs log(m), causal={causal}: {slope:.2f}")

# %%
# On log-log axes a Monte-Carlo error is a line of slope :math:`-1/2`; the fitted
# slopes printed above are close to it (the ratio of two estimates, numerator over
# normalizer, also carries an :math:`O(1/m)` bias, which flattens the curve a little at
# small :math:`m`).  The dashed
# reference line :math:`c\,m^{-1/2}` passes through the first non-causal point.  (The
# relative error of the *output* is large in absolute terms because the exact output is
# an average of many random value vectors and so has a small norm; the slope is what
# matters here.)

m_arr = np.array(num_features, dtype=float)
fig, ax = plt.subplots(figsize=(6, 4.2))
for causal, marker in ((False, "o"), (True, "s")):
    e = errors[causal]
    ax.errorbar(
        m_arr, e.mean(axis=1),
        yerr=[e.mean(axis=1) - e.min(axis=1), e.max(axis=1) - e.mean(axis=1)],
        marker=marker, capsize=3, label="causal" if causal else "non-causal",
    )
ref = errors[False].mean(axis=1)[0] * (m_arr / m_arr[0]) ** -0.5
ax.plot(m_arr, ref, "k--", label=r"$\propto m^{-1/2}$")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xlabel("number of random features $m$")
ax.set_ylabel("relative error of the output")
ax.set_title(f"Positive random features, L={L}, d={d} ({len(seeds)} seeds)")
ax.legend()
ax.grid(True, which="both", alpha=0.3)
fig.tight_layout()

# %%
# The attention matrices
# ----------------------
#
# :func:`~structattn.attention_matrix` materializes the row-stochastic matrix an
# operator applies — for kernel attention, the same stabilized features, so
# ``attention_matrix(q, k, feature_map=phi) @ v`` equals the output of
# ``kernel_attention``.  It costs :math:`O(L^2)` memory and is meant for studies like this
# one.  Below: the first 64 queries and keys, exact vs :math:`m = 64` features, without
# and with the causal mask, on a logarithmic color scale shared within each row (white:
# masked out).  The approximation keeps the causal structure exactly — masked entries are
# exactly zero — and estimates the kept weights with visible Monte-Carlo noise.  The
# noise is striped by column: all queries share each key's features, so a key whose
# features happen to be drawn large is over-weighted in every row.

phi64 = sa.PositiveRandomFeatures(dim=d, num_features=64, seed=0)
n = 64
cmap = plt.get_cmap("viridis").with_extremes(bad="white")  # masked entries (exact 0)
fig, axes = plt.subplots(2, 2, figsize=(7.5, 7), sharex=True, sharey=True,
                         layout="constrained")
for row, causal in enumerate((False, True)):
    P_exact = sa.attention_matrix(q, k, causal=causal)
    P_approx = sa.attention_matrix(q, k, feature_map=phi64, causal=causal)
    # the implied matrix reproduces the structured output exactly (up to rounding)
    fast = sa.kernel_attention(q, k, v, phi64, causal=causal)
    print(f"causal={causal}: |P_approx @ v - kernel_attention| / |.| = "
          f"{relative_error(P_approx @ v, fast):.1e}; "
          f"matrix error vs exact = {relative_error(P_approx, P_exact):.3f}")
    block = P_exact[:n, :n]
    norm = LogNorm(vmin=block[block > 0].min(), vmax=block.max())
    for col, (P, name) in enumerate(((P_exact, "exact softmax"), (P_approx, "m = 64"))):
        im = axes[row, col].imshow(P[:n, :n], norm=norm, cmap=cmap)
        axes[row, col].set_title(f"{name}, {'causal' if causal else 'non-causal'}")
    fig.colorbar(im, ax=axes[row, :].tolist(), shrink=0.9, extend="both")
for ax in axes[1]:
    ax.set_xlabel("key")
for ax in axes[:, 0]:
    ax.set_ylabel("query")

# %%
# Causal outputs do not depend on the future
# ------------------------------------------
#
# With ``causal=True`` the key features are shifted by the first key's maximum only,
# and the prefix-sum scan never mixes later rows into earlier ones, so the output of
# rows :math:`\le i` is computed from the first :math:`i + 1` keys and values only —
# exactly, not just up to rounding.  Changing everything after position 127 leaves the
# first 128 output rows bit-identical.

phi = sa.PositiveRandomFeatures(dim=d, num_features=128, seed=0)
k_future, v_future = k.copy(), v.copy()
k_future[128:] = 3.0 * rng.standard_normal((L - 128, d))
v_future[128:] = 100.0
before = sa.kernel_attention(q, k, v, phi, causal=True)
after = sa.kernel_attention(q, k_future, v_future, phi, causal=True)
print("first 128 rows bit-identical:", np.array_equal(before[:128], after[:128]))

# %%
# A structured mask: exponential decay
# ------------------------------------
#
# Masks multiply the attention weights.  :class:`~structattn.masks.DecayedCausal`
# is :math:`M_{ij} = \gamma^{\,i-j}` for :math:`j \le i`: a causal mask whose weights
# decay with distance, as in retention-style models.  Kernel attention applies it with
# the recurrence :math:`S_i = \gamma S_{i-1} + \varphi(k_i) [v_i, 1]^\top` — linear in
# :math:`L` — and the result must equal the dense formula
# :math:`\operatorname{rownormalize}(M \odot \varphi(Q)\varphi(K)^\top) V`, written out
# here with the same (causal) query and key features.

gamma = 0.97
mask = sa.DecayedCausal(L, gamma=gamma)
print(mask.describe())
print("top-left corner of the mask:\n", mask.to_dense()[:4, :4].round(4))

fast = sa.kernel_attention(q, k, v, phi, mask=mask)

M = mask.to_dense()
W = M * (phi.queries(q) @ phi.keys(k, causal=True).T)
dense = (W / W.sum(axis=1, keepdims=True)) @ v
print(f"structured vs dense formula: relative difference {relative_error(fast, dense):.1e}")

exact_decayed = sa.softmax_attention(q, k, v, mask=mask)
print(f"kernel (m=128) vs exact softmax with the same mask: "
      f"relative error {relative_error(fast, exact_decayed):.3f}")
assert relative_error(fast, dense) < 1e-12

print(f"total run time of this tutorial: {time.perf_counter() - start:.1f} s")
